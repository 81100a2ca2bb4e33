"""Test data and CLI helpers: small, deterministic, generated on the fly (nothing downloaded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("circle", "square", "bar")


def draw_shape(kind: str, rng: np.random.Generator, size: int = 40) -> Image.Image:
    """A noisy photo-like RGB image of one shape: easy to learn, never identical."""
    base = rng.integers(60, 200, size=3)
    arr = np.clip(base + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    c = int(rng.integers(size // 3, 2 * size // 3))
    r = int(rng.integers(size // 6, size // 4))
    fill = tuple(int(v) for v in 255 - base)
    if kind == "circle":
        draw.ellipse([c - r, c - r, c + r, c + r], fill=fill)
    elif kind == "square":
        draw.rectangle([c - r, c - r, c + r, c + r], fill=fill)
    else:
        draw.rectangle([2, c - 3, size - 3, c + 3], fill=fill)
    return img


def make_image_tree(root: Path, per_class: int = 20, seed: int = 0, classes=CLASSES) -> Path:
    """root/<class>/<n>.png|jpg, mixed formats, plus a hidden macOS `._` file that must be ignored."""
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ext = "jpg" if i % 2 else "png"
            draw_shape(name, rng).save(root / name / f"{i:03d}.{ext}")
    (root / classes[0] / "._000.jpg").write_bytes(b"\x00\x05\x16\x07 not an image")
    return root


def make_manifest(root: Path, per_class: int = 20, seed: int = 0, groups: bool = False) -> Path:
    """An image tree plus labels.csv (`path,label[,group]`) with paths relative to `root`."""
    make_image_tree(root / "images", per_class, seed)
    rows = ["path,label" + (",group" if groups else "")]
    for name in CLASSES:
        for i, p in enumerate(sorted((root / "images" / name).glob("[!.]*"))):
            rows.append(f"images/{name}/{p.name},{name}" + (f",{name}-{i // 2}" if groups else ""))
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


_SCRATCH: list[str] = []


def _scratch() -> str:
    if not _SCRATCH:
        _SCRATCH.append(tempfile.mkdtemp(prefix="imgcls-tests-"))
    return _SCRATCH[0]


def run_cli(
    script: str, *overrides: str, cwd: Path = ROOT, check: bool = True, timeout: int = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `python <script> overrides...` as a user would; fail with its output on a non-zero exit."""
    # IMGCLS_ROOT moves paths.data_dir (exports, caches) and paths.log_dir away from the clone.
    full_env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "PYTHONWARNINGS": "ignore",
        "IMGCLS_ROOT": _scratch(),
        **(env or {}),
    }
    target = ["-m", script] if script.startswith("imgcls.") else [str(ROOT / script)]  # a module or a script
    proc = subprocess.run(
        [sys.executable, *target, *overrides], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{script} {' '.join(overrides)} exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


def compose(config_name: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The config exactly as the CLI would compose it (Hydra's compose API, no run dir created)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from imgcls.utils.resolvers import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


# Overrides that make a CLI training run take seconds: a tiny timm model, small inputs, no progress bar.
FAST = (
    "model=resnet10t",
    "model.name=test_resnet",
    "data.image_size=32",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "loader.batch_size=16",
    "loader.num_workers=0",
    "callbacks.progress_bar=null",
    "print_config=false",
)
