"""Streamed shards (data/shards.py, feeding/shards.py): written from any source to a folder or an S3-compatible
object store (a real HTTP server: moto's, on 127.0.0.1), read back image for image, shared out across DDP ranks
and loader workers, and a missing bucket or folder is one line naming the key."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import FAST, compose, error_line, read_metrics, run_cli, run_main, run_task

from imgcls.feeding import object_store, shard_copy, shards
from imgcls.utils.errors import DataConfigError

BUCKET = "imgcls-shards"
FAST = tuple(o for o in FAST if not o.startswith("data.image_size"))  # the shards' own


@pytest.fixture(scope="module")
def s3_server():
    """An S3 API on 127.0.0.1 (moto's server, werkzeug HTTP), its endpoint in AWS_ENDPOINT_URL for this module."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


def _write(tree: Path, output: str, tmp: Path, *extra: str):
    return run_task(
        "shards",
        "data=folder",
        f"data.root={tree}",
        f"data.cache_dir={tmp / 'cache'}",
        "data.image_size=32",
        "data.test_fraction=0.2",
        f"output={output}",
        *extra,
        run_dir=tmp / "write",
    )


@pytest.fixture(scope="module")
def folder_shards(image_tree, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shards")
    run = _write(image_tree, str(tmp / "out"), tmp)
    return tmp, run


def _shard_module(input_dir: str, tmp: Path, *extra: str):
    import hydra

    cfg = compose(
        "train", ["data=shards", f"data.input_dir={input_dir}", f"data.cache_dir={tmp / 'chunks'}", *FAST, *extra]
    )
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)
    return hydra.utils.instantiate(cfg.data, output_dir=None)


def _raw(url: str, train: bool = True, cache_dir: Path | None = None):
    """A split's stream without augmentation (training: litdata's per-epoch shuffle, seed 0)."""
    return shards.open_split(
        url,
        lambda image, seed: image,
        train=train,
        seed=0,
        cache_dir=str(cache_dir) if cache_dir else None,
        max_cache_size="1GB",
    )


def _stored(input_dir: str, split: str) -> list[dict]:
    """Every item of a split as written (no augmentation), in shard order."""
    stream = _raw(shards.join(input_dir, split), train=False)
    return [stream[i] for i in range(len(stream))]


def _write_images(tmp: Path, images: np.ndarray, url: str, min_chunks: int) -> int:
    """`images` (N, H, W, C uint8) as a cache file, written as one split to `url`: N."""
    np.save(tmp / "cache.npy", images)
    shards.write_split(
        str(tmp / "cache.npy"), range(len(images)), np.zeros(len(images), np.int64), url, min_chunks=min_chunks
    )
    return len(images)


def _round_trip(input_dir: str, tmp: Path) -> None:
    """Each split's items are the cache's pre-processed images of split.csv's rows, in its order, with labels."""
    from imgcls.feeding.cache import CacheReader

    table = pd.read_csv(Path(tmp / "write" / "split.csv"))  # the writer's split (rows in discovery order)
    written = pd.read_csv(io.StringIO(shards.read_text(shards.join(input_dir, "split.csv"), "x")))
    meta = shards.read_meta(input_dir)
    assert meta["images"] == table["split"].value_counts().to_dict()
    (cache_file,) = (tmp / "cache").glob("*.npy")
    cache, rows = CacheReader(cache_file), {p: i for i, p in enumerate(table["path"])}  # no unreadable file here
    names = meta["spec"]["class_names"]
    for split in meta["images"]:
        items, expected = _stored(input_dir, split), written[written["split"] == split].reset_index(drop=True)
        assert sorted(expected["path"]) == sorted(table.loc[table["split"] == split, "path"])
        assert [item["index"] for item in items] == list(range(len(expected)))
        for item, (_, row) in zip(items, expected.iterrows(), strict=True):
            assert np.array_equal(item["image"], cache[rows[row["path"]]])
            assert names[int(item["target"])] == row["path"].split("/")[-2] == names[row["label"]]


def test_folder_round_trip_every_image_and_label(folder_shards):
    tmp, run = folder_shards
    _round_trip(str(tmp / "out"), tmp)
    assert "data=shards data.input_dir=" in run.log
    # shuffled once at write time: a split is not stored class by class
    labels = pd.read_csv(tmp / "out" / "split.csv").query("split == 'train'")["label"].tolist()
    assert labels != sorted(labels)


@pytest.fixture(scope="module")
def s3_shards(s3_server, image_tree, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s3-shards")
    url = f"s3://{BUCKET}/tree"
    _write(image_tree, url, tmp)
    return url, tmp


def test_s3_round_trip_every_image_and_label(s3_shards):
    url, tmp_path = s3_shards
    _round_trip(url, tmp_path)
    import boto3

    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="tree/")["Contents"]}
    assert {"tree/imgcls.json", "tree/split.csv", "tree/train/index.json"} <= keys


def test_a_missing_bucket_is_one_line_naming_the_key(s3_server, tmp_path):
    with pytest.raises(DataConfigError, match=r"^output='s3://no-such-bucket/x': the bucket does not exist"):
        shards.check_writable("s3://no-such-bucket/x", "output")
    with pytest.raises(DataConfigError, match=r"^data.input_dir='s3://no-such-bucket/x/imgcls.json': "):
        shards.read_meta("s3://no-such-bucket/x")
    proc = run_main("train.py", "data=shards", "data.input_dir=s3://no-such-bucket/x", *FAST)
    assert "data.input_dir='s3://no-such-bucket/x/imgcls.json'" in error_line(proc)


def test_an_unauthorised_key_is_one_line(s3_server):
    """moto checks credentials from now on (it knows no keys): the store refuses ours."""
    import urllib.request

    def enforce(count: bytes) -> None:
        url = f"{s3_server['AWS_ENDPOINT_URL']}/moto-api/reset-auth"
        urllib.request.urlopen(urllib.request.Request(url, count, {"Content-Type": "text/plain"}))

    enforce(b"0")
    try:
        with pytest.raises(DataConfigError, match=r"^data.input_dir='s3://.*': the access key is not known there"):
            shards.read_meta(f"s3://{BUCKET}/tree")
    finally:
        enforce(b"inf")


def test_a_folder_without_shards_is_one_line(tmp_path):
    proc = run_main("train.py", "data=shards", f"data.input_dir={tmp_path}", *FAST)
    assert (
        error_line(proc)
        == f"data.input_dir='{tmp_path}' holds no imgcls.json: write the shards with python -m imgcls.shards"
    )


@pytest.mark.parametrize("world", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_each_training_image_once_per_epoch_across_ranks_and_workers(folder_shards, world):
    """2 DDP ranks x 2 workers each (litdata's rank split, seen through each rank's own StreamingDataset): no
    image twice in an epoch, and every rank the same number of batches (what keeps DDP ranks in step). Training
    drops each worker's last incomplete batch, as the host loader drops its one (BatchNorm and a 1-image
    batch), so fewer than world x workers x batch images sit an epoch out, other ones the next epoch."""
    from litdata.utilities.env import _DistributedEnv

    tmp, _ = folder_shards
    batch, workers, epochs = 4, 2, 2
    seen: list[list[list[int]]] = [[] for _ in range(epochs)]  # per epoch, per rank
    for rank in range(world):
        dm = _shard_module(str(tmp / "out"), tmp, f"loader.batch_size={batch}", f"loader.num_workers={workers}")
        dm.setup()
        dm.train_set.distributed_env = _DistributedEnv(world_size=world, global_rank=rank, num_nodes=1)
        dm.train_set.drop_last = world > 1  # what setup sets under a DDP trainer
        loader = dm._loader(dm.train_set, "train")
        for epoch in range(epochs):
            seen[epoch].append([i for b in loader for i in b["index"].tolist()])
    n = shards.read_meta(str(tmp / "out"))["images"]["train"]
    for epoch in seen:
        flat = [i for rank in epoch for i in rank]
        assert len(flat) == len(set(flat))  # never twice
        assert len({len(rank) for rank in epoch}) == 1  # ranks in step
        assert 0 <= n - len(flat) < world * workers * batch  # each worker's last incomplete batch, at most
    assert seen[0] != seen[1]


@pytest.mark.slow
def test_trains_from_s3_and_tests(s3_server, image_tree, tmp_path):
    url = f"s3://{BUCKET}/train-run"
    _write(image_tree, url, tmp_path)
    run = run_task(
        "train",
        "data=shards",
        f"data.input_dir={url}",
        f"data.cache_dir={tmp_path / 'chunks'}",
        *FAST,
        "loader.num_workers=2",
        "data.max_cache_size=100MB",
        run_dir=tmp_path / "train",
    )
    metrics = read_metrics(run.run_dir)
    assert 0 <= metrics["test"]["test/acc"] <= 1 and "val/acc" in metrics["final"]
    assert f"Reading {url} from a local copy" in run.log  # the splits fit data.max_cache_size
    assert any((tmp_path / "chunks").glob("*/copy/train/chunk-*.bin"))


def test_pickles_for_spawned_workers(folder_shards, tmp_path):
    """loader.start_method=spawn pickles the streams into each worker (litdata's classes are made lazily)."""
    import pickle

    dm = _shard_module(str(folder_shards[0] / "out"), tmp_path)
    dm.setup()
    stream = pickle.loads(pickle.dumps(dm.train_set))
    assert len(stream) == len(dm.train_set) and stream[0]["image"].shape == dm.train_set[0]["image"].shape
    assert type(pickle.loads(pickle.dumps(dm.train_dataloader()))).__name__ == "ShardLoader"


def test_min_chunks_cuts_a_split_into_that_many(folder_shards, tmp_path):
    (cache_file,) = (folder_shards[0] / "cache").glob("*.npy")  # the image tree's 60 images
    for name, count in (("one", 1), ("six", 6)):
        shards.write_split(str(cache_file), range(60), np.zeros(60, np.int64), str(tmp_path / name), min_chunks=count)
    assert len(list((tmp_path / "one").glob("chunk-*.bin"))) == 1
    assert len(list((tmp_path / "six").glob("chunk-*.bin"))) == 6


def test_each_item_is_decoded_once_in_a_shuffled_epoch_of_a_large_chunk(tmp_path, monkeypatch):
    """litdata's default decodes windows of photo-sized items and, shuffled, decodes a window again for each item
    read from it (at 64MB chunks of 224x224 photos: 420 img/s); the stream reads one item at a time."""
    from litdata.streaming import serializers

    n = _write_images(tmp_path, np.zeros((160, 224, 224, 3), np.uint8), str(tmp_path / "big"), 1)  # 150 KB each
    calls = []
    decode = serializers.NumpySerializer.deserialize
    monkeypatch.setattr(
        serializers.NumpySerializer, "deserialize", lambda self, data: calls.append(1) or decode(self, data)
    )
    stream = _raw(str(tmp_path / "big"), cache_dir=tmp_path / "c")
    assert sorted(int(item["index"]) for item in stream) == list(range(n))
    assert len(calls) == n


def _count_whole_chunk_reads(monkeypatch, log: Path) -> None:
    """litdata opens a chunk file with `open(path, "rb")` only to read all of it (items are read through
    `open(path, "rb", 0)` or a memory map): log each such open, from forked loader workers too."""
    from litdata.streaming import item_loader

    def logged_open(path, *args, **kwargs):
        if args == ("rb",) and str(path).endswith(".bin"):
            with open(log, "a") as f:
                f.write(f"{path}\n")
        return open(path, *args, **kwargs)

    monkeypatch.setattr(item_loader, "open", logged_open, raising=False)


@pytest.mark.parametrize("store", ["s3", "folder"])
@pytest.mark.parametrize("chunks", [1, 8])
def test_workers_read_items_not_whole_chunks_epoch_after_epoch(s3_server, tmp_path, monkeypatch, store, chunks):
    """Two workers share a chunk (the one chunk, or the one their halves meet in); litdata 0.2.76 would read a
    shared downloaded chunk file whole again for every item of it (S3 fed 0.2x the folder's rate at 25 MB
    chunks), and, handed one item reader for all its epochs, fail on a folder's chunk it had closed. Over 30
    epochs with persistent workers, as training reads, every image comes once an epoch and no chunk is read
    whole."""
    log = tmp_path / "whole_reads.txt"
    url = f"s3://{BUCKET}/shared-{chunks}" if store == "s3" else str(tmp_path / "shards")
    n = _write_images(tmp_path, np.arange(200 * 8 * 8 * 3).astype(np.uint8).reshape(200, 8, 8, 3), url, chunks)
    _count_whole_chunk_reads(monkeypatch, log)
    stream = _raw(url, cache_dir=tmp_path / "c")
    loader = shards.shard_loader(stream, batch_size=64, num_workers=2, persistent_workers=True)
    for _ in range(30):  # (with litdata 0.2.76's shuffle, seed 0 first hit it at epoch 11)
        assert sorted(i for b in loader for i in b["index"].tolist()) == list(range(n))
    assert not log.exists()


def test_a_dropped_loader_stops_its_workers_cleanly(folder_shards):
    """litdata's loader and its worker iterator refer to each other; freed by the garbage collector, the
    workers were never told to stop and were killed after a 5 s join timeout each (at every run's end)."""
    import gc
    import time

    stream = _raw(str(folder_shards[0] / "out" / "train"))
    loader = shards.shard_loader(stream, batch_size=4, num_workers=2, persistent_workers=True)
    assert sum(len(b["index"]) for b in loader) == len(stream)
    workers = list(loader._iterator._workers)
    start = time.monotonic()
    del loader
    gc.collect()
    assert time.monotonic() - start < 4  # not a speed claim: a stuck stop takes 10 s (two 5 s join timeouts)
    assert not any(w.is_alive() for w in workers)


def test_a_loader_state_saved_before_streams_had_their_own_item_reader_resumes(folder_shards):
    """Checkpoints of earlier releases hold `item_loader: None` for the stream; litdata refuses a state that
    differs from the stream's own ({}), so an upgraded run could not resume them."""
    import copy

    def loader():
        stream = _raw(str(folder_shards[0] / "out" / "train"))
        return stream, shards.shard_loader(stream, batch_size=4, num_workers=0)

    stream, first = loader()
    batches = iter(first)
    head = [i for _ in range(3) for i in next(batches)["index"].tolist()]
    state = copy.deepcopy(first.state_dict())
    state["dataset"]["item_loader"] = None  # as saved before
    _, again = loader()
    again.resume(0, state)
    tail = [i for b in again for i in b["index"].tolist()]
    assert sorted(head + tail) == list(range(len(stream)))


def test_min_chunks_below_one_is_one_line(folder_shards, tmp_path):
    (cache_file,) = (folder_shards[0] / "cache").glob("*.npy")
    with pytest.raises(DataConfigError, match="min_chunks=0: a split needs at least 1 chunk"):
        shards.write_split(str(cache_file), range(60), np.zeros(60, np.int64), str(tmp_path / "x"), min_chunks=0)


def test_chunk_prefetch_advice_is_off_unless_the_user_set_it(folder_shards, monkeypatch):
    """On chunks in the page cache, litdata's per-chunk WILLNEED advice costs more than it saves (measured in the
    bench); a user's own setting wins."""
    out = str(folder_shards[0] / "out" / "train")
    for user, expected in ((None, "0"), ("1", "1")):
        if user is None:
            monkeypatch.delenv(shards.WILLNEED, raising=False)
        else:
            monkeypatch.setenv(shards.WILLNEED, user)
        _raw(out)
        assert os.environ[shards.WILLNEED] == expected


@pytest.mark.slow
@pytest.mark.parametrize(
    ("every", "kill_at"),
    [(1, 6), (2, 5)],  # 2 batches an epoch: the last checkpoint at step 5 (mid-epoch 2), or 4 (epoch 1's end)
    ids=["mid-epoch", "epoch-end"],
)
def test_killed_and_resumed_equals_the_uninterrupted_run(folder_shards, tmp_path, every, kill_at):
    """Resumed from a mid-epoch checkpoint, the streaming loader's state (Lightning keeps it) goes on at the next
    batch; from one at an epoch's end, the next epoch's order is the uninterrupted run's: SIGKILLed and resumed,
    the run ends as the run left alone (metrics, weights, rows)."""
    from test_resume import ENV, _comparable_metrics, _csv_rows, _runs, _weights

    overrides = [
        "data=shards",
        f"data.input_dir={folder_shards[0] / 'out'}",
        f"data.cache_dir={tmp_path / 'chunks'}",
        *FAST,
        "trainer.max_epochs=3",
        "loader.num_workers=2",
        "augment=strong",
        "augment.mixup={mixup_alpha:0.4,cutmix_alpha:1.0}",
        "model.ema={decay:0.9}",
        f"callbacks.last_checkpoint.every_n_train_steps={every}",
        "+callbacks.kill._target_=kill_at_step.KillAtStep",
    ]
    reference = run_task("train", *overrides, run_dir=tmp_path / "full").run_dir
    log_dir = tmp_path / "logs"
    overrides.append(f"paths.log_dir={log_dir}")
    killed = run_cli("train.py", *overrides, check=False, env={**ENV, "KILL_AT_STEP": str(kill_at)})
    assert killed.returncode == -9, killed.stderr[-2000:]
    (run_dir,) = _runs(log_dir)
    resumed = run_cli("train.py", *overrides, "ckpt_path=last", env=ENV)
    assert "Resuming" in resumed.stderr and _runs(log_dir) == [run_dir]
    assert _comparable_metrics(run_dir) == _comparable_metrics(reference)
    mine, theirs = _weights(run_dir), _weights(reference)
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert _csv_rows(run_dir) == _csv_rows(reference)


def test_persistent_workers_recycle_batch_buffers(folder_shards, tmp_path):
    """As the host loader's: workers collate into the iterating process's pool of shared buffers (batch_pool.py),
    which litdata's collate wrapper would hide from the loader's start-of-iteration hook."""
    from imgcls.feeding.collate import PooledCollate

    dm = _shard_module(str(folder_shards[0] / "out"), tmp_path, "loader.num_workers=2", "loader.batch_size=4")
    dm.setup()
    loader = dm.train_dataloader()
    collate = loader.collate_fn.collate_fn
    assert isinstance(collate, PooledCollate) and collate.pool is None
    from imgcls.feeding import batch_pool

    assert len([b["image"].shape for b in loader]) > 2
    assert collate.pool is not None and collate.pool.owner == os.getpid()
    assert batch_pool._REGISTRY[collate.pool.id][1]  # the workers' buffers arrived once, then slot numbers only


@pytest.mark.slow
def test_a_loader_made_again_starts_at_the_trainers_epoch_and_resumes_once(folder_shards, tmp_path):
    """reload_dataloaders_every_n_epochs makes the loader again at epoch k: it draws epoch k's order, not the
    first epoch's. A resumed loader ignores Lightning's later copy of the state; epochs cut short (limit_train_batches)
    restart the workers, which litdata moves to the next epoch only when their stream runs out."""
    from types import SimpleNamespace

    dm = _shard_module(str(folder_shards[0] / "out"), tmp_path, "loader.num_workers=2")
    dm.setup()
    dm.trainer = SimpleNamespace(current_epoch=3, world_size=1, limit_train_batches=1.0)
    loader = dm.train_dataloader()
    assert loader.current_epoch == 3 and loader.persistent_workers
    dm.train_start = (5, 0)  # a checkpoint at epoch 4's end: epoch 5 next
    loader = dm.train_dataloader()
    loader.load_state_dict({"current_epoch": 1})  # what Lightning would load afterwards: ignored
    assert loader.current_epoch == 5
    dm.trainer = SimpleNamespace(current_epoch=0, world_size=1, limit_train_batches=0.5)
    assert not dm.train_dataloader().persistent_workers


def test_remote_shards_that_fit_the_chunk_cache_are_read_from_a_local_copy(s3_shards, tmp_path):
    """data.local_copy=auto: copied when all splits fit data.max_cache_size, streamed when not; false streams."""
    url, _ = s3_shards
    for size, copied in (("100MB", True), ("10KB", False)):
        dm = _shard_module(url, tmp_path / size, f"data.max_cache_size={size}")
        dm.setup()
        assert all((s.input_dir.url is None) is copied for s in (dm.train_set, dm.val_set, dm.test_set))
    dm = _shard_module(url, tmp_path / "stream", "data.local_copy=false")
    dm.setup()
    assert dm.train_set.input_dir.url == shards.join(url, "train")
    dm = _shard_module(url, tmp_path / "free", "data.max_cache_size=null")  # litdata's: 75% of the free disk
    dm.setup()
    assert dm.train_set.input_dir.url is None
    with pytest.raises(DataConfigError, match=r"^data.max_cache_size=50%: use a size"):
        _shard_module(url, tmp_path / "bad", "data.max_cache_size=50%").setup()
    with pytest.raises(Exception, match=r"data.local_copy=0: use auto, true or false"):  # (hydra wraps it)
        _shard_module(url, tmp_path / "zero", "data.local_copy=0")


def test_a_local_copy_is_made_once_and_again_when_the_objects_change(s3_server, tmp_path, monkeypatch):
    """Read image for image from the copy; a second run reuses it (nothing published); shards written again under
    the same prefix, same shapes and sizes (chunks of the same names and sizes), are copied again."""
    url, copy = f"s3://{BUCKET}/copied", str(tmp_path / "copy")
    first = np.arange(40 * 8 * 8 * 3).astype(np.uint8).reshape(40, 8, 8, 3)
    _write_images(tmp_path, first, url, 4)
    stream = shards.open_split(
        url, lambda i, s: i, train=False, seed=0, cache_dir=None, max_cache_size=None, copy_dir=copy
    )
    assert stream.input_dir.url is None and stream.input_dir.path == copy
    assert all(np.array_equal(stream[i]["image"], first[i]) for i in range(40))
    publish = object_store.publish
    monkeypatch.setattr(object_store, "publish", lambda *a: pytest.fail("copied again"))
    shard_copy.local_copy(url, copy)
    monkeypatch.setattr(object_store, "publish", publish)
    _write_images(tmp_path, first[::-1].copy(), url, 4)
    stream = shards.open_split(
        url, lambda i, s: i, train=False, seed=0, cache_dir=None, max_cache_size=None, copy_dir=copy
    )
    assert all(np.array_equal(stream[i]["image"], first[39 - i]) for i in range(40))


def test_ranks_of_a_node_share_one_local_copy(s3_server, tmp_path, monkeypatch):
    """Two ranks opening the split at once: one copies, the other waits for it and reads the same copy."""
    from concurrent.futures import ThreadPoolExecutor

    url = f"s3://{BUCKET}/shared-copy"
    _write_images(tmp_path, np.zeros((20, 8, 8, 3), np.uint8), url, 2)
    published, publish = [], object_store.publish
    monkeypatch.setattr(object_store, "publish", lambda *a: published.append(1) or publish(*a))
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: shard_copy.local_copy(url, str(tmp_path / "copy")), range(2)))
    assert paths == [str(tmp_path / "copy")] * 2 and published == [1]


@pytest.mark.parametrize("posix_fast", [None, "1"], ids=["local-disk", "parallel-fs"])
def test_a_state_saved_while_streaming_resumes_from_the_local_copy(s3_server, tmp_path, monkeypatch, posix_fast):
    """The order depends on the chunks, seed and epoch, not on where they are read from (litdata would shuffle a
    folder on NFS/Lustre by windows: LITDATA_POSIX_FAST=1 makes it think /tmp is one); a state saved before states
    named their source resumes too; one of other shards, or of these before they were written again, is refused."""
    import copy

    if posix_fast:
        monkeypatch.setenv("LITDATA_POSIX_FAST", posix_fast)
    url = f"s3://{BUCKET}/resume-copy"
    n = _write_images(tmp_path, np.zeros((48, 8, 8, 3), np.uint8), url, 4)
    streamed = _raw(url, cache_dir=tmp_path / "chunks")
    first = shards.shard_loader(streamed, batch_size=4, num_workers=0)
    batches = iter(first)
    head = [i for _ in range(3) for i in next(batches)["index"].tolist()]
    state = copy.deepcopy(first.state_dict())

    def from_copy(saved):
        stream = shards.open_split(
            url, lambda i, s: i, train=True, seed=0, cache_dir=None, max_cache_size=None, copy_dir=str(tmp_path / "c")
        )
        loader = shards.shard_loader(stream, batch_size=4, num_workers=0)
        loader.resume(0, saved)
        return loader

    legacy = copy.deepcopy(state)
    del legacy["dataset"]["source"]
    for saved in (state, legacy):
        assert sorted(head + [i for b in from_copy(saved) for i in b["index"].tolist()]) == list(range(n))
    other = copy.deepcopy(state)
    other["dataset"].update(source=f"s3://{BUCKET}/another@1")
    with pytest.raises(
        DataConfigError, match=r"^data.input_dir: the checkpoint's loader state is of s3://.*/another@1"
    ):
        from_copy(other)
    _write_images(tmp_path, np.zeros((48, 8, 8, 3), np.uint8), url, 4)  # written again
    with pytest.raises(DataConfigError, match="resume with the shards it was trained on"):
        from_copy(state)


def test_a_full_disk_while_copying_is_one_line_naming_the_cache(s3_server, tmp_path, monkeypatch):
    url = f"s3://{BUCKET}/full-disk"
    _write_images(tmp_path, np.zeros((8, 8, 8, 3), np.uint8), url, 2)

    real = object_store.s3_client(None)

    class Full:  # the store answers; writing the copy fails
        def __getattr__(self, name):
            return getattr(real, name)

        def download_file(self, *args):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(object_store, "s3_client", lambda options: Full())
    with pytest.raises(DataConfigError, match=r"^data.cache_dir='.*': s3://.* could not be copied there \(No space"):
        shard_copy.local_copy(url, str(tmp_path / "copies" / "train"))
    assert [p.name for p in (tmp_path / "copies").iterdir()] == ["train.lock"]  # no staging folder left


def test_litdata_advice_repeated_for_every_worker_and_epoch_is_not_logged(caplog, tmp_path, monkeypatch):
    """(300 lines in a 3-minute bench: a wider download window, a chunk cache under 25GB, chunks read in place and
    their pre-read skipped, all set for us.) Each is logged by litdata, as the same steps show without the filter."""
    import logging

    from litdata.streaming.async_prefetch import apply_async_pre_download_floor

    _write_images(tmp_path, np.zeros((4, 8, 8, 3), np.uint8), str(tmp_path / "split"), 1)
    advice = ("The provided `max_cache_size`", "Async chunk prefetch", "StreamingDataset POSIX-fast", "POSIX-fast:")

    def logged() -> set[str]:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            assert apply_async_pre_download_floor(1, "s3://bucket/prefix") > 1
            stream = _raw(str(tmp_path / "split"))
            assert len(list(shards.shard_loader(stream, batch_size=2, num_workers=0))) == 2  # the reader's too
        return {a for a in advice for r in caplog.records if str(r.msg).startswith(a)}

    assert not logged()
    for name in shards.QUIETED:
        monkeypatch.setattr(logging.getLogger(name), "filters", [])
    assert logged() == set(advice)


@pytest.mark.slow
def test_two_ddp_processes_share_one_copy_and_step_through_half_the_split_each(s3_server, image_tree, tmp_path, capfd):
    """Real DDP (2 spawned ranks, gloo, a loader worker each) from S3: rank 0 decides to copy, the ranks share one
    copy (its file lock), litdata splits the training split between them (each steps through half of it), a
    small validation split still gives each rank a batch, and the test stage (new processes) logs beside fit's."""
    url = f"s3://{BUCKET}/ddp-run"
    _write(image_tree, url, tmp_path)
    batch = 4
    run = run_task(
        "train",
        "data=shards",
        f"data.input_dir={url}",
        f"data.cache_dir={tmp_path / 'chunks'}",
        *FAST,
        f"loader.batch_size={batch}",
        "trainer=ddp_cpu",
        "loader.num_workers=1",
        "data.max_cache_size=100MB",
        run_dir=tmp_path / "train",
    )
    assert f"Reading {url} from a local copy" in run.log
    (copy,) = (tmp_path / "chunks").glob("*/copy")
    assert sorted(p.name for p in copy.iterdir() if p.is_dir()) == ["test", "train", "val"]  # no staging left
    steps = pd.read_csv(run.run_dir / "metrics.csv")["train/loss_step"].notna().sum()
    n = shards.read_meta(url)["images"]["train"]
    assert steps == (n // 2) // batch  # a rank's half, in whole batches (the whole split would be twice as many)
    # 6 validation images: in batches of 4 litdata's whole-batch shares would leave rank 0 none (Lightning stops)
    assert "Reading the 6 val images in batches of 3, not 4" in run.log  # logged by spawned rank 0 (SpawnedLogging)
    assert "overridden `on_after_batch_transfer`" not in capfd.readouterr().err  # nor a known warning printed
    metrics = read_metrics(run.run_dir)
    assert "val/acc" in metrics["final"] and "test/acc" in metrics["test"]  # the test stage spawned again
    assert {"train/loss_step", "test/acc"} <= set(pd.read_csv(run.run_dir / "metrics.csv").columns)  # one file


def test_a_split_too_small_for_each_ddp_rank_is_read_in_smaller_batches_or_refused(tmp_path):
    """litdata gives DDP ranks whole batches: 6 validation images in batches of 4 would leave rank 0 none (Lightning
    stops). In batches of 3 each of 2 ranks reads its own, every image once (the ranks simulated in one process)."""
    from litdata.utilities.env import _DistributedEnv

    url = str(tmp_path / "val")
    _write_images(tmp_path, np.zeros((6, 8, 8, 3), np.uint8), url, 16)
    read = {}
    for size in (4, shards.rank_batch_size("val", 6, 4, 2)):
        read[size] = []
        for rank in range(2):
            stream = _raw(url, train=False)
            stream.distributed_env = _DistributedEnv(world_size=2, global_rank=rank, num_nodes=1)
            read[size].append([i for b in shards.shard_loader(stream, batch_size=size) for i in b["index"].tolist()])
    assert [len(r) for r in read[4]] == [0, 6]
    assert [len(r) for r in read[3]] == [3, 3] and sorted(read[3][0] + read[3][1]) == list(range(6))
    assert shards.rank_batch_size("test", 12, 6, 2) == 6 and shards.rank_batch_size("train", 42, 21, 2) == 21
    with pytest.raises(DataConfigError) as caught:
        shards.rank_batch_size("train", 42, 32, 2)
    assert str(caught.value) == (
        "loader.batch_size=32: the 42 training images in data.input_dir make no batch for each of 2 DDP "
        "processes: lower loader.batch_size to 21 at most, or use fewer trainer.devices"
    )
    with pytest.raises(DataConfigError, match=r"^data.input_dir: its val split has 6 images for 8 DDP processes"):
        shards.rank_batch_size("val", 6, 16, 8)
