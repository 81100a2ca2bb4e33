"""Scaling out: the Optuna search (hparams_search=optuna) and the submitit launchers (hydra/launcher=slurm|local)."""

from __future__ import annotations

import math
from pathlib import Path

import hydra
import pytest
import yaml
from helpers import FAST, ROOT, compose, read_metrics, run_cli
from omegaconf import OmegaConf

SEARCH_SPACE = {"model.optimizer.lr", "model.optimizer.weight_decay", "augment", "loader.batch_size"}
# FAST with a batch-size range that fits the 54 training images of the `image_tree` fixture (drop_last is on).
FAST_SEARCH = tuple(o for o in FAST if not o.startswith("loader.batch_size=")) + ("loader.batch_size=choice(8,16)",)


def _job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def _job_overrides(job_dir: Path) -> dict[str, str]:
    lines = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
    return dict(line.split("=", 1) for line in lines)


def test_optuna_search_composes_into_optuna_distributions():
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
    from optuna.distributions import CategoricalDistribution, LogUniformDistribution

    cfg = compose("train", ["hparams_search=optuna"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert sweeper.direction == "maximize" and sweeper.storage is None  # in memory by default
    assert cfg.optimized_metric == "val/f1_best" and sweeper.sampler.seed == cfg.seed
    assert set(sweeper.params) == SEARCH_SPACE

    # The search space as the sweeper itself parses it.
    space, fixed = create_params_from_overrides([f"{k}={v}" for k, v in sweeper.params.items()])
    assert not fixed
    assert space["model.optimizer.lr"] == LogUniformDistribution(1e-4, 1e-2)
    assert isinstance(space["model.optimizer.weight_decay"], LogUniformDistribution)
    assert space["augment"] == CategoricalDistribution(("none", "basic", "strong"))
    assert space["loader.batch_size"] == CategoricalDistribution((32, 64, 128))
    for preset in space["augment"].choices:  # every choice is an option of the augment group
        assert (ROOT / "configs" / "augment" / f"{preset}.yaml").exists(), preset

    built = hydra.utils.instantiate(sweeper)  # the sampler (seeded by the run seed) and the sweeper build
    assert type(built.sweeper.sampler).__name__ == "TPESampler"


def test_optuna_sqlite_storage_resumes(tmp_path):
    """The documented `hydra.sweeper.storage=sqlite:///...` (needs SQLAlchemy < 2 with optuna 2.10)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    for _ in range(2):  # as the sweeper does: create or load the study, then run trials
        study = optuna.create_study(study_name="imgcls", storage=storage, direction="maximize", load_if_exists=True)
        study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=2)
    assert len(optuna.load_study(study_name="imgcls", storage=storage).trials) == 4


def test_slurm_launcher_writes_the_documented_sbatch_options(tmp_path, monkeypatch):
    """Compose hydra/launcher=slurm and render the sbatch script that submitit would submit (no cluster here)."""
    import submitit
    from submitit.slurm.slurm import SlurmExecutor

    cfg = compose(
        "train",
        [
            "hydra/launcher=slurm",
            "trainer=ddp",
            "trainer.devices=4",
            "++trainer.num_nodes=2",
            "hydra.launcher.nodes=2",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.account=lab",
            "hydra.launcher.mem_gb=100",
            "hydra.launcher.timeout_min=90",
            "hydra.launcher.setup=[module load cuda]",
            f"hydra.sweep.dir={tmp_path}",
        ],
    )
    documented = {
        "partition",
        "account",
        "qos",
        "constraint",
        "timeout_min",
        "nodes",
        "gpus_per_node",
        "tasks_per_node",
        "cpus_per_task",
        "mem_gb",
        "array_parallelism",
        "max_num_timeout",
        "setup",
        "additional_parameters",
    }
    assert documented <= set(cfg.hydra.launcher)
    launcher = hydra.utils.instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    assert launcher.params["gpus_per_node"] == launcher.params["tasks_per_node"] == 4  # one process per GPU

    class Submitted(Exception):
        pass

    def capture(executor, *args, **kwargs):
        raise Submitted(executor._executor._make_submission_file_text("python -m submitit.core._submit x", "0"))

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # pretend `srun` exists
    monkeypatch.setattr(submitit.AutoExecutor, "map_array", capture)
    launcher.config = cfg
    with pytest.raises(Submitted) as submitted:
        launcher.launch([["seed=1"]], initial_job_idx=0)
    sbatch = str(submitted.value)
    for line in (
        "--partition=gpu",
        "--account=lab",
        "--gpus-per-node=4",
        "--ntasks-per-node=4",
        "--nodes=2",
        "--cpus-per-task=8",
        "--mem=100GB",
        "--time=90",
        "--job-name=train",
    ):
        assert f"#SBATCH {line}\n" in sbatch, line
    assert "module load cuda" in sbatch and "srun" in sbatch  # SLURM starts the tasks Lightning joins


def test_local_launcher_composes():
    cfg = compose("train", ["hydra/launcher=local", "trainer=ddp_cpu"])
    launcher = hydra.utils.instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "LocalLauncher"
    assert launcher.params["gpus_per_node"] == 2 and launcher.params["tasks_per_node"] == 1


@pytest.mark.slow
def test_optuna_search_reports_the_best_trial(image_tree, tmp_path):
    proc = run_cli(
        "train.py",
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        "data=folder",
        f"data.root={image_tree}",
        *FAST_SEARCH,
        f"hydra.sweep.dir={tmp_path}",
    )
    jobs = _job_dirs(tmp_path)
    assert [p.name for p in jobs] == ["0", "1", "2"]

    scores = []
    for job in jobs:
        overrides, config = _job_overrides(job), OmegaConf.load(job / ".hydra" / "config.yaml")
        assert SEARCH_SPACE <= set(overrides)
        assert config.augment.name == overrides["augment"]  # the group choice composed that preset
        assert config.loader.batch_size == int(overrides["loader.batch_size"]) in (8, 16)  # the CLI range won
        assert 1e-4 <= config.model.optimizer.lr <= 1e-2
        scores.append(read_metrics(job)["final"]["val/f1_best"])

    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna" and set(results["best_params"]) == SEARCH_SPACE
    assert math.isclose(results["best_value"], max(scores), rel_tol=1e-6)
    best_jobs = [job for job, score in zip(jobs, scores) if math.isclose(score, results["best_value"], rel_tol=1e-6)]
    assert any(all(_job_overrides(job)[k] == str(v) for k, v in results["best_params"].items()) for job in best_jobs)
    assert "Best value" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_local_launcher_runs_a_two_job_sweep(image_tree, tmp_path):
    run_cli(
        "train.py",
        "-m",
        "hydra/launcher=local",
        "data=folder",
        f"data.root={image_tree}",
        *FAST,
        "augment=none,basic",
        f"hydra.sweep.dir={tmp_path}",
    )
    jobs = _job_dirs(tmp_path)
    assert [p.name for p in jobs] == ["0", "1"]
    for job, preset in zip(jobs, ("none", "basic")):
        assert OmegaConf.load(job / ".hydra" / "config.yaml").augment.name == preset
        assert 0 <= read_metrics(job)["final"]["val/acc"] <= 1
    logs = list((tmp_path / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2  # each job ran as its own submitit process
