"""`tune=lr_find`: Lightning's range test before training; plot, record and the lr training then used."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import FAST, run_task

from imgcls.utils.errors import ConfigError


@pytest.mark.slow
def test_lr_find_writes_its_plot_and_trains_at_the_suggestion(image_tree, tmp_path):
    overrides = ("data=folder", f"data.root={image_tree}", *FAST, "tune=lr_find", "lr_find.num_training=15")
    run_task("train", *overrides, "trainer.max_epochs=1", run_dir=tmp_path)
    record = json.loads((tmp_path / "lr_find.json").read_text())
    assert (tmp_path / "lr_find.png").stat().st_size > 0 and len(record["lr"]) == len(record["loss"]) > 10
    assert record["lr"] == sorted(record["lr"])  # rising
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == 1  # then the run's own max_epochs
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert record["suggestion"] is not None
    assert ckpt["hyper_parameters"]["optimizer"]["lr"] == pytest.approx(record["suggestion"])
    assert ckpt["optimizer_states"][0]["param_groups"][0]["initial_lr"] == pytest.approx(record["suggestion"])


def test_an_unknown_tune_value_is_named(image_tree, tmp_path):
    with pytest.raises(ConfigError, match="tune='lr_finder': use tune=lr_find"):
        run_task("train", "data=folder", f"data.root={image_tree}", *FAST, "tune=lr_finder", run_dir=tmp_path)
