"""`python -m imgcls.gpu_check`: without a GPU it exits at once saying so; its plan (`--dry-run`) is what a GPU
machine would run, every step's overrides compose, and the steps are bounded in steps, not time."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from imgcls import CONFIG_DIR
from imgcls import gpu_check as entry
from imgcls.extras import gpu_check

CONFIGS = {"train.py": "train", "predict.py": "predict", "export.py": "export", "-m imgcls.bench": "bench"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only exit")
def test_without_cuda_it_exits_at_once_with_one_line(capsys):
    assert entry.main([]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and "no CUDA device" in out.err and "--dry-run" in out.err


def test_dry_run_lists_the_plan_and_skips_ddp_on_one_gpu(capsys):
    assert entry.main(["--dry-run", "--gpus", "1"]) == 0
    one = capsys.readouterr().out
    names = [s.name for s in gpu_check.plan(1)]
    assert all(f". {name}: " in one for name in names) and f"{len(names)} steps" in one
    assert one.count("[skipped: needs 2 GPUs, 1 visible]") == 2  # ddp and its one-device comparison
    assert entry.main(["--dry-run", "--gpus", "4"]) == 0
    four = capsys.readouterr().out
    assert "skipped" not in four and "trainer=ddp trainer.devices=4" in four


@pytest.mark.parametrize("step", gpu_check.plan(2), ids=lambda s: s.name)
def test_every_step_composes(step, tmp_path):
    """A typo in a key or an option fails here, not on the lent GPU machine."""
    runs = {s.name: tmp_path / s.name for s in gpu_check.plan(2)}
    overrides = [a for a in step.argv(runs, tmp_path)[2:] if not a.startswith("hydra.")]
    if step.script == "-m imgcls.bench":
        overrides = step.argv(runs, tmp_path)[3:-1]
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose(CONFIGS[step.script], overrides)
    assert cfg.task_name


def test_bounded_in_steps_not_time():
    """Every training run stops after a fixed number of steps (or one epoch of the default data)."""
    for step in gpu_check.plan(8):
        if step.script == "train.py":
            bounds = [a for a in step.overrides if a.startswith(("++trainer.max_steps=", "trainer.max_epochs=1"))]
            assert bounds, step.name
    total = gpu_check.DEFAULT_STEPS + 4 * gpu_check.PHOTO_STEPS
    assert total <= 600


@pytest.mark.slow  # a real train.py process
def test_a_failed_step_fails_the_check_and_the_rest_still_run(tmp_path):
    """The runner records each step; one needing a failed step's run dir fails saying which."""
    steps = [
        gpu_check.Step("bad", "train.py", ["trainer.max_epochs=oops"], "a config error"),
        gpu_check.Step("after", "predict.py", ["ckpt_path={run:bad}/x.ckpt"], "needs bad's run"),
    ]
    result = gpu_check.run(steps, gpus=1, out=tmp_path, log=lambda line: None)
    assert not result["passed"] and [r["status"] for r in result["steps"]] == ["failed", "failed"]
    assert "'bad'" in result["steps"][1]["error"]
    json_path, md_path = gpu_check.write_report(result, {"gpu": "none"}, tmp_path)
    assert json.loads(json_path.read_text())["passed"] is False and "| bad | failed |" in md_path.read_text()


def test_train_figures_come_from_the_logged_series(tmp_path):
    """The last throughput figures and the largest device-memory peak DeviceStatsMonitor logged."""
    peak = "DeviceStatsMonitor.on_train_batch_end/allocated_bytes.all.peak"
    (tmp_path / "metrics.csv").write_text(
        f"epoch,step,train/samples_per_sec,train/data_wait_frac_epoch,{peak}\n"
        f"0,9,100.0,,{2**30}\n0,19,120.0,,{3 * 2**30}\n0,19,,0.05,\n"
    )
    figures = gpu_check._train_figures(tmp_path, {})
    assert figures == {"train_images_per_sec": 120.0, "data_wait_frac": 0.05, "peak_memory_gib": 3.0}


def test_gpu_and_cpu_predictions_must_agree(tmp_path):
    def write(name: str, preds: list[int], probs: list[float]) -> None:
        (tmp_path / name).mkdir()
        rows = "".join(f"img{i}.png,{p},{q}\n" for i, (p, q) in enumerate(zip(preds, probs, strict=True)))
        (tmp_path / name / "predictions.csv").write_text("path,pred,prob\n" + rows)

    runs = {"predict_gpu": tmp_path / "predict_gpu", "predict_cpu": tmp_path / "predict_cpu"}
    write("predict_gpu", [1] * 200, [0.9] * 200)
    write("predict_cpu", [1] * 199 + [2], [0.9] * 199 + [0.5])  # one near-tie flipped: 99.5% agree
    assert gpu_check._gpu_equals_cpu(runs["predict_cpu"], runs)["same_answer"] == pytest.approx(0.995)
    (runs["predict_cpu"] / "predictions.csv").write_text(
        "path,pred,prob\n" + "".join(f"img{i}.png,1,0.8\n" for i in range(200))
    )
    with pytest.raises(AssertionError, match="probabilities up to 0.1"):
        gpu_check._gpu_equals_cpu(runs["predict_cpu"], runs)
