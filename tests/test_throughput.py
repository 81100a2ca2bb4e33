"""Throughput telemetry: wait vs compute per interval, and one warning when data-bound."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest
import torch

from imgcls.callbacks import ThroughputMonitor, throughput

CLOCK = [0.0]  # the callback's clock in these tests: they say how long waiting and computing took


@pytest.fixture(autouse=True)
def fake_clock(monkeypatch):
    """Machine load must not change the measured fractions: the callback reads CLOCK, not the real time."""
    CLOCK[0] = 0.0
    monkeypatch.setattr(throughput, "time", SimpleNamespace(perf_counter=lambda: CLOCK[0]))


class _Logger:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.rows.append(dict(metrics))


def _trainer(logger: _Logger) -> SimpleNamespace:
    return SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
        world_size=1,
        log_every_n_steps=2,
        loggers=[logger],
        global_step=0,
        is_global_zero=True,
        current_epoch=0,
    )


def _epoch(cb: ThroughputMonitor, trainer, wait: float, busy: float, steps: int = 5) -> None:
    batch = {"image": torch.zeros(4, 1, 2, 2)}
    cb.on_train_epoch_start(trainer, None)
    for i in range(steps):
        CLOCK[0] += wait
        cb.on_train_batch_start(trainer, None, batch, i)
        CLOCK[0] += busy
        cb.on_train_batch_end(trainer, None, None, batch, i)
    cb.on_train_epoch_end(trainer, None)


def test_logs_rates_and_warns_once_when_data_bound(caplog):
    logger = _Logger()
    cb, trainer = ThroughputMonitor(warn_threshold=0.1), _trainer(logger)
    with caplog.at_level(logging.WARNING):
        _epoch(cb, trainer, wait=0.03, busy=0.001)
        _epoch(cb, trainer, wait=0.03, busy=0.001)
    intervals = [r for r in logger.rows if "train/data_wait_frac" in r]
    assert len(intervals) == 4  # 4 steps counted per epoch (the first is start-up), logged every 2
    assert all(r["train/data_wait_frac"] > 0.8 for r in intervals)
    assert all(r["train/samples_per_sec"] > 0 and r["train/step_time"] > 0.02 for r in intervals)
    assert any("train/first_batch_wait" in r for r in logger.rows)
    warnings = [r for r in caplog.records if "data-bound" in r.getMessage()]
    assert len(warnings) == 1 and "num_workers" in warnings[0].getMessage()


def test_compute_bound_does_not_warn(caplog):
    logger = _Logger()
    with caplog.at_level(logging.WARNING):
        _epoch(ThroughputMonitor(), _trainer(logger), wait=0.0, busy=0.02)
    assert not [r for r in caplog.records if "data-bound" in r.getMessage()]
    assert logger.rows[-1]["train/data_wait_frac_epoch"] < 0.1


def test_timed_loader_counts_time_blocked_in_next():
    from torch.utils.data import Dataset

    from imgcls.feeding.loaders import TimedDataLoader

    class Slow(Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> int:
            time.sleep(0.02)
            return i

    loader = TimedDataLoader(Slow(), batch_size=2)
    assert [b.tolist() for b in loader] == [[0, 1], [2, 3]]
    assert 0.07 < loader.fetch_seconds < 1.0
    list(loader)
    assert loader.fetch_seconds > 0.14  # accumulates over epochs


def test_wait_is_taken_from_the_timed_loader_when_there_is_one():
    logger = _Logger()
    trainer = _trainer(logger)
    trainer.train_dataloader = SimpleNamespace(fetch_seconds=0.0)
    cb = ThroughputMonitor()
    batch = {"image": torch.zeros(4, 1, 2, 2)}
    cb.on_train_epoch_start(trainer, None)
    for i in range(3):
        CLOCK[0] += 0.02  # a gap, but the loader says it was not waiting for data
        cb.on_train_batch_start(trainer, None, batch, i)
        cb.on_train_batch_end(trainer, None, None, batch, i)
    assert logger.rows[-1]["train/data_wait_frac"] == 0.0
