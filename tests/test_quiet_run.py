"""A plain training run prints no noise: no Lightning adverts, no warning about the new run dir, no FLOPs it
cannot count, no NumPy "not writable" warning (data.cache=false, loader.num_workers=0, no resize needed)."""

from __future__ import annotations

import pytest
from helpers import FAST_WITH_PICTURES, run_cli

NOISE = (
    "exists and is not empty",  # Lightning's CSV logger about the run dir Hydra just created
    "Tip:",  # Lightning's adverts (litlogger, litmodels)
    "litlogger",
    "litmodels",
    "Trainer already configured with model summary",
    "FLOPs",  # Lightning's summary counts none for our model: a column of zeros
    "not writable",  # torch.from_numpy on a read-only PIL array
)


@pytest.mark.slow
def test_a_training_run_prints_no_noise(image_tree, tmp_path):
    proc = run_cli(
        "train.py",
        *FAST_WITH_PICTURES,  # a plain run: its pictures too
        "data=folder",
        f"data.root={image_tree}",
        "data.image_size=40",  # the images' own size: the eval resize hands the decoded (read-only) array on
        "data.cache=false",
        f"hydra.run.dir={tmp_path}",
        env={"PYTHONWARNINGS": "default"},  # run_cli hides warnings; this test is about them
    )
    out = proc.stdout + proc.stderr
    assert "Trainable params" in out  # the model summary is still there
    assert not [noise for noise in NOISE if noise in out], out[-6000:]
