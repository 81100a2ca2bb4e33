"""imgcls: an image-classification starter template (Lightning + Hydra + timm + albumentations).

Importing the package stops albumentations (and litdata) calling PyPI (their update checks), before any third-party
library is imported; `setdefault` never overrides a user's own setting. The Hugging Face variables are the
user's: a default run never asks a hub, and `model.pretrained=true` reads the local cache first (models/hub.py).
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # litdata (data=shards) asks PyPI for a newer release


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
