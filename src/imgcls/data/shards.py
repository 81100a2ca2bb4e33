"""Data beyond one machine: any source written once as streamed shards, and trained from them (`data=shards`).

`python -m imgcls.shards data=<any> output=<folder or s3://bucket/prefix>` writes what the cache holds (every
readable image pre-processed at `data.cache_size`, uint8) with labels, groups and the split; `data=shards
data.input_dir=<same>` trains, validates and tests from it on any machine, every DDP rank and loader worker
streaming its own chunks into a bounded local cache (feeding/shards.py: litdata).
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import pandas as pd

from imgcls.data.datamodule import ImageDataModule
from imgcls.data.dataset import seed_pipeline, transformed
from imgcls.data.labels import SEPARATOR, read_verbatim, split_names
from imgcls.data.sources import DataConfigError, Discovered
from imgcls.data.transforms import build_eval_transform
from imgcls.feeding import shard_copy, shards
from imgcls.feeding.loaders import batch_collate, batching, resolve_num_workers, resolve_pin_memory, worker_options
from imgcls.utils.io import json_text
from imgcls.utils.logging import get_logger

log = get_logger(__name__)

FORMAT = 1  # imgcls.json's `format`: bump when what a shard item holds changes


class SeededAugment:
    """`transform` for one image, re-seeded with the item's seed first (training) so an item's augmentation
    depends on (seed, epoch, index) alone; picklable into loader workers."""

    def __init__(self, transform: A.Compose) -> None:
        self.transform, self._nodes = transform, None

    def __call__(self, image: np.ndarray, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self._nodes = seed_pipeline(self.transform, seed, self._nodes)
        return transformed(self.transform, image)


# ---- writing ------------------------------------------------------------------------------------------------
def write_shards(
    dm: ImageDataModule,
    output: str,
    chunk_bytes: str = "64MB",
    storage_options: Mapping[str, Any] | None = None,
    min_chunks: int = shards.MIN_CHUNKS,
) -> dict[str, Any]:
    """`dm`'s splits (its cache: every readable image, pre-processed) as shards in `output`; what was written."""
    shards.check_min_chunks(min_chunks)  # before hours of decoding
    shards.check_writable(output, "output", storage_options)
    dm.prepare_data()
    dm.setup()
    counts: dict[str, int] = {}
    parts = []
    for name, dataset in (("train", dm.train_set), ("val", dm.val_set), ("test", dm.test_set)):
        if dataset is None or len(dataset) == 0:
            continue
        # Shuffled once (from the split seed): a source lists images class by class, and litdata shuffles
        # chunks and windows of items, not across the whole split. split.csv lists each split in this order.
        order = np.random.default_rng([dm.split_seed, len(parts)]).permutation(len(dataset))
        log.info(f"Writing {len(dataset)} {name} images to {shards.join(output, name)}")
        shards.write_split(
            str(dm.cache_file()),
            dataset.rows[order],
            dataset.targets[order],
            shards.join(output, name),
            chunk_bytes,
            storage_options,
            min_chunks,
        )
        counts[name] = len(dataset)
        parts.append(dm.table[dm.table["split"] == name].iloc[order])
    table = pd.concat(parts)
    table = _named_labels(table, dm.class_names, dm.multilabel)
    columns = ["path", "label" if "label" in table else "labels", "split"] + [c for c in ("group",) if c in table]
    shards.write_text(
        shards.join(output, shards.TABLE_FILE), table[columns].to_csv(index=False), "output", storage_options
    )
    bad = dm.bad_images()
    meta = {
        "format": FORMAT,
        "task": dm.task,
        "spec": dm.spec,
        "cache_size": list(dm.cache_size),
        "images": counts,
        # left out at write time (listed with their reasons in the writing run's bad_images.csv)
        "unreadable": bad["path"].tolist(),
        "source": str(dm.root),
    }
    shards.write_text(shards.join(output, shards.META_FILE), json_text(meta), "output", storage_options)
    return meta


def _named_labels(table: pd.DataFrame, names: list[str], multilabel: bool) -> pd.DataFrame:
    if multilabel:
        return table.assign(labels=[SEPARATOR.join(names[i] for i in s) for s in table["labels"]])
    return table


# ---- reading ------------------------------------------------------------------------------------------------
class ShardSource:
    """The rows of a shard dataset (its split.csv) as a discovery, so everything the core DataModule derives from
    a discovery (classes, counts, class weights, split.csv) works unchanged."""

    def __init__(self, meta: dict[str, Any], table: pd.DataFrame) -> None:
        self.meta, self.table = meta, table
        self.label_separator = meta["spec"].get("label_separator", SEPARATOR)

    def prepare(self) -> None:
        pass

    def discover(self) -> Discovered:
        spec = self.meta["spec"]
        names = list(spec["class_names"])
        table = self.table.copy()
        if spec.get("multilabel"):
            index = {n: i for i, n in enumerate(names)}
            table["labels"] = [tuple(index[n] for n in split_names(v, SEPARATOR) or ()) for v in table["labels"]]
        return Discovered(table, names, spec.get("tasks"), bool(spec.get("multilabel")))


class ShardDataModule(ImageDataModule):
    """`data=shards`: the images, labels and split written by `python -m imgcls.shards`, streamed.

    The pre-processing (channels, sizes, crop, resize) is the writer's, read from the shards' imgcls.json; the
    augmentation, loader and seeds are this run's. Training draws follow litdata: each epoch a shuffle of the
    chunks and of the items inside them, from `draw_seed` and the epoch; under DDP every rank ends the epoch
    after the same number of whole batches (litdata's drop_last), at most world_size x batch_size - 1 images an
    epoch left out, other ones each epoch. Evaluation reads every image once, each rank its own chunks.
    """

    def __init__(
        self,
        input_dir: str,
        task: str = "multiclass",
        cache_dir: str | None = None,
        max_cache_size: str | int | None = "20GB",
        storage_options: Mapping[str, Any] | None = None,
        local_copy: str | bool = "auto",
        **kwargs: Any,
    ) -> None:
        if not input_dir or str(input_dir) == "???":
            raise DataConfigError(
                "data.input_dir is not set: pass data.input_dir=<folder or s3://...> written by python -m imgcls.shards"
            )
        self.input_dir = str(input_dir).rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.max_cache_size = max_cache_size
        if not (local_copy == "auto" or isinstance(local_copy, bool)):
            raise DataConfigError(f"data.local_copy={local_copy}: use auto, true or false")
        self.local_copy = local_copy
        meta = shards.read_meta(self.input_dir, self.storage_options)
        if meta.get("format") != FORMAT:
            raise DataConfigError(
                f"data.input_dir='{input_dir}' was written by another version (format {meta.get('format')}): "
                "write it again with python -m imgcls.shards"
            )
        csv = shards.read_text(shards.join(self.input_dir, shards.TABLE_FILE), "data.input_dir", self.storage_options)
        table = (
            read_verbatim(io.StringIO(csv), ["labels"], keep_default_na=False)
            if meta["spec"].get("multilabel")
            else pd.read_csv(io.StringIO(csv))
        )
        spec = meta["spec"]
        if task != meta["task"]:
            raise DataConfigError(
                f"data.task={task} but data.input_dir='{input_dir}' holds {meta['task']} data: "
                f"set data.task={meta['task']}"
            )
        resize = {k: v for k, v in spec["resize"].items() if k != "fitted"}
        if kwargs.get("placement", "host") != "host":
            raise DataConfigError(
                "data.placement=device holds a cache in device memory; shards stream: "
                "use data.placement=host with data=shards"
            )
        if kwargs.get("sampler", "random") != "random":
            raise DataConfigError(
                "data.sampler=weighted draws images at random, shards stream chunk by chunk: "
                "use data.sampler=random (and model.class_weights for imbalance)"
            )
        name = f"{self.input_dir.rsplit('/', 1)[-1]}-{hashlib.sha1(self.input_dir.encode()).hexdigest()[:8]}"
        chunk_cache = Path(cache_dir or Path(tempfile.gettempdir()) / "imgcls-shard-cache") / name
        super().__init__(
            source=ShardSource(meta, table),
            root=self.input_dir,
            task=meta["task"],
            image_size=spec["image_size"],
            channels=spec["channels"],
            crop=spec["crop"],
            resize=resize,
            cache=True,  # the shards hold fitted images, as a cache does: no fit op in the pipelines
            cache_dir=str(chunk_cache),
            cache_size=meta["cache_size"],
            **kwargs,
        )
        self.meta = meta
        self.train_loader: Any = None
        self.saved_loader_state: dict[str, Any] | None = None

    # Nothing to decode: the writer cached every image and left the unreadable ones out (imgcls.json lists them).
    def prepare_data(self) -> None:
        pass

    def bad_images(self) -> pd.DataFrame:
        return pd.DataFrame(columns=["row", "path", "reason"])

    def cache_file(self) -> Any:
        raise DataConfigError("data=shards has no cache file: its images are in data.input_dir")

    def split(self, table: pd.DataFrame) -> pd.DataFrame:
        return table  # as written

    @property
    def copy_dir(self) -> Path:
        """Where remote splits are copied (data.local_copy): beside the streamed chunk cache."""
        return self.cache_dir / "copy"

    def _copies(self, names: list[str]) -> bool:
        """data.local_copy: copy remote splits whole into the chunk cache once and read them in place (auto: when
        they fit data.max_cache_size), or stream them (feeding/shards.py says what each costs); logged."""
        remote = shards.is_remote(self.input_dir)
        copy, size = remote and self.local_copy is not False, 0
        if copy and self.local_copy == "auto":
            urls = [shards.join(self.input_dir, n) for n in names]
            copy, size = shard_copy.fits_cache(
                urls, self.max_cache_size, str(self.cache_dir), str(self.copy_dir), self.storage_options
            )
        if self.trainer is not None and self.trainer.world_size > 1:
            copy = self.trainer.strategy.broadcast(copy, src=0)  # all ranks one way (free disk changes as one copies)
        if copy:
            log.info(f"Reading {self.input_dir} from a local copy in {self.copy_dir} (data.local_copy)")
        else:
            fit = f"; {size / 2**30:.1f} GB do not fit it" if size else ""
            log.info(
                f"Streaming pre-processed images from {self.input_dir} "
                f"(chunk cache {self.cache_dir}, at most {self.max_cache_size}{fit})"
            )
        return copy

    def _make_datasets(self, table: pd.DataFrame, counts: dict[str, int]) -> None:
        copy = self._copies([n for n in shards.SPLITS if counts.get(n)])
        eval_tf = build_eval_transform(self.image_size, self.resize, self.cache_size, fit=False)
        distributed = self.trainer is not None and self.trainer.world_size > 1

        def stream(name: str, transform: A.Compose, train: bool) -> Any:
            return shards.open_split(
                shards.join(self.input_dir, name),
                SeededAugment(transform),
                train=train,
                seed=self.draw_seed,
                cache_dir=str(self.cache_dir / name),
                max_cache_size=self.max_cache_size,
                storage_options=self.storage_options,
                drop_last=train and distributed,  # ranks in step; evaluation: every image once
                copy_dir=str(self.copy_dir / name) if copy else None,
            )

        # The streams are the datasets: random access too (pictures of mistakes), items in the order written.
        self.train_set = stream("train", self.train_transform, True)
        self.val_set = stream("val", eval_tf, False) if counts.get("val") else None
        self.test_set = stream("test", eval_tf, False) if counts.get("test") else None

    def _loader(self, stream: Any, split: str) -> Any:
        train = split == "train"
        world = self.trainer.world_size if self.trainer is not None else 1
        batch_size, drop_last = batching(self.loader, train, len(stream) * world, world)
        drop_last = drop_last or (train and world > 1)  # else litdata gives the last rank every leftover item
        if world > 1:
            images = self.meta["images"][split]
            size = shards.rank_batch_size(split, images, batch_size, world)
            if size != batch_size:
                log.info(
                    f"Reading the {images} {split} images in batches of {size}, not {batch_size}, so that each of "
                    f"{world} DDP processes has one at least"
                )
            batch_size = size
        workers = resolve_num_workers(self.loader.get("num_workers"))
        persistent = bool(self.loader.get("persistent_workers", True))
        limit = self.trainer.limit_train_batches if self.trainer is not None else 1.0
        if train and limit not in (None, 1.0):
            persistent = False  # litdata's workers move to the next epoch only when their stream runs out
        settings = {**self.loader, "persistent_workers": persistent}
        return shards.shard_loader(
            stream,
            batch_size=batch_size,
            num_workers=workers,
            drop_last=drop_last,
            pin_memory=resolve_pin_memory(self.loader.get("pin_memory", "auto"), self._on_cuda()),
            collate_fn=batch_collate(settings, workers),
            **worker_options(settings, workers),
        )

    def train_dataloader(self) -> Any:
        self.train_loader = loader = self._loader(self.train_set, "train")
        start, self.train_start = self.train_start, None  # (epoch, batch) a resumed run goes on at (resume/state.py)
        if start is not None:
            # Mid-epoch: the saved loader state goes on at the next batch. At an epoch's end the state counts that
            # epoch's items (not all of them under drop_last): start the next epoch instead.
            loader.resume(start[0], self.saved_loader_state if start[1] > 0 else None)
        elif self.trainer is not None:
            loader.current_epoch = self.trainer.current_epoch  # a loader made again (reload_dataloaders_every_n)
        self.saved_loader_state = None
        return loader

    # The loader's state travels in the DataModule's own part of every checkpoint. Lightning keeps it too, but
    # restores it only into a loader it makes after the loops are restored (configure_optimizers makes this one
    # before, for the schedule's length: trainer.estimated_stepping_batches), and never at an epoch's end.
    def state_dict(self) -> dict[str, Any]:
        loader = self.train_loader
        return {**super().state_dict(), "train_loader": loader.state_dict() if loader is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.saved_loader_state = state.get("train_loader")

    def val_dataloader(self) -> Any:
        return self._loader(self.val_set, "val")

    def test_dataloader(self) -> Any:
        if self.test_set is None:
            raise DataConfigError(
                f"data.input_dir='{self.input_dir}' has no test split: write it with data.test_fraction > 0"
            )
        return self._loader(self.test_set, "test")

    def augmented_samples(self, count: int, seed: int = 0) -> list[dict[str, Any]]:
        """For augmented_samples.png: `count` training items drawn with `seed`, augmented as training does."""
        self.setup()
        n = len(self.train_set)
        picks = np.random.default_rng(seed).choice(n, size=min(count, n), replace=False)
        return [self.train_set[int(i)] for i in picks]
