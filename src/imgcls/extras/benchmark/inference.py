"""Inference bench (`python -m imgcls.bench bench.inference=true`): the deployable model (uint8 in, probabilities
out: deploy/model.py) as PyTorch eager, torch.compile, ONNX Runtime fp32 and dynamic int8, side by side on the
CPU: batch-1 latency (median, p90) and large-batch images/s, same threads, same inputs, round-robin repeats."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from imgcls.deploy.files import export_onnx, load_deployed
from imgcls.deploy.model import Deployable, example_input, metadata
from imgcls.deploy.quantize import quantize_onnx
from imgcls.utils import atomic_write_bytes, get_logger, write_json_atomic

log = get_logger(__name__)


def _times(run: Callable[[np.ndarray], Any], batch: np.ndarray, min_calls: int, min_seconds: float) -> list[float]:
    """Seconds per `run(batch)`, after 3 untimed calls (allocations, lazy set-up, compilation)."""
    for _ in range(3):
        run(batch)
    out: list[float] = []
    start = time.perf_counter()
    while len(out) < min_calls or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        run(batch)
        out.append(time.perf_counter() - t)
    return out


def runners(classifier: Any, work: Path, compile_settings: Any) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """name -> `probabilities(uint8 NCHW batch)` for each way of running the same model."""
    module = Deployable(classifier).eval()
    spec = classifier.hparams.data_spec
    example = example_input(spec, "nchw")
    onnx_path = export_onnx(module, example, work / "model.onnx", metadata(classifier, "bench", 1.0, "nchw"), 18)
    int8_path = quantize_onnx(onnx_path, work / "model.int8.onnx")
    threads = torch.get_num_threads()

    def torch_runner(net: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[np.ndarray], np.ndarray]:
        def run(images: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return net(torch.from_numpy(images)).numpy()

        return run

    out = {"pytorch eager": torch_runner(module)}
    if compile_settings not in (False, None):
        settings = dict(compile_settings) if isinstance(compile_settings, dict) else {}
        out["torch.compile"] = torch_runner(torch.compile(module, **settings))
    out["onnxruntime fp32"] = load_deployed(onnx_path, threads=threads).probabilities
    out["onnxruntime int8"] = load_deployed(int8_path, threads=threads).probabilities
    return out


def inference_rows(
    classifier: Any, images: np.ndarray, batch_sizes: list[int], repeats: int, min_seconds: float, compile_settings: Any
) -> dict[str, Any]:
    """Every runner at every batch size, `repeats` rounds round-robin (a slow minute hurts all alike)."""
    with tempfile.TemporaryDirectory() as work:
        run = runners(classifier, Path(work), compile_settings)
        reference = run["pytorch eager"](images[: batch_sizes[-1]])
        agree = {
            name: float((fn(images[: batch_sizes[-1]]).argmax(1) == reference.argmax(1)).mean())
            for name, fn in run.items()
        }
        times: dict[tuple[str, int], list[float]] = {}
        for round_ in range(repeats):
            for name, fn in run.items():
                for bs in batch_sizes:
                    batch = np.ascontiguousarray(images[:bs])
                    times.setdefault((name, bs), []).extend(_times(fn, batch, 5, min_seconds))
            log.info(f"Round {round_ + 1}/{repeats} done")
    rows = []
    for (name, bs), t in times.items():
        rows.append(
            {
                "runtime": name,
                "batch_size": bs,
                "median_ms": 1000 * statistics.median(t),
                "p90_ms": 1000 * float(np.percentile(t, 90)),
                "images_per_sec": bs / statistics.median(t),
                "top1_agrees_with_eager": agree[name],
            }
        )
    return {"rows": rows, "threads": torch.get_num_threads()}


def print_table(result: dict[str, Any]) -> None:
    eager = {r["batch_size"]: r["median_ms"] for r in result["rows"] if r["runtime"] == "pytorch eager"}
    table = Table(
        title=f"Inference: {result['model']} at {result['input']}, CPU, {result['threads']} threads "
        "(uint8 in, probabilities out)"
    )
    for column in ("runtime", "batch", "median ms", "p90 ms", "img/s", "x eager", "top-1 = eager"):
        table.add_column(column, justify="left" if column == "runtime" else "right", no_wrap=True)
    for r in result["rows"]:
        table.add_row(
            r["runtime"],
            str(r["batch_size"]),
            f"{r['median_ms']:.2f}",
            f"{r['p90_ms']:.2f}",
            f"{r['images_per_sec']:.1f}",
            f"{eager[r['batch_size']] / r['median_ms']:.2f}",
            f"{r['top1_agrees_with_eager']:.3f}",
        )
    Console().print(table)


def write_outputs(result: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """inference.json and inference.png (latency at the smallest batch, img/s at the largest, per runtime)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["batch_size"] for r in result["rows"]})
    names = list(dict.fromkeys(r["runtime"] for r in result["rows"]))
    pick = {(r["runtime"], r["batch_size"]): r for r in result["rows"]}
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    left.bar(names, [pick[(n, sizes[0])]["median_ms"] for n in names], color=[f"C{i}" for i in range(len(names))])
    left.set(ylabel="ms per call (median)", title=f"batch {sizes[0]} latency (lower is better)")
    right.bar(
        names, [pick[(n, sizes[-1])]["images_per_sec"] for n in names], color=[f"C{i}" for i in range(len(names))]
    )
    right.set(ylabel="images/s", title=f"batch {sizes[-1]} throughput (higher is better)")
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.suptitle(f"{result['model']} at {result['input']} on {result['threads']} CPU threads")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return write_json_atomic(out_dir / "inference.json", result), atomic_write_bytes(
        out_dir / "inference.png", buf.getvalue()
    )
