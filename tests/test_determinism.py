"""Same seed, same run: `python train.py ... seed=7 trainer.deterministic=true` twice gives equal metrics, weights
and split; another seed another split; two loader workers reproduce too. On the CPU "equal" is bit-for-bit: no
float tolerance is needed. Of each pair, the first run is in-process (tests/helpers.py's `run_task`, in the
interpreter every earlier test ran in: nothing left behind there may change a run) and the second a job of one
real `python train.py -m` (its own hash seed and import order: nothing may depend on those either).

The first run on new data builds the cache / bad-image list; that pass must not touch the seeded RNGs (it once
did: a DataLoader draws its base seed from the global torch RNG), or the first run would train differently from
every later one. test_preparing_the_data_leaves_the_seeded_rngs_alone checks it.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from helpers import FAST, read_metrics, run_cli, run_task

# Wall-clock telemetry differs between any two runs by nature; everything else must be equal.
TIMING = ("samples_per_sec", "step_time", "data_wait")


FOLDER_FAST = tuple(a for a in FAST if not a.startswith("loader.num_workers="))


@pytest.fixture(scope="session")  # session: built once per worker even if its tests are not run in a row
def runs(image_tree, tmp_path_factory):
    """`runs(name)` -> the run dir. In-process: `seed7` (0 workers, builds cache_a), `workers` (seed 7, 2 workers)
    and `seed8`. `seed7_again` and `workers_again`: the same two as one real `python train.py -m
    loader.num_workers=0,2` (its first job builds its own cache_b). Each run happens once per session."""
    root = tmp_path_factory.mktemp("determinism")
    common = ("data=folder", f"data.root={image_tree}", *FOLDER_FAST, "trainer.deterministic=true")
    in_process = {
        "seed7": ("seed=7", "loader.num_workers=0"),
        "workers": ("seed=7", "loader.num_workers=2"),
        "seed8": ("seed=8", "loader.num_workers=0"),
    }
    again = {"seed7_again": root / "again" / "0", "workers_again": root / "again" / "1"}
    done = {}

    def run(name: str):
        if name in done:
            return done[name]
        if name in again:
            sweep = ("seed=7", "loader.num_workers=0,2", f"data.cache_dir={root / 'cache_b'}")
            run_cli("train.py", "-m", *common, *sweep, f"hydra.sweep.dir={root / 'again'}")
            done.update(again)
        else:
            run_task("train", *common, *in_process[name], f"data.cache_dir={root / 'cache_a'}", run_dir=root / name)
            done[name] = root / name
        return done[name]

    return run


def final(run_dir) -> dict[str, float]:
    return {k: v for k, v in read_metrics(run_dir)["final"].items() if not any(t in k for t in TIMING)}


def assert_same_run(a, b) -> None:
    assert final(a) == final(b)
    wa, wb = (
        torch.load(r / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
        for r in (a, b)
    )
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} of {len(wa)} tensors differ, first {different[0]}"


@pytest.mark.slow
def test_same_seed_same_metrics_weights_and_split(runs):
    """Each run built its own cache first (the data's first pass must leave the seeded RNGs alone)."""
    a, b = runs("seed7"), runs("seed7_again")
    assert {"train/loss", "val/loss", "val/f1"} <= set(final(a))
    assert_same_run(a, b)
    assert (a / "split.csv").read_bytes() == (b / "split.csv").read_bytes()


@pytest.mark.slow
def test_same_seed_with_two_workers(runs):
    """Each draw is seeded per item (data/dataset.py::seed_item) in whichever worker makes it: nothing may depend
    on the worker process itself (its pid, its start time)."""
    runs("seed7")  # builds cache_a first
    assert_same_run(runs("workers"), runs("workers_again"))


@pytest.mark.slow
def test_another_seed_another_split(runs):
    seven, eight = runs("seed7"), runs("seed8")
    assert (seven / "split.csv").read_bytes() != (eight / "split.csv").read_bytes()
    assert final(seven) != final(eight)


@pytest.mark.parametrize("cache", [True, False])
def test_preparing_the_data_leaves_the_seeded_rngs_alone(image_tree, tmp_path, cache):
    """What makes the first run on new data differ from the next: prepare_data runs only when the cache (or
    the bad-image list) is missing, so any random number it draws shifts everything after it."""
    from imgcls.data import FolderSource, ImageDataModule

    dm = ImageDataModule(
        FolderSource(str(image_tree)),
        root=str(image_tree),
        image_size=32,
        cache=cache,
        cache_dir=str(tmp_path / "cache"),
        loader={"batch_size": 16, "num_workers": 0},
    )
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    before = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    dm.prepare_data()
    assert random.getstate() == before[2]
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert torch.equal(torch.get_rng_state(), before[0])
