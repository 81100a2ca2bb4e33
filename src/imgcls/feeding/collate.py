"""Batches of uint8 images for the loaders: one copy per image, straight into (recycled) shared memory."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from imgcls.feeding.batch_pool import BatchPool
from imgcls.utils.compat import new_shared_storage


def collate_images(items: list[dict[str, Any]], pool: BatchPool | None = None) -> dict[str, Any]:
    """Stack HxWxC uint8 images into one uint8 batch of shape (B, C, H, W), copying each image exactly once.

    Inside a worker the batch is written to shared memory: a reusable buffer from `pool` when one is free (see
    `imgcls.feeding.batch_pool`), else a fresh one as torch's default collate does; either way handing it to the
    main process copies nothing more. The CHW batch is a permuted view of the HWC buffer (channels-last
    strides); the model makes it contiguous in the format it wants on the device.
    """
    shape = (len(items), *items[0]["image"].shape)
    nbytes = int(np.prod(shape))
    worker = torch.utils.data.get_worker_info()
    taken = pool.take(worker.id, nbytes) if pool is not None and worker is not None else None
    if taken is not None:
        storage = taken[1]
    elif worker is not None:  # allocate straight in shared memory (as default_collate)
        storage = new_shared_storage(nbytes)
    else:
        storage = torch.UntypedStorage(nbytes)
    out = torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)
    # Copied through a numpy view of the batch: the image may be read-only (PIL's arrays, an unaugmented
    # memory map), which numpy reads as is, while torch.from_numpy would warn that it is not writable.
    batch = out.numpy()
    for i, item in enumerate(items):
        batch[i] = item["image"]
    image = out.permute(0, 3, 1, 2)
    if taken is not None:
        image = pool.handle(worker.id, taken[0], tuple(image.shape), image.stride())
    # Labels and indices travel as small numpy arrays (pickled inline): every extra tensor would cost a
    # shared-memory file and a file-descriptor hand-over (~1 ms per batch). The model makes them tensors.
    return {
        "image": image,
        "target": np.stack([np.asarray(it["target"]) for it in items]),  # int64, or float32 multi-hot rows
        "index": np.array([it["index"] for it in items], np.int64),
    }


class PooledCollate:
    """`collate_images` with a pool owned by whichever process iterates the loader.

    `TimedDataLoader.__iter__` calls `prepare()` before workers start, so a loader built in one process and
    iterated in another (Lightning's ddp_spawn pickles it into each rank) makes its own pool there. Workers use
    the pool only if their parent owns it; anything else takes the plain fresh-buffer path.
    """

    def __init__(self, num_workers: int, slots: int) -> None:
        self.num_workers, self.slots = int(num_workers), int(slots)
        self.pool: BatchPool | None = None

    def prepare(self) -> None:
        if self.pool is None or self.pool.owner != os.getpid():
            self.pool = BatchPool(self.num_workers, self.slots)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        pool = self.pool if self.pool is not None and self.pool.owner == os.getppid() else None
        return collate_images(items, pool)
