"""data.placement=device: the cache held on the device, whole batches augmented there (feeding/resident.py).

The device ops are checked against albumentations (the host pipeline they stand in for), the loader against the
host loader's contract: every image once per epoch, a pure function of (seed, epoch, position), disjoint DDP
shares, exact resume, evaluation batches identical to the host's.
"""

from __future__ import annotations

import re

import albumentations as A
import hydra
import hydra.errors
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import FAST, compose, read_metrics, run_task

from imgcls.data.device_transforms import device_augment
from imgcls.data.resize import CenterCrop
from imgcls.feeding.device_ops import uniforms
from imgcls.feeding.resident import ResidentLoader
from imgcls.resume.sampler import EpochSampler
from imgcls.utils.errors import ConfigError, DataConfigError

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (8, 37, 37, 3), dtype=np.uint8)  # fitted 37 -> input 32, as MNIST's default
SEEDS = np.arange(8, dtype=np.int64) * 7919 + 1


def _device(ops: list, images: np.ndarray = IMAGES, fitted: int = 37) -> np.ndarray:
    """The device version of `ops` on `images`, in 0..255, HWC."""
    aug = device_augment(A.Compose(ops), (fitted, fitted), images.shape[-1], lambda op: "augment.op")
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    return (aug(x, torch.from_numpy(aug.draw(SEEDS)), 0) * 255).permute(0, 2, 3, 1).numpy()


def _host(ops: list, images: np.ndarray = IMAGES) -> np.ndarray:
    return np.stack([A.Compose(ops)(image=img)["image"] for img in images]).astype(np.float64)


CROP = CenterCrop((32, 32))


@pytest.mark.parametrize(
    "ops, max_mean",
    [
        ([CROP], 0.01),
        ([CROP, A.HorizontalFlip(p=1)], 0.01),
        ([CROP, A.VerticalFlip(p=1)], 0.01),
        ([CROP, A.Affine(p=1, translate_percent={"x": (3 / 32, 3 / 32), "y": (-2 / 32, -2 / 32)})], 0.01),
        ([CROP, A.Affine(p=1, rotate=(12, 12))], 3.0),  # bilinear vs cv2's fixed-point bilinear at the edges
        ([CROP, A.Affine(p=1, shear={"x": (10, 10), "y": (0, 0)})], 3.0),
        ([CROP, A.Affine(p=1, scale=(1.2, 1.2))], 1.0),
        ([CROP, A.Affine(p=1, rotate=(20, 20), border_mode=1)], 3.0),  # replicate: the crop's edge, not around it
        ([CROP, A.ColorJitter(p=1, brightness=(1.2, 1.2), contrast=(1, 1), saturation=(1, 1), hue=(0, 0))], 0.5),
        ([CROP, A.ColorJitter(p=1, brightness=(1, 1), contrast=(1.3, 1.3), saturation=(1, 1), hue=(0, 0))], 0.6),
        ([CROP, A.ColorJitter(p=1, brightness=(1, 1), contrast=(1, 1), saturation=(0.5, 0.5), hue=(0, 0))], 0.6),
        ([CROP, A.ColorJitter(p=1, brightness=(1, 1), contrast=(1, 1), saturation=(1, 1), hue=(0.05, 0.05))], 0.6),
        ([CROP, A.GaussianBlur(p=1, blur_limit=(5, 5), sigma_limit=(1.0, 1.0))], 0.5),
    ],
)
def test_each_device_op_does_what_the_albumentations_op_does(ops, max_mean):
    assert np.abs(_device(ops) - _host(ops)).mean() <= max_mean


def test_an_opposite_rotation_or_hue_would_be_caught():
    """The tolerances above are tight enough to see a sign error (what the directions of the ops depend on)."""
    turned = [CROP, A.Affine(p=1, rotate=(12, 12))]
    assert np.abs(_device(turned) - _host([CROP, A.Affine(p=1, rotate=(-12, -12))])).mean() > 20
    hue = [CROP, A.ColorJitter(p=1, brightness=(1, 1), contrast=(1, 1), saturation=(1, 1), hue=(0.05, 0.05))]
    other = [CROP, A.ColorJitter(p=1, brightness=(1, 1), contrast=(1, 1), saturation=(1, 1), hue=(-0.05, -0.05))]
    assert np.abs(_device(hue) - _host(other)).mean() > 5


def test_noise_and_dropout_have_albumentations_statistics():
    grey = np.full((8, 32, 32, 3), 128, np.uint8)
    noisy = _device([A.GaussNoise(p=1, std_range=(0.1, 0.1))], grey, fitted=32)
    assert (noisy / 255 - 128 / 255).std() == pytest.approx(0.1, abs=0.01)
    holes = [
        A.CoarseDropout(p=1, num_holes_range=(2, 2), hole_height_range=(0.25, 0.25), hole_width_range=(0.25, 0.25))
    ]
    dropped = _device(holes, grey, fitted=32)
    share = (dropped[..., 0] == 0).mean(axis=(1, 2))  # two 8x8 holes of 32x32, overlapping at most
    assert np.all((share > 64 / 1024 - 1e-6) & (share <= 128 / 1024 + 1e-6))


def test_random_resized_crops_follow_scale_and_ratio_and_parameters_follow_the_seed():
    rrc = A.RandomResizedCrop(size=(32, 32), scale=(0.3, 0.9), ratio=(0.75, 1.3333))
    aug = device_augment(A.Compose([rrc, A.HorizontalFlip(p=0.5)]), (64, 64), 3, str)
    seeds = np.arange(4000, dtype=np.int64)
    params = aug.draw(seeds)
    x0, y0, x1, y1 = params[:, 6:10].T  # the crop's first and last pixels
    w, h = x1 - x0 + 1, y1 - y0 + 1
    assert np.all((w * h >= 0.3 * 64 * 64 - 64) & (w * h <= 0.9 * 64 * 64 + 64))
    assert np.all((w / h > 0.7) & (w / h < 1.4)) and x0.min() >= 0 and x1.max() <= 63
    flipped = params[:, 0] < 0  # the flip negates the map's x column
    assert 0.45 < flipped.mean() < 0.55
    # A pure function of each seed: the same in any batch, at any position; other seeds give other crops
    assert np.array_equal(aug.draw(seeds[::-1])[::-1], params)
    assert len(np.unique(params[:, 6])) > 20
    u = uniforms(seeds, 2, 0)
    assert 0.49 < u.mean() < 0.51 and u.min() >= 0 and u.max() < 1


def test_an_op_without_a_device_version_is_named():
    with pytest.raises(ConfigError, match=r"augment\.op \(Sharpen\) has no device version.*data\.placement=host"):
        device_augment(A.Compose([A.Sharpen(p=1)]), (32, 32), 3, lambda op: "augment.op")


# ---- the loader ------------------------------------------------------------------------------------------------
def _loader(n: int = 50, rank: int = 0, world: int = 1, start=None, train: bool = True) -> ResidentLoader:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 37, 37).contiguous()
    aug = device_augment(A.Compose([CROP, A.HorizontalFlip(p=0.5)]), (37, 37), 1, str)
    kwargs = dict(augment=aug, sampler=EpochSampler(n, seed=3)) if train else dict(crop=(2, 2, 32, 32))
    return ResidentLoader(
        images, np.arange(n), np.arange(n) % 5, 8, rank=rank, world_size=world, start=start, drop_last=False, **kwargs
    )


def _epoch(loader: ResidentLoader, epoch: int) -> list[dict]:
    if loader.sampler is not None:
        loader.sampler.set_epoch(epoch)
    return list(loader)


def test_every_image_once_per_epoch_in_a_seeded_order():
    loader = _loader()
    first = _epoch(loader, 0)
    index = torch.cat([b["index"] for b in first])
    assert sorted(index.tolist()) == list(range(50)) and len(loader) == len(first) == 7
    # the image is the row's (pixel value = row), the target the row's, the order a function of (seed, epoch)
    assert torch.equal(torch.cat([b["image"][:, 0, 16, 16] for b in first]) * 255, index.float())
    assert torch.equal(torch.cat([b["target"] for b in first]), index % 5)
    assert torch.equal(torch.cat([b["index"] for b in _epoch(_loader(), 0)]), index)
    assert not torch.equal(torch.cat([b["index"] for b in _epoch(loader, 1)]), index)


def test_ddp_ranks_take_disjoint_shares_of_one_draw():
    shares = [torch.cat([b["index"] for b in _epoch(_loader(rank=r, world=2), 4)]).tolist() for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 25 and sorted(shares[0] + shares[1]) == list(range(50))
    one = torch.cat([b["index"] for b in _epoch(_loader(), 4)]).tolist()
    assert shares[0] == one[0::2] and shares[1] == one[1::2]  # as DistributedSamplerWrapper deals one draw
    evaluation = [torch.cat([b["index"] for b in _loader(51, r, 2, train=False)]).tolist() for r in (0, 1)]
    assert sorted(evaluation[0] + evaluation[1]) == list(range(51))  # unpadded: each image counted once


def test_a_resumed_loader_replays_the_rest_of_the_epoch_exactly():
    whole = _epoch(_loader(), 2)
    resumed = list(_loader(start=(2, 3)))
    assert len(resumed) == len(whole) - 3
    for a, b in zip(whole[3:], resumed):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["image"], b["image"])


# ---- the DataModule ----------------------------------------------------------------------------------------------
def _datamodule(image_tree, tmp_path, *overrides: str):
    cfg = compose(
        "train",
        ["data=folder", f"data.root={image_tree}", f"paths.data_dir={tmp_path}", "data.image_size=32", *overrides],
    )
    dm = hydra.utils.instantiate(cfg.data, output_dir=None)
    dm.setup("fit")
    return dm


def test_evaluation_on_the_device_gives_the_host_loader_s_pixels(image_tree, tmp_path):
    device = _datamodule(image_tree, tmp_path, "data.placement=device", "loader.num_workers=0")
    host = _datamodule(image_tree, tmp_path, "loader.num_workers=0")
    ours, theirs = next(iter(device.val_dataloader())), next(iter(host.val_dataloader()))
    assert isinstance(device.val_dataloader(), ResidentLoader)
    assert ours["image"].dtype == torch.uint8 and torch.equal(ours["image"], theirs["image"].contiguous())
    assert torch.equal(ours["target"], torch.as_tensor(theirs["target"]))
    # training: the strong preset, translated op by op; the picture shows the device's augmentation
    strong = _datamodule(image_tree, tmp_path, "data.placement=device", "augment=strong", "loader.batch_size=16")
    assert [type(op).__name__ for op in strong.on_device.augment.ops] == [
        "ColorJitter",
        "GaussianBlur",
        "GaussNoise",
        "CoarseDropout",
    ]
    batch = next(iter(strong.train_dataloader()))
    assert batch["image"].shape == (16, 3, 32, 32) and batch["image"].dtype == torch.float32
    loader = strong.train_dataloader()
    loader.sampler.set_epoch(1)
    strong.train_start = (1, 2)  # what resume/state.py sets from a checkpoint
    resumed = list(strong.train_dataloader())
    assert torch.equal(torch.cat([b["index"] for b in list(loader)[2:]]), torch.cat([b["index"] for b in resumed]))
    assert strong.augmented_samples(4)[0]["image"].shape == (32, 32, 3)


def _error(image_tree, tmp_path, *overrides: str) -> Exception:
    """What building the DataModule raised (Hydra's instantiate wraps it; the CLI shows the cause in one line)."""
    with pytest.raises(hydra.errors.InstantiationException) as info:
        _datamodule(image_tree, tmp_path, *overrides)
    return info.value.__cause__


@pytest.mark.parametrize(
    "overrides, kind, message",
    [
        (
            ["data.placement=device", "data.cache=false"],
            DataConfigError,
            r"^data\.placement=device holds the pre-processed cache on the device: set data\.cache=true",
        ),
        (["data.placement=gpu"], DataConfigError, r"^data\.placement='gpu' is not an option: use host or device$"),
        (
            ["data.placement=device", "+augment.sharpen={_target_: albumentations.Sharpen}"],
            ConfigError,
            r"^augment\.sharpen \(Sharpen\) has no device version.*use data\.placement=host$",
        ),
        (
            ["data.placement=device", "augment=randaugment"],
            ConfigError,
            r"^augment\.\w+ \(\w+\) has no device version",
        ),
    ],
)
def test_placement_mistakes_are_one_line_errors(image_tree, tmp_path, overrides, kind, message):
    error = _error(image_tree, tmp_path, *overrides)
    assert isinstance(error, kind) and "\n" not in str(error)
    assert re.search(message, str(error)), str(error)


def test_a_run_on_device_resident_data_learns_and_logs_its_data_wait(mnist_root, tmp_path):
    run = run_task(
        "train",
        f"paths.data_dir={mnist_root.parent}",
        "data.placement=device",
        *FAST,
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=40",
        "trainer.limit_val_batches=10",
        run_dir=tmp_path / "run",
    )
    assert "data.placement=device: 5000 images" in run.log
    metrics = read_metrics(run.run_dir)
    assert metrics["final"]["val/acc"] > 0.5  # 10 digits: chance is 0.1
    wait = pd.read_csv(run.run_dir / "metrics.csv")["train/data_wait_frac_epoch"].dropna()
    assert len(wait) == 2 and ((wait >= 0) & (wait < 1)).all()  # the telemetry reads the device loader's clock
