"""Worker seeding: albumentations 2.0.8 copies one RNG into every DataLoader worker; we reseed per worker."""

from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from imgcls.data import ImageDataModule, ImageDataset
from imgcls.data.loaders import make_loader
from imgcls.data.transforms import build_train_transform

RANDOM_AUG = {"affine": {"p": 1.0, "rotate": 45, "translate": 0.2}, "color_jitter": {"p": 1.0, "brightness": 0.5}}


def _repeated_dataset(image_tree, n=8) -> ImageDataset:
    one = sorted((image_tree / "square").glob("*.png"))[0]
    table = pd.DataFrame({"path": [str(one)] * n, "label": [0] * n})
    return ImageDataset(table, build_train_transform(32, RANDOM_AUG), channels=3)


def _images(loader) -> list[np.ndarray]:
    return [b["image"].numpy() for b in loader]


def _loader(ds, persistent=False):
    return make_loader(ds, {"batch_size": 1, "num_workers": 2, "persistent_workers": persistent}, train=False,
                       pin_memory=False)


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


@pytest.mark.parametrize("workers", [0, 2])
def test_datamodule_train_batches_reproducible_under_seed(image_tree, workers):
    def first_batch(seed: int) -> torch.Tensor:
        from imgcls.data import FolderSource

        L.seed_everything(seed, workers=True)
        dm = ImageDataModule(FolderSource(str(image_tree)), image_size=32, split_seed=0, augment=RANDOM_AUG,
                             loader={"batch_size": 4, "num_workers": workers, "persistent_workers": False})
        dm.setup("fit")
        return next(iter(dm.train_dataloader()))["image"]

    assert torch.equal(first_batch(1), first_batch(1))
    assert not torch.equal(first_batch(1), first_batch(2))


def test_drop_last_never_empties_a_ddp_rank():
    from torch.utils.data import TensorDataset

    data = TensorDataset(torch.zeros(100))
    assert make_loader(data, {"batch_size": 64, "num_workers": 0}, train=True, pin_memory=False).drop_last
    # 2 ranks see 50 samples each: dropping the last (only) partial batch would leave them nothing
    assert not make_loader(data, {"batch_size": 64, "num_workers": 0}, train=True, pin_memory=False,
                           world_size=2).drop_last
