"""Same seed, same run: `python train.py ... seed=7 trainer.deterministic=true` twice gives equal metrics, weights
and split; another seed another split; two loader workers reproduce too. On the CPU "equal" is bit-for-bit: no
float tolerance is needed. Of each pair, the first run is in-process (tests/helpers.py's `run_task`, in the
interpreter every earlier test ran in: nothing left behind there may change a run) and the second a fresh
`python train.py` (its own hash seed and import order: nothing may depend on those either).

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


@pytest.fixture(scope="session")  # session: built once per worker even if its tests are not run in a row
def train(image_tree, tmp_path_factory):
    """`train(name, cache, *overrides)` -> the run dir; each named run happens once per module, in-process, or
    as a real command for names ending in `_again`."""
    root = tmp_path_factory.mktemp("determinism")
    done = {}

    def run(name: str, cache: str, *overrides: str):
        if name not in done:
            args = (
                "data=folder",
                f"data.root={image_tree}",
                *FAST,
                "trainer.deterministic=true",
                f"data.cache_dir={root / cache}",
                *overrides,
            )
            if name.endswith("_again"):
                run_cli("train.py", *args, f"hydra.run.dir={root / name}")
            else:
                run_task("train", *args, run_dir=root / name)
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
def test_same_seed_same_metrics_weights_and_split(train):
    a, b = train("seed7", "cache_a", "seed=7"), train("seed7_again", "cache_b", "seed=7")
    assert {"train/loss", "val/loss", "val/f1"} <= set(final(a))
    assert_same_run(a, b)
    assert (a / "split.csv").read_bytes() == (b / "split.csv").read_bytes()


@pytest.mark.slow
def test_same_seed_with_two_workers(train):
    """Each worker reseeds its augmentation from torch.initial_seed() (feeding/workers.py::seed_worker)."""
    train("seed7", "cache_a", "seed=7")  # builds cache_a first
    assert_same_run(
        train("workers", "cache_a", "seed=8", "loader.num_workers=2"),
        train("workers_again", "cache_a", "seed=8", "loader.num_workers=2"),
    )


@pytest.mark.slow
def test_another_seed_another_split(train):
    seven = train("seed7", "cache_a", "seed=7")
    eight = train("workers", "cache_a", "seed=8", "loader.num_workers=2")
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
