"""imgcls: an image-classification starter template (Lightning + Hydra + timm + albumentations).

Importing the package makes every entry point offline-safe before any third-party library is imported:
albumentations would call PyPI at import, timm/huggingface_hub would retry a hub for ~45 s before failing.
Users who want those features set the variables themselves; `setdefault` never overrides them.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _find_project_root() -> Path:
    """The clone's root (holds `configs/`), so runs land in `<root>/logs` from whatever cwd."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "configs" / "train.yaml").is_file():
            return parent
    return Path.cwd()


PROJECT_ROOT = _find_project_root()
CONFIG_DIR = PROJECT_ROOT / "configs"
# paths.root_dir (data/ and logs/) defaults to the clone; IMGCLS_ROOT moves them elsewhere.
os.environ.setdefault("IMGCLS_ROOT", str(PROJECT_ROOT))

__version__ = "0.1.0"
