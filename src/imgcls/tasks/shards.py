"""Write streamed shards: any data option's images, pre-processed once, with labels, groups and the split.

The images are what the cache holds (decoded, cropped, fitted to `data.cache_size`, uint8; the unreadable ones
left out and listed in the run's bad_images.csv), written as litdata chunks to a folder or an object store
(data/shards.py, feeding/shards.py). Train from them anywhere with `data=shards data.input_dir=<output>`.
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

from imgcls.cli.wrapper import task_wrapper
from imgcls.data.shards import write_shards
from imgcls.utils import get_logger, write_json_atomic
from imgcls.utils.config import to_plain
from imgcls.utils.errors import ConfigError

log = get_logger(__name__)


@task_wrapper
def shards(cfg: DictConfig) -> dict[str, Any]:
    if not cfg.get("output") or str(cfg.output) == "???":
        raise ConfigError("output is not set: pass output=<folder> or output=s3://bucket/prefix")
    log.info(f"Instantiating datamodule <{cfg.data._target_}>")
    dm = hydra.utils.instantiate(cfg.data, cache=True)  # the shards hold what the cache holds
    meta = write_shards(dm, str(cfg.output), str(cfg.chunk_bytes), to_plain(cfg.storage_options), int(cfg.min_chunks))
    counts = ", ".join(f"{k}={v}" for k, v in meta["images"].items())
    log.info(f"Wrote {counts} images ({len(meta['unreadable'])} unreadable left out) to {cfg.output}")
    log.info(f"Train from them: python train.py data=shards data.input_dir={cfg.output}")
    write_json_atomic(f"{cfg.paths.output_dir}/shards.json", {"output": str(cfg.output), **meta})
    return meta
