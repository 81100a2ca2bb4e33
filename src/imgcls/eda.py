"""`python -m imgcls.eda [data=...]`: an EDA report of a dataset (configs/eda.yaml)."""

from typing import Any

import hydra
from omegaconf import DictConfig

import imgcls  # noqa: F401  (offline defaults)
from imgcls.utils import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="../../configs", config_name="eda")
def main(cfg: DictConfig) -> dict[str, Any]:
    from imgcls.tasks.eda import eda

    return eda(cfg)


if __name__ == "__main__":
    main()
