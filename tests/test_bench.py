"""`python -m imgcls.bench` writes a valid bench.json and bench.png (what it measures is not asserted here).
The bench task in-process (tests/helpers.py's `run_task`); its DDP-like loaders are spawned processes."""

from __future__ import annotations

import json

import pytest
from helpers import run_task
from PIL import Image

pytestmark = pytest.mark.slow


def test_bench_writes_json_and_png(image_tree, tmp_path):
    run_task(
        "bench",
        "data=folder",
        f"data.root={image_tree}",
        "data.image_size=32",
        "model.name=test_resnet",
        "loader.batch_size=8",
        "bench.presets=[none,randaugment]",  # the composed config's own preset is strong
        "bench.num_workers=[0,1]",
        "bench.min_seconds=0.1",
        "bench.min_batches=2",
        "bench.warmup_batches=1",
        "bench.baselines=true",
        "bench.shards=[folder]",
        "bench.repeats=2",
        "bench.compile={backend:eager}",  # through torch.compile (dynamo), without inductor's minute of compiling
        run_dir=tmp_path,
    )
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["model"]["images_per_sec"] > 0 and result["model"]["name"] == "test_resnet"
    assert result["model"]["compiled_images_per_sec"] > 0
    ours = [r for r in result["rows"] if r["pipeline"] == "imgcls" and r["placement"] == "host"]
    # data.placement=device: a row for `none`; RandAugment has no device version (said in the log, no row)
    device = [r for r in result["rows"] if r.get("placement") == "device"]
    assert [(r["augment"], r["num_workers"]) for r in device] == [("none", 0)] and device[0]["images_per_sec"] > 0
    for r in result["rows"]:  # one core's share: per worker process (the main process with 0 workers)
        workers = max(1, r["num_workers"]) * r["processes"]
        assert r["images_per_sec_per_worker"] == pytest.approx(r["images_per_sec"] / workers)
    assert any(line.startswith("none, on the device: ") for line in result["speedups"])
    assert {(r["augment"], r["cache"], r["num_workers"]) for r in ours} == {
        (a, c, w) for a in ("none", "randaugment") for c in (True, False) for w in (0, 1)
    }
    ops = {(r["augment"], r["cache"]): r["ops"] for r in ours}  # each preset alone, not merged into strong
    policy = ["RandomResizedCrop", "HorizontalFlip", "RandAugment", "RandomErasing"]
    assert ops == {  # uncached rows fit each decoded image first (data/resize.py); the cache holds it fitted
        ("none", True): ["CenterCrop"],
        ("none", False): ["Fit", "CenterCrop"],
        ("randaugment", True): policy,
        ("randaugment", False): ["Fit", *policy],
    }
    # data=shards: the data written once, streamed per preset x workers through the preset's own (cached) ops
    shards = {(r["augment"], r["num_workers"]): r for r in result["rows"] if r["placement"] == "shards:folder"}
    assert set(shards) == {(a, w) for a in ("none", "randaugment") for w in (0, 1)}
    assert all(
        r["ops"] == ops[(r["augment"], True)] and r["cold_images_per_sec"] == r["runs"][0] for r in shards.values()
    )
    assert any(line.startswith("randaugment, shards:folder, 1 workers: ") for line in result["speedups"])
    assert {r["pipeline"] for r in result["rows"]} == {"imgcls", "torchvision_v1", "timm", "timm_randaugment"}
    assert any(line.startswith("randaugment, cache on , 1 workers:") for line in result["speedups"])
    for row in result["rows"]:
        assert row["images_per_sec"] > 0 and isinstance(row["keeps_up"], bool) and len(row["runs"]) == 2
    assert all(r["efficiency"] > 0 for r in ours if r["cache"])
    assert set(result["bare_images_per_sec"]) == {"none", "randaugment"}
    with Image.open(tmp_path / "bench.png") as png:
        assert png.format == "PNG" and png.size[0] > 400


def test_bench_reports_per_process_and_total_rates_under_ddp(image_tree, tmp_path):
    """The processes=2 loaders are spawned processes; the bench itself runs in this one."""
    run_task(
        "bench",
        "data=folder",
        f"data.root={image_tree}",
        "data.image_size=32",
        "model.name=test_resnet",
        "loader.batch_size=8",
        "bench.presets=[none]",
        "bench.cache=[true]",
        "bench.num_workers=[0]",
        "bench.processes=[1,2]",
        "bench.min_seconds=0.2",
        "bench.min_batches=2",
        "bench.warmup_batches=1",
        "bench.repeats=1",
        run_dir=tmp_path,
    )
    rows = {r["processes"]: r for r in json.loads((tmp_path / "bench.json").read_text())["rows"]}
    assert set(rows) == {1, 2}
    two = rows[2]
    assert len(two["per_process_images_per_sec"]) == 2 and all(r > 0 for r in two["per_process_images_per_sec"])
    assert two["images_per_sec"] == pytest.approx(sum(two["per_process_images_per_sec"]))
    assert len(rows[1]["per_process_images_per_sec"]) == 1


def test_inference_bench_times_every_runtime_side_by_side(image_tree, tmp_path):
    """bench.inference=true: the deployed graph per runtime and batch size, one table, JSON and PNG."""
    run_task(
        "bench",
        "bench.inference=true",
        "data=folder",
        f"data.root={image_tree}",
        "data.image_size=32",
        "model.name=test_resnet",
        "loader.num_workers=0",
        "bench.inference_batch_sizes=[1,4]",
        "bench.min_seconds=0.05",
        "bench.repeats=2",
        "bench.compile={backend:eager}",  # through torch.compile (dynamo), without inductor's minute of compiling
        run_dir=tmp_path,
    )
    result = json.loads((tmp_path / "inference.json").read_text())
    runtimes = ["pytorch eager", "torch.compile", "onnxruntime fp32", "onnxruntime int8"]
    assert [(r["runtime"], r["batch_size"]) for r in result["rows"]] == [(n, b) for n in runtimes for b in (1, 4)]
    for row in result["rows"]:
        assert 0 < row["median_ms"] <= row["p90_ms"] and row["images_per_sec"] > 0
        if row["runtime"] != "onnxruntime int8":  # int8 may flip a near tie; the others compute the same numbers
            assert row["top1_agrees_with_eager"] == 1.0
    assert result["model"] == "test_resnet" and result["input"] == [3, 32, 32] and result["threads"] >= 1
    assert (tmp_path / "inference.png").stat().st_size > 0
