"""Kill and resume: a run SIGKILLed at a random step and resumed with `ckpt_path=last` ends with the same
metrics.json, weights and metrics.csv rows as the same run left alone, in its own run dir.

Why it holds (see src/imgcls/data/samplers.py, callbacks/step_seeds.py, ImageDataModule.state_dict): every
random draw in training is a function of (seed, epoch, position), the checkpoint carries the position in the
data, and the logs continue instead of restarting. The killed run is a real process (SIGKILLed); the uninterrupted
reference (tests/helpers.py's `run_task`) runs in this process, and so does the resumed run (`run_main`: train.py's
own main(), its `ckpt_path=last` lookup included) except in one mode, where it is a fresh interpreter.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import pickle
import random
from pathlib import Path

import pytest
import torch
import yaml
from helpers import ROOT, run_cli, run_main, run_task

from imgcls.resume.csv_logger import CSVLogger, rows_before
from imgcls.resume.runs import ResumeError, find_run, resolve_resume, wandb_run_id

# image_tree: 54 training images / 16 = 3 steps per epoch, 3 epochs; tests/ on the path for the kill callback.
STEPS_PER_EPOCH, EPOCHS = 3, 3
TIMING = ("samples_per_sec", "step_time", "data_wait", "first_batch_wait")
ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))}


def _overrides(tree: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "data=folder",
        f"data.root={tree}",
        f"data.cache_dir={cache}",
        "model=resnet10t",
        "model.name=test_resnet",
        "data.image_size=32",
        f"trainer.max_epochs={EPOCHS}",
        "trainer.log_every_n_steps=1",
        "loader.batch_size=16",
        "callbacks.progress_bar=null",
        "callbacks.pictures=null",
        "print_config=false",
        "augment=strong",
        "augment.mixup={mixup_alpha:0.4,cutmix_alpha:1.0}",
        "model.ema={decay:0.9}",  # the weight average (checkpointed beside the weights) must continue exactly too
        "+callbacks.kill._target_=kill_at_step.KillAtStep",
        *extra,
    ]


def _runs(log_dir: Path) -> list[Path]:
    return sorted(p for p in (log_dir / "train" / "runs").glob("*") if p.is_dir())


def _comparable_metrics(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.pop("best_checkpoint")
    metrics["final"] = {k: v for k, v in metrics["final"].items() if not any(t in k for t in TIMING)}
    return metrics


def _csv_rows(run: Path) -> list[dict]:
    """metrics.csv rows without wall-clock columns (and the rows holding only those)."""
    with open(run / "metrics.csv", newline="") as file:
        rows = [
            {k: v for k, v in row.items() if v and k not in ("step",) and not any(t in k for t in TIMING)}
            for row in csv.DictReader(file)
        ]
    return [row for row in rows if set(row) - {"epoch"}]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    """The network's weights and their EMA (models/ema.py)."""
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return {**ckpt["state_dict"], **{f"ema.{k}": v for k, v in ckpt["state_dict_ema"].items()}}


@pytest.fixture(scope="session")  # session: built once per worker even if its tests are not run in a row
def uninterrupted(image_tree, tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")

    def run(*extra: str) -> Path:
        out = root / f"full{len(list(root.glob('full*')))}"
        run_task("train", *_overrides(image_tree, root / "cache", *extra), run_dir=out)  # in-process: nothing killed
        return out

    return root, run


MODES = {  # name: (overrides, kill step or None for a seeded-random one)
    # last.ckpt at each epoch's end (the default), 0 workers: the interrupted epoch is replayed.
    "epoch_end": (["loader.num_workers=0"], None),
    # last.ckpt every 2 steps, 2 persistent workers: training goes on at the next batch, with the interrupted
    # epoch's training metrics as far as they had got (its train/*_epoch rows match too).
    "mid_epoch": (["loader.num_workers=2", "callbacks.last_checkpoint.every_n_train_steps=2"], None),
    # Step 6 is epoch 1's last batch: a step checkpoint there would come before epoch 1's validation (Lightning's
    # own ModelCheckpoint writes it; the resumed run then never validated epoch 1). Killed at step 7.
    "step_at_epoch_end": (["loader.num_workers=0", "callbacks.last_checkpoint.every_n_train_steps=2"], 7),
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_killed_at_a_random_step_and_resumed_equals_the_uninterrupted_run(image_tree, uninterrupted, tmp_path, mode):
    """Mixup is on (its draws must follow the step, not the process's history), and so is model EMA."""
    cache_root, full_run = uninterrupted
    extra, kill_at = MODES[mode]
    reference = full_run(*extra)
    log_dir = tmp_path / "logs"
    overrides = [*_overrides(image_tree, cache_root / "cache", *extra), f"paths.log_dir={log_dir}"]
    # After the first checkpoint (so there is one to resume from), before the last epoch ends.
    kill_at = kill_at or random.Random(f"{mode}-resume").randint(STEPS_PER_EPOCH + 1, STEPS_PER_EPOCH * EPOCHS - 2)
    killed = run_cli("train.py", *overrides, check=False, env={**ENV, "KILL_AT_STEP": str(kill_at)})
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL: nothing ran after the kill
    (run_dir,) = _runs(log_dir)
    assert not (run_dir / "metrics.json").exists()

    # mid_epoch resumes in a fresh interpreter (as after a real crash): nothing of this process may help it.
    resumed = (
        run_cli("train.py", *overrides, "ckpt_path=last", env=ENV)
        if mode == "mid_epoch"
        else run_main("train.py", *overrides, "ckpt_path=last")
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming {run_dir} from checkpoints/last.ckpt" in resumed.stderr
    assert _runs(log_dir) == [run_dir]  # the same run dir, no new one
    assert _comparable_metrics(run_dir) == _comparable_metrics(reference), f"killed at step {kill_at}"
    mine, theirs = _weights(run_dir), _weights(reference)
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    rows, expected = _csv_rows(run_dir), _csv_rows(reference)
    assert rows == expected  # nothing lost, nothing logged twice
    if mode != "epoch_end":
        return

    # A run dir resumes that run with its own overrides, here for one more epoch.
    longer = [a for a in overrides if not a.startswith("trainer.max_epochs")]
    longer_run = run_main("train.py", f"ckpt_path={run_dir}", f"trainer.max_epochs={EPOCHS + 1}")
    assert longer_run.returncode == 0, longer_run.stderr[-3000:]
    assert _runs(log_dir) == [run_dir]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == EPOCHS + 1
    assert set(longer) <= set(yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()))


# ---- how `ckpt_path=last|<run dir>` is resolved (no training) ------------------------------------------------
def _fake_run(runs: Path, name: str, overrides: list[str], checkpoint: bool = True) -> Path:
    run = runs / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if checkpoint:
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    return run


def test_last_is_the_newest_run_with_the_same_overrides(tmp_path):
    runs, log_dir = tmp_path / "train" / "runs", f"paths.log_dir={tmp_path}"
    _fake_run(runs, "a", ["model=resnet18", "seed=1", log_dir])
    same = _fake_run(runs, "b", ["seed=1", log_dir, "model=resnet18", "ckpt_path=/x/last.ckpt", "hydra.run.dir=/y"])
    _fake_run(runs, "c", ["model=resnet18", "seed=2", log_dir])
    assert find_run(runs, ["model=resnet18", "seed=1", log_dir]) == same  # order, ckpt_path, hydra.* ignored
    assert find_run(runs, ["model=resnet18", log_dir]) is None

    argv = resolve_resume(["model=resnet18", "seed=1", "ckpt_path=last", log_dir], str(ROOT / "configs"), "train")
    assert argv == [
        "model=resnet18",
        "seed=1",
        log_dir,
        f"ckpt_path={same / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={same}",
    ]


def test_resume_errors_and_special_cases(tmp_path):
    configs = str(ROOT / "configs")
    with pytest.raises(ResumeError, match=r"ckpt_path=last: no earlier run .* ckpt_path=<run dir>"):
        resolve_resume(["ckpt_path=last", f"paths.log_dir={tmp_path}"], configs, "train")
    with pytest.raises(ResumeError, match="resumes one run"):
        resolve_resume(["-m", "ckpt_path=last", "seed=1,2"], configs, "train")
    # Killed before its first checkpoint: start again, in the same folder.
    early = _fake_run(tmp_path / "train" / "runs", "early", ["seed=3"], checkpoint=False)
    assert resolve_resume([f"ckpt_path={early}"], configs, "train") == [
        "seed=3",
        "ckpt_path=null",
        f"hydra.run.dir={early}",
    ]
    # Flags stay before the overrides (Hydra reads overrides as one run); this command's values replace the run's.
    assert resolve_resume(["--cfg", "job", f"ckpt_path={early}", "+seed=4"], configs, "train") == [
        "--cfg",
        "job",
        "+seed=4",
        "ckpt_path=null",
        f"hydra.run.dir={early}",
    ]
    # A checkpoint file or no ckpt_path: untouched.
    assert resolve_resume(["ckpt_path=/some/file.ckpt", "seed=1"], configs, "train") == [
        "ckpt_path=/some/file.ckpt",
        "seed=1",
    ]
    assert resolve_resume(["seed=1"], configs, "train") == ["seed=1"]


def test_the_cli_refuses_an_unresolvable_last_in_one_line(tmp_path):
    """What the user sees: the exit status and one line (train.py's main(), in-process)."""
    proc = run_main("train.py", "ckpt_path=last", f"paths.log_dir={tmp_path}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: ckpt_path=last: no earlier run under")


def test_csv_rows_are_cut_where_training_continues(tmp_path):
    path = tmp_path / "metrics.csv"
    rows = [("0", "0", "1.0"), ("", "4", ""), ("0", "4", "0.9"), ("1", "5", "0.8"), ("", "6", ""), ("1", "6", "0.7")]
    path.write_text("epoch,step,loss\n" + "".join(",".join(r) + "\n" for r in rows))
    header, kept = rows_before(path, epoch=1, step=6)  # a checkpoint after 6 steps, inside epoch 1
    assert header == ["epoch", "step", "loss"] and [r["loss"] for r in kept] == ["1.0", "", "0.9", "0.8"]
    assert [r["loss"] for r in rows_before(path, epoch=1, step=5)[1]] == ["1.0", "", "0.9"]  # epoch 1 replayed
    path.write_text(path.read_text() + "1,7,0.")  # killed while appending a row
    assert [r["loss"] for r in rows_before(path, epoch=2, step=0)[1]] == ["1.0", "", "0.9", "0.8", "", "0.7"]


def test_a_logger_continues_the_file_under_its_header_and_a_new_run_starts_one(tmp_path, caplog, monkeypatch):
    """A resumed run keeps the rows before its checkpoint (also after a kill while its writer was made), a new run
    in a used run dir starts a new file (said in the log), and under DDP spawn each stage's process, given the
    main process's writer pickled (knowing no columns), continues the file: test's columns beside fit's."""
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,loss\n0,0,1.0\n0,4,0.9\n1,8,0.8\n")
    CSVLogger(save_dir=str(tmp_path), name="", version="", resume_at=(1, 8))
    assert path.read_text() == "epoch,step,loss\n0,0,1.0\n0,4,0.9\n"
    path.unlink()  # killed between the renames around Lightning's writer, before the cut:
    (tmp_path / ".metrics.csv.kept").write_text("epoch,step,loss\n0,0,1.0\n0,4,0.9\n1,8,0.8\n")
    assert CSVLogger(save_dir=str(tmp_path), name="", version="", resume_at=(1, 8)).experiment is not None
    assert path.read_text() == "epoch,step,loss\n0,0,1.0\n0,4,0.9\n"
    with caplog.at_level(logging.INFO):
        main = CSVLogger(save_dir=str(tmp_path), name="", version="")
    assert not path.exists() and "Starting a new" in caplog.text
    assert main.experiment is not None  # made in the main process (log_hyperparams), before any row
    for pid, row in ((1001, {"epoch": 0, "loss": 1.0}), (1002, {"test/acc": 0.5})):  # fit's process, then test's
        monkeypatch.setattr(os, "getpid", lambda pid=pid: pid)
        stage = pickle.loads(pickle.dumps(main))
        stage.log_metrics(row, step=pid - 1001)
        stage.save()
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert rows == [
        {"epoch": "0", "loss": "1.0", "step": "0", "test/acc": ""},
        {"epoch": "", "loss": "", "step": "1", "test/acc": "0.5"},
    ]


def test_wandb_run_id_is_kept_per_run_dir(tmp_path):
    first = wandb_run_id(tmp_path)
    assert first and wandb_run_id(tmp_path) == first and (tmp_path / "wandb_id.txt").read_text().strip() == first
    assert wandb_run_id(tmp_path / "other") != first
