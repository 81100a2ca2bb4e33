"""Train an image classifier: `python train.py [group=option ...] [key=value ...]` (see configs/train.yaml)."""

from typing import Any

import imgcls  # noqa: F401  (sets offline defaults before any other import)
from imgcls.cli.entry import hydra_entry


def optimized_metric(cfg: Any, metrics: dict[str, Any]) -> float | None:
    """What a sweeper (e.g. Optuna) maximises: `cfg.optimized_metric` from the run's metrics."""
    value = metrics.get(cfg.get("optimized_metric"))
    return None if value is None else float(value)


main = hydra_entry("train", "imgcls.tasks.train:train", result=optimized_metric, resumable=True)

if __name__ == "__main__":
    main()
