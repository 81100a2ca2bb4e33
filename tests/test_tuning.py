"""`tune=lr_find|batch_size`: Lightning's Tuner before training; what it found, recorded and trained with."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import FAST, run_task

from imgcls.extras.tuning import check_tune
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
    with pytest.raises(ConfigError, match="tune='lr_finder': use tune=lr_find, tune=batch_size or"):
        run_task("train", "data=folder", f"data.root={image_tree}", *FAST, "tune=lr_finder", run_dir=tmp_path)


@pytest.mark.slow
def test_batch_size_find_trains_and_checkpoints_the_size_it_found(image_tree, tmp_path):
    overrides = ("data=folder", f"data.root={image_tree}", *FAST, "loader.batch_size=4", "tune=[lr_find,batch_size]")
    tuning = ("batch_size_find.max_trials=2", "batch_size_find.steps_per_trial=1", "lr_find.num_training=5")
    run = run_task("train", *overrides, *tuning, run_dir=tmp_path)
    assert run.log.index("batch-size finder") < run.log.index("learning-rate range test")  # batch size first
    record = json.loads((tmp_path / "batch_size_find.json").read_text())
    assert record == {"start": 4, "batch_size": 8}  # two trials (4, 8), no out-of-memory on a CPU
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["ImageDataModule"] == {"tuned_batch_size": 8}  # a resumed run loads with it
    steps = json.loads((tmp_path / "metrics.json").read_text())["global_step"]
    assert steps == 54 // 8  # the epoch ran in batches of 8 (54 training images, the last part dropped)


def test_tune_choices_run_in_one_order_and_a_wrong_one_is_named():
    assert check_tune(None) == [] and check_tune("lr_find") == ["lr_find"]
    assert check_tune(["lr_find", "batch_size"]) == ["batch_size", "lr_find"]
    with pytest.raises(ConfigError, match=r"^tune=\['lr', 'batch_size'\]: use tune=lr_find, tune=batch_size or"):
        check_tune(["lr", "batch_size"])


def test_a_resumed_run_loads_with_the_checkpoints_tuned_batch_size(image_tree, tmp_path):
    from imgcls.data import FolderSource, ImageDataModule

    def datamodule():
        return ImageDataModule(
            FolderSource(str(image_tree)), root=str(image_tree), image_size=16,
            loader={"batch_size": 4, "num_workers": 0}, cache=False, cache_dir=str(tmp_path),
        )  # fmt: skip

    untuned = datamodule()
    assert untuned.state_dict() == {"tuned_batch_size": None}
    untuned.load_state_dict({"tuned_batch_size": None})  # an untuned run's checkpoint: the config's size stays
    assert untuned.batch_size == 4
    dm = datamodule()
    dm.load_state_dict({"tuned_batch_size": 8})  # what Lightning does with the checkpoint's ImageDataModule entry
    dm.setup("fit")
    assert dm.batch_size == 8 and dm.train_dataloader().batch_sampler.batch_size == 8
    assert dm.state_dict() == {"tuned_batch_size": 8}  # and keeps it for the next resume


@pytest.mark.parametrize("tuner", ["find_batch_size", "find_lr"])
def test_tuning_refuses_ddp_in_one_line(tuner, tmp_path):
    from types import SimpleNamespace

    from imgcls.extras import tuning

    name = {"find_batch_size": "batch_size", "find_lr": "lr_find"}[tuner]
    with pytest.raises(ConfigError, match=f"^tune={name} runs in one process: tune with trainer=default, then"):
        getattr(tuning, tuner)(SimpleNamespace(world_size=2), None, None, tmp_path, {})
