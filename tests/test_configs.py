"""Every option of every config group composes, and the objects it names can be built."""

from __future__ import annotations

import hydra
import pytest
import yaml
from helpers import ROOT, compose, run_main
from omegaconf import OmegaConf

GROUPS = [
    "data",
    "augment",
    "loader",
    "model",
    "callbacks",
    "logger",
    "trainer",
    "paths",
    "hydra",
    "experiment",
    "debug",
    "hparams_search",
]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "configs" / group).glob("*.yaml") if not p.stem.startswith("_"))


def test_every_group_has_options():
    for group in GROUPS:
        assert _options(group), group


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS if g != "hydra" for o in _options(g)])
def test_every_option_composes(group, option, tmp_path):
    where = "data.input_dir" if option == "shards" else "data.root"  # shards: the writer's output
    overrides = (
        [f"{group}={option}", f"{where}={tmp_path}"] if group == "data" and option != "mnist" else [f"{group}={option}"]
    )
    cfg = compose("train", overrides)
    OmegaConf.resolve(cfg.model)  # interpolations into other groups (e.g. ViT's img_size) resolve
    assert cfg.data._target_ and cfg.model.name and cfg.trainer._target_


def test_every_config_file_is_commented():
    for path in (ROOT / "configs").rglob("*.yaml"):
        assert path.read_text().lstrip().startswith("#"), f"{path} should start with a comment saying what it is"


@pytest.mark.parametrize("option", _options("model"))
def test_every_model_option_instantiates(option):
    cfg = compose("train", [f"model={option}", "data.image_size=32"])
    spec = {"class_names": ["a", "b"], "channels": 3, "image_size": [32, 32], "crop": {}, "mean": None, "std": None}
    model = hydra.utils.instantiate(cfg.model, data_spec=spec)
    assert model.model.num_classes == 2


@pytest.mark.parametrize("option", _options("callbacks"))
def test_callback_options_instantiate(option, tmp_path):
    from imgcls.utils.instantiators import instantiate_group

    cfg = compose("train", [f"callbacks={option}", f"paths.output_dir={tmp_path}"])
    names = {type(c).__name__ for c in instantiate_group(cfg.callbacks, "callback").values()}
    if option != "none":
        assert {"ModelCheckpoint", "LearningRateMonitor", "RichProgressBar"} <= names
    assert ("EarlyStopping" in names) == (option == "early_stopping")


@pytest.mark.parametrize("option", _options("logger"))
def test_logger_options_instantiate(option, tmp_path):
    from imgcls.utils.instantiators import instantiate_group

    cfg = compose("train", [f"logger={option}", f"paths.output_dir={tmp_path}"])
    names = {type(lg).__name__ for lg in instantiate_group(cfg.logger, "logger").values()}
    assert ("CSVLogger" in names) == (option != "none")
    if option in ("wandb", "many"):
        assert "WandbLogger" in names and cfg.logger.wandb.offline is True  # no credentials here


@pytest.mark.parametrize("option", ["default", "cpu", "ddp_cpu"])
def test_cpu_trainers_instantiate(option, tmp_path):
    cfg = compose("train", [f"trainer={option}", f"paths.output_dir={tmp_path}"])
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert trainer.num_devices == (2 if option == "ddp_cpu" else 1)


def test_gpu_trainers_ask_for_mixed_precision():
    for option in ("gpu", "ddp"):
        cfg = compose("train", [f"trainer={option}"])
        assert cfg.trainer.accelerator == "gpu" and "mixed" in cfg.trainer.precision


def test_run_dirs_are_unique_to_the_microsecond():
    cfg = compose("train")
    assert "%f" in OmegaConf.to_container(cfg.hydra, resolve=False)["run"]["dir"]


def test_num_classes_is_never_typed():
    """The class count comes from the data at run time: no config names it."""
    for path in (ROOT / "configs").rglob("*.yaml"):
        for number, line in enumerate(path.read_text().splitlines(), 1):  # comments may name it, settings not
            assert "num_classes" not in line.split("#")[0], f"{path}:{number}"


def test_cfg_job_shows_every_group():
    """`python train.py --cfg job` prints the composed config (what the compose-based tests see), nothing else."""
    proc = run_main("train.py", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for key in ("data:", "augment:", "loader:", "model:", "callbacks:", "logger:", "trainer:", "paths:"):
        assert f"\n{key}" in f"\n{out}", key
    composed = OmegaConf.to_container(compose("train"), resolve=False)
    del composed["hydra"]
    assert yaml.safe_load(out) == composed


def test_the_monitored_metric_is_defined_once():
    """`monitor`/`monitor_mode` drive the best checkpoint, the pictures, early stopping and the sweep's metric."""
    cfg = compose("train", ["callbacks=early_stopping", "monitor=val/loss", "monitor_mode=min", "paths.output_dir=/x"])
    cb = cfg.callbacks
    assert cb.model_checkpoint.monitor == cb.pictures.monitor == cb.early_stopping.monitor == "val/loss"
    assert cb.model_checkpoint.mode == cb.pictures.mode == cb.early_stopping.mode == "min"
    assert cfg.optimized_metric == "val/loss_best"
    assert cfg.hydra.callbacks.sweep_summary.monitor_key == "monitor"
    typed = [p for p in (ROOT / "configs").rglob("*.yaml") if "monitor: val/" in p.read_text()]
    assert typed == [], f"the metric is typed in {typed}: it comes from data.task (utils/resolvers.py)"
    by_task = {d: compose("train", [f"data={d}", "paths.output_dir=/x"]) for d in ("mnist", "mnist_multilabel")}
    assert [(c.monitor, c.optimized_metric) for c in by_task.values()] == [
        ("val/f1", "val/f1_best"),
        ("val/map", "val/map_best"),
    ]
    assert by_task["mnist_multilabel"].callbacks.model_checkpoint.monitor == "val/map"
