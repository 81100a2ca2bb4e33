"""Shared fixtures. Every test is offline and writes only under pytest's tmp_path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("WANDB_MODE", "disabled")

from helpers import make_image_tree, make_manifest  # noqa: E402

import imgcls  # noqa: E402,F401  (offline environment defaults)


@pytest.fixture(scope="session")
def image_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 20 small images; read-only for tests (copy it to modify)."""
    return make_image_tree(tmp_path_factory.mktemp("tree"), per_class=20)


@pytest.fixture(scope="session")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_manifest(tmp_path_factory.mktemp("manifest"), per_class=20)


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real MNIST export (5,000 PNGs) done once per session into a temp data dir."""
    from imgcls.data import MnistSource

    root = tmp_path_factory.mktemp("data") / "mnist5k"
    MnistSource(str(root)).prepare()
    return root


@pytest.fixture(scope="session")
def mask_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated mask-competition folder: 40 train people (280 photos) + 8 eval people, 96x128 pixels."""
    from imgcls.extras.competition.synth_mask import make_mask_dataset

    return make_mask_dataset(
        tmp_path_factory.mktemp("mask") / "competition", people=40, eval_people=8, width=96, height=128, seed=0
    )
