"""`python -m imgcls.gpu_check [--dry-run] [--gpus N] [--out DIR]` (`make gpu-check`): prove the GPU paths on a
GPU machine in about 5 minutes, leaving gpu_check.json and gpu_check.md (extras/gpu_check.py says what runs)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

import imgcls  # noqa: F401  (offline defaults)
from imgcls import PROJECT_ROOT
from imgcls.extras import gpu_check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imgcls.gpu_check", description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="list the steps and exit (no GPU needed)")
    parser.add_argument("--gpus", type=int, default=None, help="plan for this many GPUs (default: those visible)")
    parser.add_argument("--out", type=Path, default=None, help="run dir (default: logs/gpu_check/<time>)")
    args = parser.parse_args(argv)

    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpus = visible if args.gpus is None else args.gpus
    steps = gpu_check.plan(gpus)
    if args.dry_run:
        print(f"GPU check plan for {gpus} GPU(s): {len(steps)} steps")
        print("\n".join(gpu_check.describe(steps, gpus)))
        return 0
    if visible == 0:
        print("gpu_check: no CUDA device visible: run it on a GPU machine (--dry-run lists its steps)", file=sys.stderr)
        return 2
    out = args.out or PROJECT_ROOT / "logs" / "gpu_check" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    machine = {
        "gpu": f"{torch.cuda.get_device_name(0)} x {visible}",
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "driver": _driver(),
    }
    result = gpu_check.run(steps, gpus, out, log=print)
    json_path, md_path = gpu_check.write_report(result, machine, out)
    print(md_path.read_text())
    print(f"Wrote {json_path} and {md_path}")
    return 0 if result["passed"] else 1


def _driver() -> str:
    import subprocess

    try:
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        return subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
