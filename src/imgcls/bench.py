"""`python -m imgcls.bench [data=...] [bench.num_workers=[0,2]] [bench.baselines=true]` (configs/bench.yaml)."""

from typing import Any

import hydra
from omegaconf import DictConfig

import imgcls  # noqa: F401  (offline defaults)
from imgcls.utils import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="../../configs", config_name="bench")
def main(cfg: DictConfig) -> dict[str, Any]:
    from imgcls.tasks.bench import bench

    return bench(cfg)


if __name__ == "__main__":
    main()
