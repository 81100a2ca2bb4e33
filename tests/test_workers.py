"""Worker seeding: albumentations 2.0.8 copies one RNG into every DataLoader worker; we reseed per worker."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from imgcls.data import ImageDataModule, ImageDataset
from imgcls.data.transforms import build_train_transform
from imgcls.feeding.loaders import make_loader

RANDOM_AUG = {
    "affine": {"_target_": "albumentations.Affine", "p": 1.0, "rotate": [-45, 45], "translate_percent": [-0.2, 0.2]},
    "color_jitter": {"_target_": "albumentations.ColorJitter", "p": 1.0, "brightness": 0.5},
}


def _repeated_dataset(image_tree, n=8) -> ImageDataset:
    one = sorted((image_tree / "square").glob("*.png"))[0]
    table = pd.DataFrame({"path": [str(one)] * n, "label": [0] * n})
    return ImageDataset(table, build_train_transform(32, RANDOM_AUG), channels=3)


def _images(loader) -> list[np.ndarray]:
    return [b["image"].numpy() for b in loader]


def _loader(ds, persistent=False):
    return make_loader(ds, {"batch_size": 1, "num_workers": 2, "persistent_workers": persistent}, train=False)


def test_premise_without_reseed_workers_duplicate_augmentations(image_tree):
    """Documents the library pitfall this project guards against (fails if albumentations ever fixes it)."""
    ds = _repeated_dataset(image_tree)
    imgs = _images(DataLoader(ds, batch_size=1, num_workers=2))
    assert np.array_equal(imgs[0], imgs[1])  # worker 0 and worker 1 drew the same "random" augmentation


def test_workers_get_different_augmentations(image_tree):
    imgs = _images(_loader(_repeated_dataset(image_tree)))
    assert len({im.tobytes() for im in imgs}) == len(imgs)


def test_fixed_seed_reproduces_and_epochs_differ(image_tree):
    loader = _loader(_repeated_dataset(image_tree))
    torch.manual_seed(7)
    first = _images(loader)
    second_epoch = _images(loader)
    torch.manual_seed(7)
    again = _images(loader)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not any(np.array_equal(a, b) for a, b in zip(first, second_epoch))


def test_batches_are_uint8_chw(image_tree):
    batch = next(iter(_loader(_repeated_dataset(image_tree))))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (1, 3, 32, 32)


def _train_batches(image_tree, seed: int, workers: int, start=None, epoch: int = 0) -> list[dict]:
    from imgcls.data import FolderSource

    dm = ImageDataModule(
        FolderSource(str(image_tree)),
        image_size=32,
        split_seed=0,
        draw_seed=seed,
        augment=RANDOM_AUG,
        loader={"batch_size": 4, "num_workers": workers},
    )
    dm.setup("fit")
    dm.train_start = start
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return list(loader)


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x["image"], y["image"]) and np.array_equal(x["index"], y["index"]) for x, y in zip(a, b)
    )


def test_training_draws_depend_on_the_seed_only_not_on_workers(image_tree):
    """Order and every image's augmentation come from (draw_seed, epoch): same with 0 or 2 workers, whatever
    the process RNG holds; another seed or epoch draws differently."""
    torch.manual_seed(123)
    zero = _train_batches(image_tree, 1, workers=0)
    torch.manual_seed(456)
    assert _same(zero, _train_batches(image_tree, 1, workers=2))
    assert not torch.equal(zero[0]["image"], _train_batches(image_tree, 2, workers=0)[0]["image"])
    assert not torch.equal(zero[0]["image"], _train_batches(image_tree, 1, workers=0, epoch=1)[0]["image"])


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_loader_continues_the_epoch_exactly(image_tree, workers):
    """start=(epoch, k): the epoch's draws from batch k on, without loading the first k (Lightning creates the
    iterator before set_epoch, and torch builds one index pass that it throws away: both are covered)."""
    whole = _train_batches(image_tree, 5, workers=0, epoch=2)
    assert _same(_train_batches(image_tree, 5, workers=workers, start=(2, 3)), whole[3:])
    assert _same(
        _train_batches(image_tree, 5, workers=workers, start=(3, 0)), _train_batches(image_tree, 5, workers=0, epoch=3)
    )


def test_drop_last_never_empties_a_ddp_rank():
    from torch.utils.data import TensorDataset

    data = TensorDataset(torch.zeros(100))
    assert make_loader(data, {"batch_size": 64, "num_workers": 0}, train=True).drop_last
    # 2 ranks see 50 samples each: dropping the last (only) partial batch would leave them nothing
    assert not make_loader(data, {"batch_size": 64, "num_workers": 0}, train=True, world_size=2).drop_last


def test_a_dropped_loader_stops_its_persistent_workers_without_waiting_for_gc(image_tree):
    """No reference cycle through the resumable index sampler: otherwise the workers outlive the loader, and a
    later loader's forked workers inherit the dead one's iterator (noisy 'can only test a child process')."""
    import gc
    import weakref

    loader = make_loader(_repeated_dataset(image_tree), {"batch_size": 2, "num_workers": 2}, train=True)
    next(iter(loader))
    workers = list(loader._iterator._workers)
    dropped = weakref.ref(loader)
    gc.disable()
    try:
        del loader
        assert dropped() is None
        for worker in workers:
            worker.join(timeout=10)
        assert not any(worker.is_alive() for worker in workers)
    finally:
        gc.enable()
