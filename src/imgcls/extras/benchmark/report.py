"""Bench output: a rich table on the terminal, bench.json and bench.png in the run dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from imgcls.utils.io import atomic_write_bytes, write_json_atomic


def _compiled(model: dict[str, Any]) -> str:
    rate = model.get("compiled_images_per_sec")
    return f"; {rate:.0f} img/s compiled, {rate / model['images_per_sec']:.2f}x" if rate else ""


def print_table(result: dict[str, Any], console: Console | None = None) -> None:
    model = result["model"]
    table = Table(
        title=f"Loader vs model ({model['name']} trains at {model['images_per_sec']:.0f} img/s on "
        f"{model['device']}{_compiled(model)}, batch {model['batch_size']}, input {model['input']})"
    )
    for column in (
        "pipeline",
        "augment",
        "cache",
        "placement",
        "procs",
        "workers",
        "img/s",
        "per worker",
        "per proc",
        "x model",
        "efficiency",
        "keeps up?",
    ):
        table.add_column(column, justify="right" if column not in ("pipeline", "augment") else "left")
    for row in result["rows"]:
        ratio = row["images_per_sec"] / model["images_per_sec"]
        eff = f"{row['efficiency']:.0%}" if row.get("efficiency") is not None else "-"
        verdict = "[green]yes[/green]" if row["keeps_up"] else "[red]no: data-bound[/red]"
        per_process = "/".join(f"{r:.0f}" for r in row.get("per_process_images_per_sec") or [])
        table.add_row(
            row["pipeline"],
            row["augment"],
            {True: "on", False: "off"}.get(row["cache"], "-"),
            row.get("placement", "host") if row["pipeline"] == "imgcls" else "-",
            str(row.get("processes", 1)),
            str(row["num_workers"]),
            f"{row['images_per_sec']:.0f}",
            f"{row['images_per_sec_per_worker']:.0f}" if "images_per_sec_per_worker" in row else "-",
            per_process if row.get("processes", 1) > 1 else "-",
            f"{ratio:.2f}",
            eff,
            verdict,
        )
    console = console or Console(width=max(140, Console().width))
    console.print(table)
    for line in result.get("speedups", []):
        console.print(f"  {line}")


def write_json(result: dict[str, Any], out_dir: Path) -> Path:
    return write_json_atomic(out_dir / "bench.json", result)


def write_png(result: dict[str, Any], out_dir: Path) -> Path:
    """img/s vs num_workers: one line per pipeline/preset/cache, the model's rate as a horizontal line."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    series: dict[tuple, list[tuple[int, float]]] = {}
    for row in result["rows"]:
        key = (row["pipeline"], row["augment"], row["cache"], row.get("processes", 1), row.get("placement", "host"))
        series.setdefault(key, []).append((row["num_workers"], row["images_per_sec"]))
    colours: dict[tuple, str] = {}  # one colour per pipeline/preset: cache on solid, off dashed, baselines dotted
    for (pipeline, augment, cache, procs, placement), points in sorted(series.items(), key=str):
        points.sort()
        colour = colours.setdefault((pipeline, augment, procs), f"C{len(colours)}")
        label = f"{augment}, cache {'on' if cache else 'off'}" if pipeline == "imgcls" else f"baseline: {pipeline}"
        label += f", {procs} DDP processes (total)" if procs > 1 else ""
        device = placement == "device"  # one point (no workers), a star in its preset's colour
        label = f"{augment}, data.placement=device" if device else label
        label = f"{augment}, data=shards ({placement.split(':')[1]})" if placement.startswith("shards") else label
        style = ":" if pipeline != "imgcls" else "-." if placement.startswith("shards") else "-" if cache else "--"
        marker = "*" if device else "o"
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            style,
            color=colour,
            marker=marker,
            ms=12 if device else 6,
            label=label,
        )
    model = result["model"]
    ax.axhline(model["images_per_sec"], color="red", linewidth=2, label=f"model: {model['name']} ({model['device']})")
    if model.get("compiled_images_per_sec"):
        ax.axhline(model["compiled_images_per_sec"], color="red", linestyle="--", label="model, torch.compile")
    ax.set_xlabel("num_workers")
    ax.set_ylabel("images / second")
    ax.set_yscale("log")
    ax.set_xticks(sorted({row["num_workers"] for row in result["rows"]}))
    ax.set_title("Does the loader keep up with the model? (above the red line = yes)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(out_dir / "bench.png", buf.getvalue())
