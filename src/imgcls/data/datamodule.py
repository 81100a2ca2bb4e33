"""The LightningDataModule: discovery, split, pre-processing, augmentation and loaders in one place."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import hydra
import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from imgcls.data.bad_images import check_policy, drop_unreadable, find_unreadable
from imgcls.data.dataset import ImageDataset
from imgcls.data.labels import SEPARATOR, check_task, is_multilabel, join_names, multi_hot, present
from imgcls.data.placement import SMALL_DATA_BYTES, DevicePlacement, check_placement
from imgcls.data.resize import Resize
from imgcls.data.sources import DataConfigError, Discovered, check_given_split
from imgcls.data.split import assign_splits
from imgcls.data.transforms import as_hw, build_eval_transform, build_train_transform
from imgcls.feeding.cache import build_cache, cache_path, check_list_path, why_new
from imgcls.feeding.checks import bad_list_path
from imgcls.feeding.image_io import DEFAULT_MAX_IMAGE_PIXELS, set_max_image_pixels
from imgcls.feeding.loaders import (
    DEFAULT_BATCH_SIZE,
    batching,
    check_loader_settings,
    make_loader,
    resolve_num_workers,
)
from imgcls.feeding.resident import ResidentLoader
from imgcls.resume.sampler import EpochSampler, balanced_weights
from imgcls.utils.compat import unrepeated_distributed_sampler
from imgcls.utils.config import to_plain
from imgcls.utils.io import atomic_write_text
from imgcls.utils.logging import get_logger

log = get_logger(__name__)


class ImageDataModule(L.LightningDataModule):
    """Images from any `source` (folder, CSV, MNIST export) -> uint8 batches `{"image", "target", "index"}`.

    Everything the model must agree with (class names, channels, input size, crop, normalisation) is exposed
    once, as `spec`, and stored in the checkpoint so predict rebuilds the same pre-processing.
    """

    def __init__(
        self,
        source: Any,
        root: str | None = None,
        task: str = "multiclass",
        image_size: int | Sequence[int] = 224,
        channels: int = 3,
        crop: Mapping[str, Any] | None = None,
        resize: Mapping[str, Any] | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        split_seed: int = 0,
        n_folds: int | None = None,
        fold: int = 0,
        sampler: str = "random",
        draw_seed: int = 0,
        flips: Sequence[str] = ("horizontal",),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        augment: Mapping[str, Any] | None = None,
        loader: Mapping[str, Any] | None = None,
        cache: bool = True,
        cache_dir: str | None = None,
        cache_size: int | Sequence[int] | None = None,
        output_dir: str | None = None,
        on_bad_image: str = "skip",
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        placement: str = "host",
    ) -> None:
        super().__init__()
        # A `_target_` config (from Hydra, which leaves nested configs to this class) or a source object.
        self.source = hydra.utils.instantiate(source) if isinstance(source, Mapping) else source
        self.root = root  # informational: the sources read it from the config
        self.task = check_task(task)
        self.image_size = as_hw(to_plain(image_size))
        self.channels = int(channels)
        self.crop = to_plain(crop) or {"mode": "none"}
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, int(split_seed)
        self.n_folds, self.fold = (int(n_folds) if n_folds is not None else None), int(fold)
        if sampler not in ("random", "weighted"):
            raise DataConfigError(f"data.sampler='{sampler}' is not an option: use random or weighted")
        self.sampler = sampler
        self.draw_seed = int(draw_seed)
        # (epoch, batch) the next training loader starts at: set by imgcls.resume.ResumeState when resuming.
        self.train_start: tuple[int, int] | None = None
        self.tuned_batch_size: int | None = None  # set by tune=batch_size (extras/tuning.py), kept in checkpoints
        self.flips = list(to_plain(flips) or [])
        self.mean, self.std = to_plain(mean), to_plain(std)
        self.resize = Resize.resolve(to_plain(resize), self.channels, self.mean)
        self.cache = bool(cache) and cache_dir is not None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        # The fitted size (data/resize.py): what the cache holds, and what every image is fitted to without one.
        self.cache_size = (
            as_hw(to_plain(cache_size), "data.cache_size") if cache_size else self.resize.fitted_size(self.image_size)
        )
        self.augment = to_plain(augment) or {}
        # Built now, not in setup: a wrong augment op stops the run before the data is read or the model built.
        self.train_transform = build_train_transform(
            self.image_size, self.augment, self.flips, self.resize, self.cache_size, fit=not self.cache
        )
        self.loader = to_plain(loader) or {}
        check_loader_settings(self.loader)  # here too, so a misspelt key stops the run before the model is built
        self.placement = check_placement(placement, self.cache)
        # data.placement=device: the same pipeline, batched on the device (an op it lacks stops the run here)
        self.on_device = (
            DevicePlacement(
                self.train_transform, self.augment, self.cache_size, self.image_size, self.resize, self.channels
            )
            if self.placement == "device"
            else None
        )
        self.output_dir = output_dir
        self.on_bad_image = check_policy(on_bad_image, "data.on_bad_image")
        self.max_image_pixels = int(max_image_pixels) if max_image_pixels else None
        set_max_image_pixels(self.max_image_pixels)
        # Per-instance state only: a second instance in the same process (a multirun job) starts clean.
        self._discovered: Discovered | None = None
        self._cache_file: Path | None = None
        self._bad: pd.DataFrame | None = None
        self.table: pd.DataFrame | None = None
        self.train_set = self.val_set = self.test_set = None

    # ---- discovery --------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Once per machine (Lightning calls it on local rank 0 only): export data, build the cache, find the
        unreadable images (the cache build decodes every image anyway; without it a cheap pass does)."""
        self.source.prepare()
        self.bad_images()

    def cache_file(self) -> Path:
        """The pre-processing cache for this dataset + pre-processing, built now if missing (see feeding/cache.py).

        Remembered per instance: the key stats every file, and prepare_data and setup both ask for it.
        """
        if self._cache_file is None:
            table, size = self.discovered.table, self.cache_size
            settings = {
                "channels": self.channels,
                "size": list(size),
                "resize": self.resize.cache_settings(),
                "max_pixels": self.max_image_pixels,
            }
            path = cache_path(self.cache_dir, self._dataset_name, table, self.crop, settings)
            if not path.exists():
                about = {"root": self.root, "images": len(table), "crop": self.crop, **settings}
                reason = why_new(path, self._dataset_name, about)
                if reason:
                    log.info(f"Building a new cache: {reason}. The old cache is unused; it can be deleted")
                set_max_image_pixels(self.max_image_pixels)  # this may be a DDP rank unpickled from the parent
                fit = A.Compose([self.resize.fit_op(size)])
                decode = ImageDataset(table, fit, self.channels, self.crop, decode_size=size)
                workers = resolve_num_workers(self.loader.get("num_workers"))
                build_cache(decode, path, num_workers=workers, about=about)
            self._cache_file = path
        return self._cache_file

    @property
    def _dataset_name(self) -> str:
        return Path(str(self.root or "data")).name

    def bad_images(self) -> pd.DataFrame:
        """`row,path,reason` of the discovered files that cannot be decoded, in discovery order (see feeding/checks.py).

        Found once per dataset and settings (by the cache build, or a cheap pass when the cache is off) and
        remembered in the cache folder, so every DDP rank and every later run reads the same list.
        """
        if self._bad is None:
            set_max_image_pixels(self.max_image_pixels)  # also for the loader workers when the cache is off
            table = self.discovered.table
            if self.cache:
                record = bad_list_path(self.cache_file())
            elif self.cache_dir is not None:
                name = self._dataset_name
                record = check_list_path(self.cache_dir, name, table, self.channels, self.crop, self.max_image_pixels)
            else:
                record = None  # nowhere to remember it: every process checks (the result is a pure function)
            workers = resolve_num_workers(self.loader.get("num_workers"))
            self._bad = find_unreadable(table, self.channels, self.crop, record, workers)
        return self._bad

    def readable(self) -> pd.DataFrame:
        """The discovered table without its unreadable files (`data.on_bad_image=skip`), or the error naming the
        first one (`error`); `row` is each file's row in the discovery (and the cache). The unreadable files
        are listed in <run dir>/bad_images.csv either way (see data/bad_images.py)."""
        table = self.discovered.table.assign(row=range(len(self.discovered.table)))
        bad = self.bad_images()
        if bad.empty:
            return table
        where = self._write_output("bad_images.csv", bad[["path", "reason"]])
        kept = drop_unreadable(
            table, bad, self.on_bad_image, key="data.on_bad_image", source="data.root", listed=where
        ).reset_index(drop=True)
        lost = sorted(present(table) - present(kept))
        if lost:
            raise DataConfigError(
                f"class(es) {[self.class_names[i] for i in lost]} have no readable images "
                f"({f'see {where}' if where else 'every file of theirs is unreadable'}): fix those files or "
                "remove the class"
            )
        return kept

    @property
    def discovered(self) -> Discovered:
        if self._discovered is None:
            self.source.prepare()  # idempotent; lets `spec` work before the Trainer exists
            found = self.source.discover()
            if found.multilabel != (self.task == "multilabel"):
                fix = (
                    "set data.task=multilabel"
                    if found.multilabel
                    else "multi-label data comes from data=csv (label_separator/label_columns) or data=mnist_multilabel"
                )
                kind = "label sets" if found.multilabel else "one label per image"
                raise DataConfigError(f"data.task={self.task} but {type(self.source).__name__} gives {kind}: {fix}")
            self._discovered = found
            log.info(f"Found {len(self._discovered.table)} images in {len(self._discovered.class_names)} classes")
        return self._discovered

    @property
    def class_names(self) -> list[str]:
        return list(self.discovered.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def spec(self) -> dict[str, Any]:
        """What the model and predict need to agree with this data; plain types only."""
        return {
            "class_names": self.class_names,
            "channels": self.channels,
            "image_size": list(self.image_size),
            "crop": self.crop,
            "resize": {**self.resize.as_dict(), "fitted": list(self.cache_size)},
            "mean": self.mean,
            "std": self.std,
            "tasks": self.discovered.tasks,
            "multilabel": self.multilabel,
            # how a labelled CSV given to predict/eval writes its sets, as the training manifest did
            "label_separator": getattr(self.source, "label_separator", SEPARATOR),
        }

    @property
    def multilabel(self) -> bool:
        """Several labels per image (data.task=multilabel): targets are multi-hot, the model sigmoid."""
        return bool(self.discovered.multilabel)

    # ---- split and datasets ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.table is not None:
            return
        table = self.split(self.readable())
        self.table = table
        counts = table["split"].value_counts().to_dict()
        folds = f", fold {self.fold} of {self.n_folds}" if self.n_folds else ""
        log.info(f"Split (seed {self.split_seed}{folds}): " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        self._write_split()
        if self.multilabel:
            val = table[table["split"] == "val"]
            absent = sorted(set(range(self.num_classes)) - present(val))
            if len(val) and absent:
                log.warning(
                    f"class(es) {[self.class_names[i] for i in absent]} have no validation image: their AP counts "
                    "as 0 in val/map and their threshold stays 0.5; raise data.val_fraction or add images of them"
                )
        self._make_datasets(table, counts)

    def _make_datasets(self, table: pd.DataFrame, counts: dict[str, int]) -> None:
        """train_set/val_set/test_set from the split table: images from the cache, or decoded from their files."""
        train_tf = self.train_transform
        eval_tf = build_eval_transform(self.image_size, self.resize, self.cache_size, fit=not self.cache)
        cache = str(self.cache_file()) if self.cache else None
        if cache:
            log.info(f"Reading pre-processed images from the cache {cache}")
            size = Path(cache).stat().st_size
            if self.placement == "host" and size <= SMALL_DATA_BYTES:  # opt-in: the device ops differ a little
                log.info(
                    f"The pre-processed images take {size / 2**20:.0f} MiB: data.placement=device would hold them "
                    "on the device and augment whole batches there, without loader workers (configs/data/_common.yaml)"
                )

        def dataset(name: str, transform: Any) -> ImageDataset:
            rows = table[table["split"] == name].reset_index(drop=True)
            return ImageDataset(
                rows,
                transform,
                self.channels,
                self.crop,
                decode_size=self.cache_size,
                cache_file=cache,
                num_classes=self.num_classes,
            )

        self.train_set = dataset("train", train_tf)
        self.val_set = dataset("val", eval_tf)
        self.test_set = dataset("test", eval_tf) if counts.get("test") else None

    def split(self, table: pd.DataFrame) -> pd.DataFrame:
        """`table` with `split` (and, for k-fold, `fold`) columns: a pure function of the data and the config."""
        if "given_split" in table:  # again on the readable images: skipped files may have emptied a class
            check_given_split(table, self.class_names, f"data.root='{self.root}' (its readable images)")
        return table.join(
            assign_splits(table, self.val_fraction, self.test_fraction, self.split_seed, self.n_folds, self.fold)
        )

    def train_class_counts(self) -> np.ndarray:
        """Training images per class (for class-weighted losses), zeros included; multi-label: the positives."""
        self.setup()
        train = self.table[self.table["split"] == "train"]
        if self.multilabel:
            return multi_hot(train["labels"], self.num_classes).sum(axis=0).astype(np.int64)
        return np.bincount(train["label"].to_numpy(), minlength=self.num_classes)

    def train_size(self) -> int:
        """Training images (with `train_class_counts`: the negatives of each class, for BCE's pos_weight)."""
        self.setup()
        return int((self.table["split"] == "train").sum())

    def _write_split(self) -> None:
        names = self.class_names
        if is_multilabel(self.table):  # the set as names, `cat|dog` (empty = no label): data/labels.py
            out, label_cols = self.table.assign(labels=join_names(self.table["labels"], names)), ["labels"]
        else:
            out, label_cols = (
                self.table.assign(label_name=[names[i] for i in self.table["label"]]),
                ["label", "label_name"],
            )
        cols = ["path", *label_cols, "split"] + [c for c in ("fold", "group") if c in out]
        self._write_output("split.csv", out[cols])

    def _write_output(self, name: str, frame: pd.DataFrame) -> Path | None:
        """`frame` as CSV into the run dir, atomically, on global rank 0; the path (on every rank), or None."""
        if not self.output_dir:
            return None
        path = Path(self.output_dir) / name
        if self.trainer is None or self.trainer.is_global_zero:
            atomic_write_text(path, frame.to_csv(index=False))
        return path

    @property
    def has_test(self) -> bool:
        self.setup()
        return self.test_set is not None

    # ---- loaders -----------------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """`loader.batch_size`, as an attribute: Lightning's batch-size finder (`tune=batch_size`) sets it."""
        return int(self.loader.get("batch_size", DEFAULT_BATCH_SIZE))

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.loader["batch_size"] = int(value)

    def state_dict(self) -> dict[str, Any]:
        """In every checkpoint: a batch size `tune=batch_size` found (`tuned_batch_size`), for a resumed run."""
        return {"tuned_batch_size": self.tuned_batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A resumed run loads with the batch size it was tuned to (the config's is what the finder started at)."""
        tuned = state.get("tuned_batch_size")
        if tuned is not None and tuned != self.batch_size:
            log.warning(f"Resuming with the batch size tune=batch_size found: loader.batch_size={tuned}")
            self.batch_size = self.tuned_batch_size = tuned

    def _on_cuda(self) -> bool:
        """Whether batches go to a CUDA device (decides `loader.pin_memory=auto`)."""
        return torch.cuda.is_available() and (self.trainer is None or self.trainer.strategy.root_device.type == "cuda")

    def train_dataloader(self) -> DataLoader:
        """Shuffle (or class-balanced draw) and per-image augmentation seeds from (`draw_seed`, epoch) only: the
        same on every DDP rank before sharding, and replayed exactly by a resumed run (see resume/sampler.py)."""
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.sampler == "weighted" and self.multilabel:
            raise DataConfigError(
                "data.sampler=weighted draws each class equally often, which needs one class per image: use "
                "data.sampler=random for multi-label data (and model.loss.pos_weight for rare classes)"
            )
        weights = balanced_weights(self.train_set.targets) if self.sampler == "weighted" else None
        sampler = EpochSampler(len(self.train_set), seed=self.draw_seed, weights=weights)
        start, self.train_start = self.train_start, None
        if start is not None:
            log.info(f"Resuming the training data at epoch {start[0]}, batch {start[1]}")
        if self.placement == "device":
            return self.resident_loader(self.train_set, sampler=sampler, start=start)
        return make_loader(
            self.train_set,
            self.loader,
            train=True,
            on_cuda=self._on_cuda(),
            world_size=world,
            sampler=sampler,
            start=start,
        )

    def _eval_loader(self, dataset: ImageDataset) -> DataLoader:
        """Under DDP each rank evaluates a disjoint share, unpadded (Lightning's default sampler pads with
        duplicates to even out the ranks, which would count some images twice in macro-F1)."""
        distributed = self.trainer is not None and self.trainer.world_size > 1
        if distributed and len(dataset) < self.trainer.world_size:  # a rank without a batch would hang the others
            raise DataConfigError(
                f"{len(dataset)} evaluation images for {self.trainer.world_size} DDP processes: "
                "raise data.val_fraction / data.test_fraction or use fewer devices"
            )
        if self.on_device is not None and self.on_device.eval_crop is not None:
            return self.resident_loader(dataset)  # its own disjoint, unpadded shares
        sampler = None
        if distributed:
            sampler = unrepeated_distributed_sampler(
                dataset, num_replicas=self.trainer.world_size, rank=self.trainer.global_rank, shuffle=False
            )
        return make_loader(dataset, self.loader, train=False, on_cuda=self._on_cuda(), sampler=sampler)

    # ---- data.placement=device (feeding/resident.py) ------------------------------------------------------
    def resident_loader(
        self,
        dataset: ImageDataset,
        sampler: EpochSampler | None = None,
        start: tuple[int, int] | None = None,
        device: torch.device | None = None,
    ) -> ResidentLoader:
        """data.placement=device: batches drawn from the images held on `device` (default: the trainer's),
        augmented there (training, with the host loader's sampler and drop_last rule) or centre-cropped
        (evaluation, each DDP rank a disjoint share)."""
        trainer = self.trainer
        if device is None:
            device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        batch_size, drop_last = batching(self.loader, sampler is not None, len(dataset), world)
        return self.on_device.loader(
            self.cache_file(),
            device,
            dataset,
            batch_size,
            sampler=sampler,
            start=start,
            rank=rank,
            world=world,
            drop_last=drop_last,
        )

    def augmented_samples(self, count: int, seed: int = 0) -> list[dict[str, Any]]:
        """`count` training images as the model gets them (`{"image": uint8 HxWxC, "target"}`), drawn with `seed`,
        through the host's pipeline or the device's (data.placement): for augmented_samples.png."""
        self.setup()
        n = len(self.train_set)
        picks = np.random.default_rng(seed).choice(n, size=min(count, n), replace=False)
        if self.on_device is None:
            return [self.train_set[int(i)] for i in picks]
        return self.on_device.samples(self.train_set, picks, seed)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise DataConfigError("no test split: set data.test_fraction > 0 to hold out a test set")
        return self._eval_loader(self.test_set)
