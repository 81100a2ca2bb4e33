"""The GPU check's plan, its runner and its report (`python -m imgcls.gpu_check`, `make gpu-check`).

Every GPU path of the template has run only on CPUs in CI; a GPU machine is lent for minutes at a time. The
check is a fixed list of real runs (the project's own entry points, one process each, as a user runs them),
bounded in *steps* so it fits in about 5 minutes on one modern GPU by construction, not by timers:

- the default recipe on `trainer=gpu` (bf16, channels_last), 300 steps;
- 224² photo-like data through a ResNet-50 and a ViT-S, eager and under torch.compile, 60 steps each:
  train img/s, the data-wait fraction, peak device memory;
- `trainer=ddp` on every visible GPU (2 or more, else skipped), one epoch, and one device predicting with its weights:
  the logged val/acc must be the one-device accuracy on the same images (as the CPU DDP test checks);
- the loader bench with the model's rate on the device: how many workers keep up;
- predict on the GPU and on the CPU from one checkpoint: probabilities within `PREDICT_TOLERANCE`;
- export to ONNX with its own check against PyTorch.

Later steps read earlier steps' run dirs: `{run:<step>}` in an argument is that step's run dir.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgcls import PROJECT_ROOT
from imgcls.utils.io import atomic_write_text

PREDICT_TOLERANCE = 1e-3  # float32 on the GPU (cuDNN/TF32 kernels) against the CPU, per class probability
PREDICT_AGREEMENT = 0.99  # ...and the same top class for at least this share of the images (near-ties may flip)
STEP_TIMEOUT = 900  # seconds: a hung step (an NCCL rendezvous) fails instead of blocking the check
DEFAULT_STEPS = 300  # the default recipe: ~4 epochs of the 4,500 digits
PHOTO_STEPS = 60  # each 224² model run: enough to pass the compile warm-up and time steady steps
# Lightning's own device-memory logger (torch.cuda.memory_stats on each batch): the peak comes from its keys.
MEMORY = "+callbacks.device_stats._target_=lightning.pytorch.callbacks.DeviceStatsMonitor"


@dataclass
class Step:
    """One run of an entry point (`script`: a file in the project root, or `-m module`) with `overrides`."""

    name: str
    script: str
    overrides: list[str]
    why: str
    min_gpus: int = 1
    check: Callable[[Path, dict[str, Path]], dict[str, Any]] | None = field(default=None, repr=False)

    def argv(self, runs: dict[str, Path], out: Path) -> list[str]:
        """The command, `{run:<step>}` filled from earlier steps' run dirs, this step's run dir set."""
        args = [re.sub(r"\{run:(\w+)\}", lambda m: str(runs[m.group(1)]), a) for a in self.overrides]
        target = self.script.split() if self.script.startswith("-m ") else [str(PROJECT_ROOT / self.script)]
        return [sys.executable, *target, *args, f"hydra.run.dir={out / self.name}"]


def _train_figures(run: Path, _: dict[str, Path]) -> dict[str, Any]:
    """From the run's metrics.csv (every logged series): the last throughput figures, the device-memory peak."""
    import pandas as pd

    rows = pd.read_csv(run / "metrics.csv")

    def last(*keys: str) -> float | None:
        values = [rows[k].dropna() for k in keys if k in rows]
        return next((float(v.iloc[-1]) for v in values if len(v)), None)

    peak = [rows[k].max() for k in rows.columns if "allocated_bytes.all.peak" in k]
    return {
        "train_images_per_sec": last("train/samples_per_sec", "train/samples_per_sec_epoch"),
        "data_wait_frac": last("train/data_wait_frac_epoch", "train/data_wait_frac"),
        "peak_memory_gib": float(max(peak)) / 2**30 if peak else None,
    }


def _ddp_equals_one_device(run: Path, runs: dict[str, Path]) -> dict[str, Any]:
    """Both in float32: every validation image counted once under DDP. Another batch split may flip a near-tie,
    so up to one image's worth of accuracy may differ."""
    logged = json.loads((runs["ddp"] / "metrics.json").read_text())["final"]["val/acc"]
    predicted = json.loads((run / "metrics.json").read_text())
    if abs(logged - predicted["acc"]) > 1.5 / predicted["n"]:
        raise AssertionError(f"val/acc under DDP {logged} != {predicted['acc']} on one device for the same weights")
    return {"ddp_val_acc": logged, "one_device_acc": predicted["acc"]}


def _gpu_equals_cpu(run: Path, runs: dict[str, Path]) -> dict[str, Any]:
    import pandas as pd

    gpu, cpu = (pd.read_csv(runs[name] / "predictions.csv") for name in ("predict_gpu", "predict_cpu"))
    if list(gpu["path"]) != list(cpu["path"]):
        raise AssertionError("predict on the GPU and on the CPU did not write the same rows")
    agree = float((gpu["pred"] == cpu["pred"]).mean())
    same = gpu["pred"] == cpu["pred"]  # where the answers agree, their probabilities must too
    diff = float((gpu.loc[same, "prob"] - cpu.loc[same, "prob"]).abs().max())
    if agree < PREDICT_AGREEMENT or diff > PREDICT_TOLERANCE:
        raise AssertionError(
            f"GPU vs CPU: the same answer for {agree:.1%} of the images (at least {PREDICT_AGREEMENT:.0%}), "
            f"probabilities up to {diff:.4f} apart (tolerance {PREDICT_TOLERANCE})"
        )
    return {"same_answer": agree, "max_probability_difference": diff, "rows": len(gpu)}


def _workers_to_keep_up(run: Path, _: dict[str, Path]) -> dict[str, Any]:
    result = json.loads((run / "bench.json").read_text())
    host = sorted((r["num_workers"], r["keeps_up"]) for r in result["rows"] if r["placement"] == "host")
    return {
        "model_images_per_sec": result["model"]["images_per_sec"],
        "workers_to_keep_up": next((w for w, ok in host if ok), None),
    }


def plan(gpus: int) -> list[Step]:
    """The steps for a machine with `gpus` visible CUDA devices (DDP only with 2 or more)."""
    photo = ["data=photos", "trainer=gpu", "model.channels_last=true", f"++trainer.max_steps={PHOTO_STEPS}"]
    photo += ["trainer.max_epochs=100", "++trainer.check_val_every_n_epoch=100", "loader.num_workers=null", MEMORY]
    models = {
        "resnet50": ["model=resnet18", "model.name=resnet50"],
        "vit_s": ["model=vit_tiny", "model.name=vit_small_patch16_224"],
    }
    steps = [
        Step(
            "default_gpu",
            "train.py",
            ["trainer=gpu", "model.channels_last=true", f"++trainer.max_steps={DEFAULT_STEPS}", MEMORY],
            "the default recipe in bf16 with channels_last",
            check=_train_figures,
        ),
    ]
    for name, model in models.items():
        for compiled in (False, True):
            steps.append(
                Step(
                    f"photos_{name}" + ("_compiled" if compiled else ""),
                    "train.py",
                    [*photo, *model, f"model.compile={str(compiled).lower()}"],
                    f"224² photos, {model[-1].split('=')[1]}" + (", torch.compile" if compiled else ", eager"),
                    check=_train_figures,
                )
            )
    steps += [
        Step(
            "ddp",
            "train.py",
            ["trainer=ddp", f"trainer.devices={max(gpus, 2)}", "trainer.max_epochs=1", "model.channels_last=true"]
            + ["trainer.precision=32-true"],  # as predict's, for the comparison
            "DDP on every visible GPU, one epoch (its last val/acc is the last weights')",
            min_gpus=2,
            check=_train_figures,
        ),
        Step(
            "ddp_one_device",
            "predict.py",
            ["ckpt_path={run:ddp}/checkpoints/last.ckpt", "input={run:ddp}/split.csv", "split=val", "ema=false"],
            "the DDP run's weights on one device: the same val/acc",
            min_gpus=2,
            check=_ddp_equals_one_device,
        ),
        Step(
            "bench",
            "-m imgcls.bench",
            ["data=photos", "bench.presets=[strong]", "bench.cache=[true]", "bench.num_workers=[0,2,4,8]"]
            + ["bench.placement=[host,device]", "bench.repeats=1", "bench.compile=true"],
            "the loader against the model's rate on the device",
            check=_workers_to_keep_up,
        ),
        Step(
            "predict_gpu",
            "predict.py",
            ["ckpt_path={run:default_gpu}/checkpoints/last.ckpt", "input={run:default_gpu}/split.csv", "split=val"],
            "predict on the GPU",
        ),
        Step(
            "predict_cpu",
            "predict.py",
            ["ckpt_path={run:default_gpu}/checkpoints/last.ckpt", "input={run:default_gpu}/split.csv", "split=val"]
            + ["trainer=cpu"],
            "the same on the CPU: probabilities within tolerance",
            check=_gpu_equals_cpu,
        ),
        Step(
            "export",
            "export.py",
            ["ckpt_path={run:default_gpu}/checkpoints/last.ckpt"],
            "ONNX export, checked against PyTorch on real images",
        ),
    ]
    return steps


def describe(steps: Sequence[Step], gpus: int) -> list[str]:
    """The plan as lines: what runs, or why a step is skipped."""
    lines = []
    for i, step in enumerate(steps, 1):
        skip = f"  [skipped: needs {step.min_gpus} GPUs, {gpus} visible]" if gpus < step.min_gpus else ""
        command = " ".join([step.script, *step.overrides])
        lines.append(f"{i:2d}. {step.name}: {step.why}{skip}\n      {command}")
    return lines


def run(steps: Sequence[Step], gpus: int, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Run every step that this machine can, in order; a failed step is recorded and the others still run
    (those that need its run dir fail in turn, saying so)."""
    runs: dict[str, Path] = {}
    results = []
    for step in steps:
        if gpus < step.min_gpus:
            results.append({"step": step.name, "status": "skipped", "why": f"needs {step.min_gpus} GPUs"})
            log(f"{step.name}: skipped ({gpus} GPU visible)")
            continue
        start = time.perf_counter()
        entry: dict[str, Any] = {"step": step.name, "why": step.why}
        try:
            argv = step.argv(runs, out)
        except KeyError as exc:
            results.append({**entry, "status": "failed", "error": f"needs the run of step {exc}, which failed"})
            continue
        log(f"{step.name}: {' '.join(argv[1:])}")
        try:
            proc = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            results.append({**entry, "status": "failed", "error": f"no end after {STEP_TIMEOUT} s"})
            log(f"{step.name}: FAILED (still running after {STEP_TIMEOUT} s)")
            continue
        entry["seconds"] = round(time.perf_counter() - start, 1)
        (out / f"{step.name}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            results.append({**entry, "status": "failed", "error": f"exit {proc.returncode}: {tail[0]}"})
            log(f"{step.name}: FAILED ({tail[0]}); output in {out / (step.name + '.log')}")
            continue
        runs[step.name] = out / step.name
        try:
            figures = step.check(runs[step.name], runs) if step.check else {}
        except (AssertionError, KeyError, FileNotFoundError, ValueError) as exc:
            results.append({**entry, "status": "failed", "error": str(exc)})
            log(f"{step.name}: FAILED: {exc}")
            continue
        results.append({**entry, "status": "passed", **figures})
        log(f"{step.name}: passed in {entry['seconds']} s {figures or ''}")
    return {"steps": results, "passed": all(r["status"] != "failed" for r in results)}


def markdown(result: dict[str, Any], machine: dict[str, str]) -> str:
    """The short table for the README: one row per step with its figures."""
    head = ", ".join(f"{k} {v}" for k, v in machine.items())
    lines = [f"GPU check: {head}", "", "| step | status | s | figures |", "|---|---|---:|---|"]
    for r in result["steps"]:
        figures = {k: v for k, v in r.items() if k not in ("step", "status", "why", "seconds", "error")}
        shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
        lines.append(f"| {r['step']} | {r['status']} | {r.get('seconds', '')} | {r.get('error') or shown} |")
    return "\n".join(lines) + "\n"


def write_report(result: dict[str, Any], machine: dict[str, str], out: Path) -> tuple[Path, Path]:
    json_path, md_path = out / "gpu_check.json", out / "gpu_check.md"
    atomic_write_text(json_path, json.dumps({"machine": machine, **result}, indent=2))
    atomic_write_text(md_path, markdown(result, machine))
    return json_path, md_path
