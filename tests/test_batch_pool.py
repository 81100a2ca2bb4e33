"""Reused shared-memory batch buffers: reused when released, never overwritten while anything holds a batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from imgcls.feeding import batch_pool
from imgcls.feeding.loaders import make_loader

pytestmark = pytest.mark.skipif(not batch_pool.available(), reason="this torch has no storage use count")


class Stamped(Dataset):
    """Image i is filled with (i % 251): any batch can be checked against its own `index` later."""

    def __init__(self, n: int = 60, size: int = 8) -> None:
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"image": np.full((self.size, self.size, 3), i % 251, np.uint8), "target": 0, "index": i}


def _loader(workers: int = 2, persistent: bool = True, slots: int = 4, n: int = 60):
    return make_loader(
        Stamped(n),
        {"batch_size": 4, "num_workers": workers, "persistent_workers": persistent, "reuse_buffers": slots},
        train=False,
    )


def _intact(batch: dict) -> bool:
    expected = torch.as_tensor(np.asarray(batch["index"]) % 251, dtype=torch.uint8)
    return bool((batch["image"] == expected[:, None, None, None]).all())


def _pooled_buffers(loader) -> dict:
    return batch_pool._REGISTRY[loader.collate_fn.pool.id][1]


def test_released_batches_reuse_the_pooled_buffers():
    loader = _loader()
    ptrs = []
    for batch in loader:
        assert _intact(batch)
        ptrs.append(batch["image"].untyped_storage().data_ptr())
        del batch
    pooled = {b.data_ptr() for b in _pooled_buffers(loader).values()}
    assert 0 < len(pooled) <= 2 * 4  # at most workers x slots buffers ever made
    assert sum(p in pooled for p in ptrs) >= len(ptrs) - 2  # all but the first batch of a worker, maybe
    assert len(ptrs) == 15


def test_batches_kept_by_the_consumer_are_never_overwritten():
    """Keep every other batch (and views of the rest) over three epochs: each must still hold its own images."""
    loader = _loader(slots=2)
    kept, views = [], []
    for _ in range(3):
        for i, batch in enumerate(loader):
            if i % 2:
                kept.append(batch)
            else:
                views.append((batch["image"][:2], np.asarray(batch["index"])[:2]))
    assert kept and all(_intact(b) for b in kept)
    assert all(_intact({"image": v, "index": idx}) for v, idx in views)


def test_abandoned_epochs_do_not_exhaust_or_corrupt_the_pool():
    loader = _loader(slots=3)
    for _ in range(4):  # stop early: batches in flight are drained by the next epoch
        for i, batch in enumerate(loader):
            assert _intact(batch)
            if i == 3:
                break
    batches = list(loader)
    assert len(batches) == 15 and all(_intact(b) for b in batches)


def test_last_smaller_batch_and_no_workers_take_the_plain_path():
    batches = list(_loader(n=10))  # 4 + 4 + 2
    assert [len(b["index"]) for b in batches] == [4, 4, 2] and all(_intact(b) for b in batches)
    plain = list(_loader(workers=0, n=10))
    assert all(_intact(b) for b in plain) and getattr(_loader(workers=0).collate_fn, "pool", None) is None


@pytest.mark.parametrize("settings", [{"slots": 0}, {"persistent": False}])
def test_pool_off_with_reuse_buffers_zero_or_short_lived_workers(settings):
    loader = _loader(**settings)
    assert getattr(loader.collate_fn, "pool", None) is None
    assert all(_intact(b) for b in loader)


def _iterate_in_child(collate, queue) -> None:
    """A spawned process (like a ddp_spawn rank) iterating a loader whose collate was built in the parent."""
    loader = make_loader(Stamped(40), {"batch_size": 4, "num_workers": 2, "persistent_workers": True}, train=False)
    loader.collate_fn = collate  # the parent's collate object, pickled into this process
    ok = all(_intact(b) for b in loader) and all(_intact(b) for b in loader)
    own_pool = collate.pool is not None and collate.pool.owner == __import__("os").getpid()
    context = loader.multiprocessing_context or __import__("multiprocessing")  # None: Python's default
    queue.put((ok, own_pool, context.get_start_method()))


@pytest.mark.slow  # a spawned interpreter imports torch: seconds on 2 cores
def test_a_loader_pickled_into_another_process_gets_its_own_pool():
    import multiprocessing as mp

    parent = _loader()
    assert all(_intact(b) for b in parent)  # the parent's pool exists and is in use
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_iterate_in_child, args=(parent.collate_fn, queue))
    child.start()
    ok, own_pool, start_method = queue.get(timeout=120)
    child.join()
    assert ok and own_pool
    # Python's default in a spawned process is spawn; its loader workers still start the platform's way (fork on
    # Linux) instead of each re-importing torch (loader.start_method: null)
    assert start_method == mp.get_all_start_methods()[0]
