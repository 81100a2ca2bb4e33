"""Bench: loader images/s per augment preset x cache x num_workers, against the model's training rate.

Machines drift (turbo, neighbours): every measurement is repeated `bench.repeats` times in round-robin over
all rows, baselines included, and the median is reported, so a slow minute hurts every row alike.
"""

from __future__ import annotations

import atexit
import itertools
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import hydra.errors
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from imgcls.cli.wrapper import task_wrapper
from imgcls.extras.benchmark import inference, report
from imgcls.extras.benchmark.baselines import BASELINES
from imgcls.extras.benchmark.timing import bare_rate, ddp_loader_rates, loader_rate, model_rate
from imgcls.feeding.loaders import available_cpus, make_loader
from imgcls.resume.sampler import EpochSampler
from imgcls.utils import get_logger
from imgcls.utils.config import to_plain
from imgcls.utils.errors import ConfigError

log = get_logger(__name__)


def _preset(name: str) -> dict[str, Any]:
    """An augment preset by name, composed from configs/augment/<name>.yaml like the CLI would."""
    from hydra import compose

    return OmegaConf.to_container(compose(config_name="bench", overrides=[f"augment={name}"]).augment, resolve=True)


def _loader_timer(
    dataset: Any, cfg: DictConfig, workers: int, baseline: bool = False, processes: int = 1
) -> Callable[[], float | list[float]]:
    """A closure timing our loader exactly as training builds it (a baseline: a plain DataLoader); with
    `processes` > 1, that many concurrent DDP-like loaders, each on its shard: one rate per process."""
    b = cfg.bench
    settings = {
        **OmegaConf.to_container(cfg.loader, resolve=True),
        "num_workers": workers,
        "persistent_workers": workers > 0,
    }  # the loader group as training uses it, this row's workers

    def measure() -> float | list[float]:
        if processes > 1:
            return ddp_loader_rates(dataset, settings, processes, b.warmup_batches, b.min_batches, b.min_seconds)
        if baseline:
            loader = DataLoader(
                dataset,
                batch_size=int(cfg.loader.batch_size),
                shuffle=True,
                drop_last=True,
                num_workers=workers,
                persistent_workers=workers > 0,
            )
        else:
            loader = make_loader(dataset, settings, train=True, on_cuda=False)
        return loader_rate(loader, b.warmup_batches, b.min_batches, b.min_seconds)

    return measure


def _ready(cfg: DictConfig, augment: dict[str, Any], cache: bool, placement: str = "host") -> Any:
    """A DataModule for one preset, cache and placement setting, prepared and split (the cache built if missing)."""
    data = cfg.data.copy()
    # Replaced, not merged: instantiate(cfg.data, augment=...) would merge the preset into the composed config's
    # own preset, and every row would also run that preset's ops (a bench of `strong + randaugment`).
    OmegaConf.update(data, "augment", augment, merge=False)
    dm = hydra.utils.instantiate(data, cache=cache, placement=placement)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _rows(cfg: DictConfig, datamodule: Any, workers: list[int]) -> list[dict[str, Any]]:
    """Every row to time: ours per preset x cache x workers (+ each preset's bare ceiling), then baselines."""
    b = cfg.bench
    rows: list[dict[str, Any]] = []
    wanted = {bool(c) for c in b.cache}
    stores: list[str] = []
    for preset in list(b.presets) if b.presets else [cfg.augment.name]:
        augment = _preset(preset)
        modules = {cache: _ready(cfg, augment, cache) for cache in wanted | {True}}  # cached one: the ceiling
        for cache, procs, w in itertools.product(sorted(wanted, reverse=True), b.get("processes") or [1], workers):
            rows.append(
                {
                    "pipeline": "imgcls",
                    "augment": preset,
                    "cache": cache,
                    "num_workers": w,
                    "processes": int(procs),
                    "ops": [type(op).__name__ for op in modules[cache].train_set.transform.transforms],
                    "measure": _loader_timer(modules[cache].train_set, cfg, w, processes=int(procs)),
                }
            )
        if "device" in (b.get("placement") or []):
            rows += _device_rows(cfg, augment, preset)
        if b.get("shards"):
            stores = stores or _write_shards(cfg, modules[True])  # written once, for the first preset
            rows += _shard_rows(cfg, augment, preset, stores, workers)
        # The ceiling: the preset alone, one thread, on in-memory pre-processed (cached-size) arrays.
        train_set = modules[True].train_set
        arrays = [train_set.read(i) for i in range(min(200, len(train_set)))]
        rows.append(
            {
                "pipeline": "bare",
                "augment": preset,
                "cache": None,
                "num_workers": 0,
                "processes": 1,
                "measure": lambda t=train_set.transform, a=arrays: bare_rate(t, a, b.min_seconds),
            }
        )
    if b.baselines:
        table = datamodule.readable()  # the baselines read the same files (no unreadable ones) as ours
        size = tuple(datamodule.spec["image_size"])
        for name, w in itertools.product(BASELINES, workers):
            make, preset = BASELINES[name]
            ds = make(table["path"].tolist(), table["label"].tolist(), size)
            rows.append(
                {
                    "pipeline": name,
                    "augment": f"{preset}-equivalent",
                    "cache": None,
                    "num_workers": w,
                    "processes": 1,
                    "measure": _loader_timer(ds, cfg, w, baseline=True),
                }
            )
    return rows


def _device_rows(cfg: DictConfig, augment: dict[str, Any], preset: str) -> list[dict[str, Any]]:
    """data.placement=device for one preset: the cache on the model's device, whole batches augmented there (no
    workers); none when the preset has an op without a device version (said in the log)."""
    b = cfg.bench
    try:
        dm = _ready(cfg, augment, cache=True, placement="device")
    except hydra.errors.InstantiationException as exc:  # instantiate wraps what the DataModule raised
        if not isinstance(exc.__cause__, ConfigError):
            raise
        log.info(f"  no device row for augment={preset}: {exc.__cause__}")
        return []
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sampler = EpochSampler(len(dm.train_set), seed=0)
    loader = dm.resident_loader(dm.train_set, sampler=sampler, device=device)
    return [
        {
            "pipeline": "imgcls",
            "placement": "device",
            "augment": preset,
            "cache": True,
            "num_workers": 0,
            "processes": 1,
            "ops": [type(op).__name__ for op in [dm.on_device.augment.warp, *dm.on_device.augment.ops]],
            "measure": lambda: loader_rate(loader, b.warmup_batches, b.min_batches, b.min_seconds),
        }
    ]


def _write_shards(cfg: DictConfig, cached: Any) -> list[str]:
    """bench.shards: the composed data written once as streamed shards to each store listed ("folder": a
    temporary folder, removed at exit), as `python -m imgcls.shards output=<store>` writes them: their urls."""
    from imgcls.data.shards import write_shards  # litdata, imported only for these rows

    b = cfg.bench
    stores = []
    for store in b.shards:
        url = str(store)
        if store == "folder":
            url = str(Path(tempfile.mkdtemp(prefix="imgcls-bench-shards-")) / "shards")
            atexit.register(shutil.rmtree, Path(url).parent, ignore_errors=True)
        log.info(f"Writing the data as shards to {url}")
        write_shards(cached, url, str(b.shard_chunk_bytes), to_plain(b.shard_storage_options), int(b.shard_min_chunks))
        stores.append(url)
    return stores


def _shard_rows(
    cfg: DictConfig, augment: dict[str, Any], preset: str, stores: list[str], workers: list[int]
) -> list[dict[str, Any]]:
    """data=shards for one preset: the training loader streaming each store's shards, as training builds it,
    through a chunk cache of its own (a temporary folder: the first round pays the downloads, reported as
    `cold_images_per_sec`)."""
    from imgcls.data.shards import ShardDataModule
    from imgcls.feeding import shards as shards_io

    b = cfg.bench
    rows = []
    copies = to_plain(b.shard_local_copy) if OmegaConf.is_list(b.shard_local_copy) else [b.shard_local_copy]
    for url, w, copy in itertools.product(stores, workers, copies):
        if not shards_io.is_remote(url) and copy != copies[0]:
            continue  # a folder is read in place: one row
        loader = {**OmegaConf.to_container(cfg.loader, resolve=True), "num_workers": w, "persistent_workers": w > 0}
        chunk_cache = tempfile.mkdtemp(prefix="imgcls-bench-chunks-")
        atexit.register(shutil.rmtree, chunk_cache, ignore_errors=True)
        dm = ShardDataModule(
            input_dir=url,
            task=cfg.data.get("task", "multiclass"),
            cache_dir=chunk_cache,
            storage_options=to_plain(b.shard_storage_options),
            local_copy=copy,
            draw_seed=int(cfg.seed),
            flips=to_plain(cfg.data.get("flips", ["horizontal"])),
            mean=to_plain(cfg.data.get("mean")),
            std=to_plain(cfg.data.get("std")),
            augment=augment,
            loader=loader,
        )
        start = time.perf_counter()
        dm.setup("fit")  # (a local copy is made here)
        setup_seconds = time.perf_counter() - start
        place = "shards:" + (
            "folder" if not shards_io.is_remote(url) else "s3" if dm.train_set.input_dir.url else "s3-copy"
        )
        rows.append(
            {
                "pipeline": "imgcls",
                "placement": place,
                "augment": preset,
                "cache": None,
                "num_workers": w,
                "processes": 1,
                "ops": [type(op).__name__ for op in dm.train_transform.transforms],
                "setup_seconds": setup_seconds,
                "measure": lambda dm=dm: loader_rate(
                    dm.train_dataloader(), b.warmup_batches, b.min_batches, b.min_seconds
                ),
            }
        )
    return rows


def inference_bench(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """`bench.inference=true`: the model as deployed, per runtime (extras/benchmark/inference.py), on real
    validation images of the composed data at its input size."""
    b = cfg.bench
    log.info(f"Instantiating datamodule <{cfg.data._target_}>")
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    sizes = sorted(int(s) for s in b.inference_batch_sizes)
    batches, have = [], 0
    for batch in datamodule.val_dataloader():
        batches.append(batch["image"].numpy())
        have += len(batches[-1])
        if have >= sizes[-1]:
            break
    images = np.concatenate(batches)
    images = np.concatenate([images] * -(-sizes[-1] // len(images)))[: sizes[-1]]  # a small val split, repeated
    classifier = hydra.utils.instantiate(cfg.model, data_spec=datamodule.spec, pretrained=False).eval()
    log.info(f"Timing {cfg.model.name} at {list(images.shape[1:])} for batch sizes {sizes}")
    result = inference.inference_rows(
        classifier, images, sizes, int(b.repeats), float(b.min_seconds), to_plain(b.get("compile"))
    )
    result |= {"model": cfg.model.name, "input": list(images.shape[1:]), "machine": _machine()}
    inference.print_table(result)
    json_path, png_path = inference.write_outputs(result, out_dir)
    log.info(f"Wrote {json_path} and {png_path}")
    return result


def _machine() -> dict[str, Any]:
    return {
        "cpus": available_cpus(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


@task_wrapper
def bench(cfg: DictConfig) -> dict[str, Any]:
    b = cfg.bench
    out_dir = Path(cfg.paths.output_dir)
    torch.manual_seed(cfg.seed)
    if b.get("inference"):
        return inference_bench(cfg, out_dir)
    workers = list(b.num_workers) if b.num_workers is not None else list(range(available_cpus() + 1))

    log.info(f"Instantiating datamodule <{cfg.data._target_}>")
    datamodule = hydra.utils.instantiate(cfg.data)
    spec = datamodule.spec
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    log.info(f"Measuring the model's training rate ({cfg.model.name}) on {device}")
    batch_shape = (int(cfg.loader.batch_size), spec["channels"], *spec["image_size"])
    model_rates: dict[bool, float] = {}
    compile_settings = to_plain(b.get("compile"))
    for compiled in (False, compile_settings) if compile_settings else (False,):  # side by side, same batches
        model = hydra.utils.instantiate(cfg.model, data_spec=spec, compile=compiled)
        model.configure_model()  # what Lightning calls before fit: torch.compile of the network (model.compile)
        rate = model_rate(model, batch_shape, len(spec["class_names"]), device, min_seconds=b.min_seconds)
        model_rates[compiled is not False] = rate
        del model
    model_ips = model_rates[False]
    if True in model_rates:
        log.info(f"The model trains at {model_ips:.1f} img/s eager, {model_rates[True]:.1f} img/s compiled")

    rows = _rows(cfg, datamodule, workers)
    for round_ in range(int(b.repeats)):
        log.info(f"Round {round_ + 1}/{b.repeats} over {len(rows)} rows")
        for row in rows:
            value = row["measure"]()
            rates = value if isinstance(value, list) else [value]
            row.setdefault("runs", []).append(sum(rates))
            row.setdefault("process_runs", []).append(rates)
            log.info(
                f"  {row['pipeline']:>14s} {row['augment']:>17s} cache={row['cache']!s:5s} "
                f"placement={row.get('placement', 'host')} "
                f"processes={row['processes']} workers={row['num_workers']}: {row['runs'][-1]:8.1f} img/s"
            )
    bare = {r["augment"]: statistics.median(r["runs"]) for r in rows if r["pipeline"] == "bare"}
    results = []
    for row in rows:
        if row["pipeline"] == "bare":
            continue
        ips = statistics.median(row["runs"])
        ceiling = bare.get(row["augment"])
        cores = max(1, row["num_workers"]) * row["processes"]  # loading processes: workers, else the main one
        results.append(
            {k: row[k] for k in ("pipeline", "augment", "cache", "num_workers", "processes")}
            | {"placement": row.get("placement", "host")}
            | ({"ops": row["ops"]} if "ops" in row else {})  # what the row ran, to check a preset is itself
            | {
                "images_per_sec": ips,
                "images_per_sec_per_worker": ips / cores,  # what one core of loading gives
                "runs": row["runs"],
                # data=shards: the first round read through an empty chunk cache (downloads), the others warm
                # (and opening its splits took setup_seconds: a local copy is made then)
                **(
                    {"cold_images_per_sec": row["runs"][0], "setup_seconds": row["setup_seconds"]}
                    if row.get("placement", "").startswith("shards")
                    else {}
                ),
                "per_process_images_per_sec": [
                    statistics.median(r[i] for r in row["process_runs"]) for i in range(row["processes"])
                ],
                "bare_images_per_sec": ceiling if row["pipeline"] == "imgcls" else None,
                # the ceiling is one bare thread per worker process (each DDP process has its own workers)
                "efficiency": ips / (ceiling * cores)
                if row["pipeline"] == "imgcls" and row["cache"] and row.get("placement", "host") == "host"
                else None,
                "keeps_up": ips >= model_ips,
            }
        )

    result = {
        "model": {
            "name": cfg.model.name,
            "images_per_sec": model_ips,
            "compiled_images_per_sec": model_rates.get(True),  # bench.compile=true: under torch.compile
            "device": str(device),
            "batch_size": int(cfg.loader.batch_size),
            "input": list(batch_shape[1:]),
        },
        "rows": results,
        "bare_images_per_sec": bare,
        "speedups": _speedups(results),
        "repeats": int(b.repeats),
        "machine": _machine(),
        "data": {
            "root": str(datamodule.root),
            "images": len(datamodule.discovered.table),
            "image_size": list(spec["image_size"]),
        },
    }
    report.print_table(result)
    log.info(f"Wrote {report.write_json(result, out_dir)} and {report.write_png(result, out_dir)}")
    return result


def _speedups(rows: list[dict[str, Any]]) -> list[str]:
    """Each baseline vs our preset doing the same work (baselines.py), at the same worker count."""
    lines = []
    ours = {
        (r["augment"], r["cache"], r["num_workers"]): r["images_per_sec"]
        for r in rows
        if r["pipeline"] == "imgcls" and r["processes"] == 1 and r["placement"] == "host"
    }
    for r in rows:  # data.placement=device vs the cached host loader with the most workers
        if r.get("placement") == "device":
            host = [(w, ips) for (a, c, w), ips in ours.items() if a == r["augment"] and c]
            if host:
                w, ips = max(host)
                ratio = r["images_per_sec"] / ips
                lines.append(f"{r['augment']}, on the device: {ratio:.1f}x the cached loader with {w} workers")
    for r in rows:  # data=shards vs the cached host loader, same preset and workers
        mine = ours.get((r["augment"], True, r["num_workers"]))
        if r.get("placement", "").startswith("shards") and mine:
            lines.append(
                f"{r['augment']}, {r['placement']}, {r['num_workers']} workers: {r['images_per_sec'] / mine:.2f}x "
                f"the cached loader (first round: {r['cold_images_per_sec'] / mine:.2f}x; "
                f"{r['setup_seconds']:.1f} s to open its splits)"
            )
    for r in rows:
        if r["pipeline"] not in BASELINES:
            continue
        preset = BASELINES[r["pipeline"]][1]
        for cache in (True, False):
            mine = ours.get((preset, cache, r["num_workers"]))
            if mine:
                lines.append(
                    f"{preset}, cache {'on ' if cache else 'off'}, {r['num_workers']} workers: "
                    f"{mine / r['images_per_sec']:.1f}x {r['pipeline']}"
                )
    return lines
