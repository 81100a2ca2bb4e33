"""Reusable shared-memory batch buffers between DataLoader workers and the main process.

Why: the default path allocates every batch in fresh shared memory, hands its file descriptor over a socket,
and frees it after use. For a 64x224x224x3 uint8 batch that is ~5 ms of page faults in the worker, a
descriptor hand-over and ~1-2 ms of page freeing in the main process: ~12% of a worker's time on the strong
preset, and on few cores the main process competes with the workers for it.

How: each worker keeps `slots` buffers. A buffer travels to the main process once (as torch shares any
storage); afterwards only its slot number travels, and the main process rebuilds the batch from the buffer it
already holds, without copying. A one-byte state per slot, in shared memory, says who owns it:

- FREE -> IN_FLIGHT: the worker fills a free slot and sends it (only the worker writes this transition);
- IN_FLIGHT -> HANDED_OUT: the main process receives it and wraps it in a tensor;
- HANDED_OUT -> FREE: the main process sees that nothing references the batch any more (the buffer's
  reference count is back to the registry's own), checked each time a batch arrives.

A batch in flight is never freed (nothing in the main process references it yet), so it never counts as
released.

So a batch that user code keeps (a callback storing it, a list of batches) is never overwritten: its slot just
stays busy, and when every slot is busy the worker falls back to a fresh buffer, as torch would. Batches of a
different shape (the last, smaller batch) use the fresh path too. Only persistent workers use a pool: each
worker then lives as long as the loader, so a slot has exactly one writer.
"""

from __future__ import annotations

import os
import uuid
import weakref
from typing import Any

import torch

from imgcls.utils.compat import new_shared_storage, storage_use_count

# Main process: pool id -> (its flags, {(worker, slot): buffer}). Entries go when their BatchPool does.
_REGISTRY: dict[str, tuple[torch.Tensor, dict[tuple[int, int], torch.UntypedStorage]]] = {}
FREE, IN_FLIGHT, HANDED_OUT = 0, 1, 2


def available() -> bool:
    """The pool needs torch's storage reference count; without it every batch takes the fresh path."""
    return storage_use_count(torch.UntypedStorage(0)) is not None


class BatchPool:
    """Owned by the process that iterates the loader (its `owner`), handed to its workers with the collate function.

    A pool never crosses to another iterating process: a loader pickled into a DDP rank (ddp_spawn) or shared by
    forked ranks gets a pool of its own there (see `PooledCollate.prepare`), so no two processes share slots.
    """

    def __init__(self, num_workers: int, slots: int = 6) -> None:
        self.id = uuid.uuid4().hex
        self.owner = os.getpid()
        self.slots = int(slots)
        self.flags = torch.zeros((max(1, num_workers), self.slots), dtype=torch.uint8).share_memory_()
        self._buffers: dict[int, torch.UntypedStorage] = {}  # worker side: slot -> buffer (never pickled)
        self._sent: set[int] = set()
        _REGISTRY[self.id] = (self.flags, {})
        weakref.finalize(self, _REGISTRY.pop, self.id, None)  # the buffers go with the loader

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_buffers": {}, "_sent": set()}

    def take(self, worker_id: int, nbytes: int) -> tuple[int, torch.UntypedStorage] | None:
        """Worker side: a free slot's buffer of exactly `nbytes`, now in flight; None if no slot is free."""
        for slot, state in enumerate(self.flags[worker_id].tolist()):
            if state != FREE:
                continue
            buffer = self._buffers.get(slot)
            if buffer is None or buffer.nbytes() != nbytes:
                buffer = self._buffers[slot] = new_shared_storage(nbytes)
                self._sent.discard(slot)
            self.flags[worker_id, slot] = IN_FLIGHT
            return slot, buffer
        return None

    def handle(self, worker_id: int, slot: int, shape: tuple[int, ...], stride: tuple[int, ...]) -> PooledTensor:
        """Worker side: what travels instead of the batch; carries the buffer only the first time."""
        buffer = None if slot in self._sent else self._buffers[slot]
        self._sent.add(slot)
        return PooledTensor(self.id, worker_id, slot, buffer, shape, stride)


class PooledTensor:
    """Pickles to a small tuple; unpickles in the main process straight into a tensor over the slot's buffer."""

    def __init__(
        self,
        pool_id: str,
        worker_id: int,
        slot: int,
        buffer: torch.UntypedStorage | None,
        shape: tuple[int, ...],
        stride: tuple[int, ...],
    ) -> None:
        self.args = (pool_id, worker_id, slot, buffer, shape, stride)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _rebuild, self.args


def _rebuild(
    pool_id: str,
    worker_id: int,
    slot: int,
    buffer: torch.UntypedStorage | None,
    shape: tuple[int, ...],
    stride: tuple[int, ...],
) -> torch.Tensor:
    """Main process: free the handed-out slots nobody references any more, then view this batch's buffer."""
    flags, buffers = _REGISTRY[pool_id]
    if buffer is not None:
        buffers[(worker_id, slot)] = buffer
    state = flags.numpy()
    for (w, s), held in buffers.items():
        if state[w, s] == HANDED_OUT and storage_use_count(held) <= 1:  # only the registry's reference left
            state[w, s] = FREE
    if (worker_id, slot) not in buffers:
        raise RuntimeError(
            f"batch buffer {worker_id}/{slot} never arrived; set loader.reuse_buffers=0 to work "
            "around it, and please report it"
        )
    batch = torch.empty(0, dtype=torch.uint8).set_(buffers[(worker_id, slot)], 0, shape, stride)
    state[worker_id, slot] = HANDED_OUT
    return batch
