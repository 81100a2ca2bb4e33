"""Predict with a trained checkpoint: `python predict.py ckpt_path=<run>/checkpoints/best.ckpt input=<img|dir|csv>`."""

from typing import Any

import hydra
from omegaconf import DictConfig

import imgcls  # noqa: F401  (sets offline defaults before any other import)
from imgcls.utils import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="configs", config_name="predict")
def main(cfg: DictConfig) -> dict[str, Any]:
    from imgcls.tasks.predict import predict

    return predict(cfg)


if __name__ == "__main__":
    main()
