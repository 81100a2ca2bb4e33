"""What this run ran on: the first thing to read when a GPU is not used or a result does not reproduce."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from imgcls.utils.io import atomic_write_text

PACKAGES = (
    "imgcls",
    "torch",
    "torchvision",
    "lightning",
    "torchmetrics",
    "timm",
    "albumentations",
    "albucore",
    "opencv-python-headless",
    "numpy",
    "pillow",
    "hydra-core",
    "omegaconf",
    "scikit-learn",
    "wandb",
)


def available_cpus() -> int:
    """CPUs this process may use (respects taskset/cgroups affinity, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


def collect_env() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus_available": available_cpus(),
        "cpus_total": os.cpu_count(),
        "torch": torch.__version__,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if cuda else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "packages": versions,
    }


def format_env(env: dict[str, Any]) -> str:
    lines = [f"{k}: {v}" for k, v in env.items() if k != "packages"]
    if not env["cuda_available"]:
        lines.append(
            "note: no CUDA device visible; training runs on the CPU (check the driver, "
            "CUDA_VISIBLE_DEVICES and that torch is a CUDA build)"
        )
    lines.append("packages:")
    lines += [f"  {name}=={version}" for name, version in env["packages"].items()]
    return "\n".join(lines) + "\n"


def write_env_report(output_dir: str | Path) -> dict[str, Any]:
    """`env.txt` in the run dir; returns the dict for the loggers' config."""
    env = collect_env()
    atomic_write_text(Path(output_dir) / "env.txt", format_env(env))
    return env
