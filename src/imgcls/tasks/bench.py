"""Bench: loader images/s per augment preset x cache x num_workers, against the model's training rate."""

from __future__ import annotations

import itertools
import platform
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from imgcls.benchmark import report
from imgcls.benchmark.baselines import BASELINES
from imgcls.benchmark.timing import bare_rate, loader_rate, model_rate
from imgcls.data.loaders import available_cpus, make_loader
from imgcls.utils import get_logger
from imgcls.utils.task_wrapper import task_wrapper

log = get_logger(__name__)


def _preset(name: str) -> dict[str, Any]:
    """An augment preset by name, composed from configs/augment/<name>.yaml like the CLI would."""
    from hydra import compose

    return OmegaConf.to_container(compose(config_name="bench", overrides=[f"augment={name}"]).augment, resolve=True)


def _loader_cfg(cfg: DictConfig, workers: int) -> dict[str, Any]:
    base = OmegaConf.to_container(cfg.loader, resolve=True)
    return {**base, "num_workers": workers, "persistent_workers": workers > 0}


def _measure(dataset: Any, cfg: DictConfig, workers: int, baseline: bool = False) -> float:
    """Our loader exactly as training builds it; a baseline gets a plain DataLoader (default collate)."""
    b = cfg.bench
    if baseline:
        loader = DataLoader(dataset, batch_size=int(cfg.loader.batch_size), shuffle=True, drop_last=True,
                            num_workers=workers, persistent_workers=workers > 0)
    else:
        loader = make_loader(dataset, _loader_cfg(cfg, workers), train=True, pin_memory=False)
    return loader_rate(loader, b.warmup_batches, b.min_batches, b.min_seconds)


@task_wrapper
def bench(cfg: DictConfig) -> dict[str, Any]:
    b = cfg.bench
    out_dir = Path(cfg.paths.output_dir)
    torch.manual_seed(cfg.seed)
    workers = list(b.num_workers) if b.num_workers is not None else list(range(available_cpus() + 1))
    presets = list(b.presets) if b.presets else [cfg.augment.name]
    caches = [bool(c) for c in b.cache]

    log.info(f"Instantiating datamodule <{cfg.data._target_}>")
    datamodule = hydra.utils.instantiate(cfg.data)
    spec = datamodule.spec
    size = tuple(spec["image_size"])

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    log.info(f"Measuring the model's training rate ({cfg.model.name}) on {device}")
    model = hydra.utils.instantiate(cfg.model, data_spec=spec)
    batch_shape = (int(cfg.loader.batch_size), spec["channels"], *size)
    model_ips = model_rate(model, batch_shape, len(spec["class_names"]), device, min_seconds=b.min_seconds)
    del model

    rows: list[dict[str, Any]] = []
    bare: dict[str, float] = {}
    for preset, cache in itertools.product(presets, caches):
        dm = hydra.utils.instantiate(cfg.data, augment=_preset(preset), cache=cache)
        dm.prepare_data()
        dm.setup("fit")
        if preset not in bare:  # the ceiling: the preset alone on in-memory pre-processed arrays
            arrays = [np.array(a) for a in np.load(dm.cache_file(), mmap_mode="r")[:200]] if dm.cache else \
                [dm.val_set.read(i) for i in range(min(200, len(dm.val_set)))]
            bare[preset] = bare_rate(dm.train_set.transform, arrays, b.min_seconds)
        for w in workers:
            ips = _measure(dm.train_set, cfg, w)
            limit = bare[preset] * max(1, w)
            rows.append({"pipeline": "imgcls", "augment": preset, "cache": cache, "num_workers": w,
                         "images_per_sec": ips, "bare_images_per_sec": bare[preset],
                         "efficiency": ips / limit, "keeps_up": ips >= model_ips})
            log.info(f"imgcls {preset:>6s} cache={'on ' if cache else 'off'} workers={w}: {ips:8.1f} img/s")

    if b.baselines:
        table = datamodule.discovered.table
        for name, w in itertools.product(BASELINES, workers):
            ds = BASELINES[name](table["path"].tolist(), table["label"].tolist(), size)
            ips = _measure(ds, cfg, w, baseline=True)
            rows.append({"pipeline": name, "augment": "strong-equivalent", "cache": None, "num_workers": w,
                         "images_per_sec": ips, "bare_images_per_sec": None, "efficiency": None,
                         "keeps_up": ips >= model_ips})
            log.info(f"baseline {name} workers={w}: {ips:8.1f} img/s")

    result = {"model": {"name": cfg.model.name, "images_per_sec": model_ips, "device": str(device),
                        "batch_size": int(cfg.loader.batch_size), "input": list(batch_shape[1:])},
              "rows": rows, "speedups": _speedups(rows),
              "machine": {"cpus": available_cpus(), "python": platform.python_version(), "torch": torch.__version__,
                          "platform": platform.platform()},
              "data": {"root": str(datamodule.root), "images": len(datamodule.discovered.table),
                       "image_size": list(size)}}
    report.print_table(result)
    log.info(f"Wrote {report.write_json(result, out_dir)} and {report.write_png(result, out_dir)}")
    return result


def _speedups(rows: list[dict[str, Any]]) -> list[str]:
    """Our strong preset vs each baseline at the same worker count (the course's comparison)."""
    lines = []
    ours = {(r["cache"], r["num_workers"]): r["images_per_sec"] for r in rows
            if r["pipeline"] == "imgcls" and r["augment"] == "strong"}
    for r in rows:
        if r["pipeline"] == "imgcls":
            continue
        for cache in (True, False):
            mine = ours.get((cache, r["num_workers"]))
            if mine:
                lines.append(f"strong, cache {'on ' if cache else 'off'}, {r['num_workers']} workers: "
                             f"{mine / r['images_per_sec']:.1f}x {r['pipeline']}")
    return lines
