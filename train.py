"""Train an image classifier: `python train.py [group=option ...] [key=value ...]` (see configs/train.yaml)."""

from typing import Any

import hydra
from omegaconf import DictConfig

import imgcls  # noqa: F401  (sets offline defaults before any other import)
from imgcls.utils import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from imgcls.tasks.train import train

    metrics = train(cfg)
    value = metrics.get(cfg.get("optimized_metric"))
    return None if value is None else float(value)


if __name__ == "__main__":
    main()
