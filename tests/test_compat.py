"""The private upstream APIs in `imgcls.utils.compat` still exist and still mean what imgcls relies on.

One test per accessor, each failing with the upstream change and the accessor to update; fast and offline (one
tiny CPU fit shared by the Lightning-loop tests)."""

from __future__ import annotations

import ast
import csv
import warnings
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from imgcls.utils import compat


def _needs(owner: Any, name: str, upstream: str, accessor: str) -> None:
    """Fail loudly if `owner` (a class or an instance) no longer has `name`."""
    where = owner.__name__ if isinstance(owner, (type, ModuleType)) else type(owner).__name__
    assert hasattr(owner, name), f"{upstream} removed {where}.{name}: update imgcls.utils.compat.{accessor}"


def test_importing_compat_imports_no_upstream_library():
    """The CLI's fast path (`--help`, resume resolution) imports compat: upstream imports stay inside functions."""
    tree = ast.parse(Path(compat.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    modules = {n.module if isinstance(n, ast.ImportFrom) else n.names[0].name for n in top}
    assert modules <= {"__future__", "collections.abc", "typing"}, f"compat imports {modules} at module level"


# ---- Lightning: one tiny fit records what the loop accessors and the checkpoint accessor see ---------------
class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.saves = 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.saves += 1


def _try(accessor: Any, *args: Any) -> Any:
    """The accessor's answer, or its error as text: a broken accessor fails its own test (with the upstream
    change named), not the shared fit."""
    try:
        return accessor(*args)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


class _Record(Callback):
    """What the accessors answer where ResumeState reads the position: in a step checkpoint (batch end) and in
    the epoch-end one."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, Any, Any]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        done, last = _try(compat.batches_done, trainer), _try(compat.epoch_last_batch_reached, trainer)
        self.seen.append(("batch", trainer.current_epoch, done, last))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seen.append(("end", trainer.current_epoch, _try(compat.batches_done, trainer), None))


class _SaveTwiceAtEpochEnd(ModelCheckpoint):
    """Saves only through `save_checkpoint_now`, twice per epoch end: the second must be skipped."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.errors: list[str] = []

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_validation_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.errors += [e for e in (_try(compat.save_checkpoint_now, self, trainer) for _ in range(2)) if e]


@pytest.fixture(scope="module")
def tiny_fit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """2 epochs x 3 batches on the CPU (~0.1 s), recording what the accessors answer in the loop."""
    folder = tmp_path_factory.mktemp("compat_fit")
    record = _Record()
    saver = _SaveTwiceAtEpochEnd(dirpath=folder, filename="{epoch}-{step}", monitor=None, save_top_k=-1)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[record, saver],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module := _Tiny(), DataLoader(TensorDataset(torch.zeros(6, 2)), batch_size=2))
    files = sorted(p.name for p in folder.glob("*.ckpt"))
    return {"trainer": trainer, "seen": record.seen, "files": files, "saves": module.saves, "errors": saver.errors}


def test_batches_done_counts_the_epochs_finished_batches(tiny_fit):
    owner = tiny_fit["trainer"]
    for name in ("fit_loop", "epoch_loop", "batch_progress", "current", "processed"):
        _needs(owner, name, "Lightning", "batches_done")
        owner = getattr(owner, name)
    done = [(kind, epoch, n) for kind, epoch, n, _ in tiny_fit["seen"]]
    expected = [
        (kind, epoch, n) for epoch in (0, 1) for kind, n in (("batch", 1), ("batch", 2), ("batch", 3), ("end", 3))
    ]
    assert done == expected, (
        "Lightning changed what fit_loop.epoch_loop.batch_progress.current.processed counts (batch_idx + 1 in "
        f"on_train_batch_end, all the epoch's batches at its end): update imgcls.utils.compat.batches_done; saw {done}"
    )


def test_epoch_last_batch_reached_only_on_the_last_batch(tiny_fit):
    _needs(
        tiny_fit["trainer"].fit_loop.epoch_loop, "_num_ready_batches_reached", "Lightning", "epoch_last_batch_reached"
    )
    last = [flag for kind, _, _, flag in tiny_fit["seen"] if kind == "batch"]
    assert last == [False, False, True] * 2, (
        "Lightning changed _TrainingEpochLoop._num_ready_batches_reached() (True in on_train_batch_end of an "
        f"epoch's last batch only): update imgcls.utils.compat.epoch_last_batch_reached; saw {last}"
    )


def test_save_checkpoint_now_saves_once_per_step(tiny_fit):
    for name in ("_should_skip_saving_checkpoint", "_monitor_candidates", "_save_topk_checkpoint"):
        _needs(ModelCheckpoint, name, "Lightning", "save_checkpoint_now")
    saw = (tiny_fit["files"], tiny_fit["saves"], tiny_fit["errors"])
    assert saw == (["epoch=0-step=3.ckpt", "epoch=1-step=6.ckpt"], 2, []), (
        "Lightning changed ModelCheckpoint's _should_skip_saving_checkpoint / _monitor_candidates / "
        "_save_topk_checkpoint (a file named from the epoch and step, the second call at the same step skipped): "
        f"update imgcls.utils.compat.save_checkpoint_now; saw files, saves, errors {saw}"
    )


def test_wandb_logger_offline_reads_the_constructor_argument(tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    for offline in (True, False):
        logger = WandbLogger(offline=offline, save_dir=str(tmp_path), project="compat")  # no run starts here
        _needs(logger, "_offline", "Lightning", "wandb_logger_offline")
        assert compat.wandb_logger_offline(logger) is offline, (
            "Lightning changed WandbLogger._offline (the offline= argument): update "
            "imgcls.utils.compat.wandb_logger_offline"
        )


def test_csv_writer_and_header_continue_an_existing_file(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(save_dir=str(tmp_path), name="run", version=0)
    _needs(logger, "_experiment", "Lightning", "csv_writer")
    assert compat.csv_writer(logger) is None, (
        "Lightning's CSVLogger._experiment is no longer None before `experiment` is first read: update "
        "imgcls.utils.compat.csv_writer"
    )
    writer = logger.experiment
    assert compat.csv_writer(logger) is writer, (
        "Lightning's CSVLogger no longer caches its writer in _experiment: update imgcls.utils.compat.csv_writer"
    )
    _needs(writer, "metrics_keys", "Lightning", "set_csv_header")
    path = Path(writer.metrics_file_path)
    header = ["epoch", "old/only", "step", "train/loss"]
    path.write_text("epoch,old/only,step,train/loss\n0,7.0,2,0.5\n")  # a killed run's rows, continued
    compat.set_csv_header(writer, header)
    logger.log_metrics({"train/loss": 0.25, "epoch": 1}, step=5)
    logger.save()
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert path.read_text().splitlines()[0] == ",".join(header) and len(rows) == 2, (
        "Lightning's CSV writer no longer appends under _ExperimentWriter.metrics_keys (the header we set): "
        f"update imgcls.utils.compat.set_csv_header; file now:\n{path.read_text()}"
    )
    assert rows[0]["old/only"] == "7.0" and rows[1]["train/loss"] == "0.25" and rows[1]["old/only"] == ""


def test_unrepeated_distributed_sampler_shares_are_disjoint_and_unpadded():
    try:
        shares = [list(compat.unrepeated_distributed_sampler(range(5), num_replicas=2, rank=r)) for r in (0, 1)]
    except ImportError as exc:
        raise AssertionError(
            "Lightning moved lightning.pytorch.overrides.distributed.UnrepeatedDistributedSampler: update "
            "imgcls.utils.compat.unrepeated_distributed_sampler"
        ) from exc
    assert sorted(shares[0] + shares[1]) == list(range(5)) and [len(s) for s in shares] == [3, 2], (
        "Lightning's UnrepeatedDistributedSampler now pads or repeats items: update "
        f"imgcls.utils.compat.unrepeated_distributed_sampler; shares {shares}"
    )


# ---- torch ------------------------------------------------------------------------------------------------
def test_index_sampler_is_what_dataloader_iterators_draw_from():
    assert isinstance(DataLoader.__dict__.get("_index_sampler"), property), (
        "torch removed the DataLoader._index_sampler property: update imgcls.utils.compat.index_sampler and "
        "ResumableDataLoader (imgcls.resume.loader), which overrides it"
    )
    loader = DataLoader(range(6), batch_size=2)
    assert compat.index_sampler(loader) is loader.batch_sampler
    assert compat.index_sampler(DataLoader(range(6), batch_size=None)) is not None

    class SkipFirstBatch(DataLoader):
        @property
        def _index_sampler(self) -> Any:
            return list(compat.index_sampler(self))[1:]

    batches = [b.tolist() for b in SkipFirstBatch(range(6), batch_size=2)]
    assert batches == [[2, 3], [4, 5]], (
        "torch's DataLoader iterators no longer draw indices from loader._index_sampler: update "
        f"imgcls.utils.compat.index_sampler and ResumableDataLoader (imgcls.resume.loader); saw {batches}"
    )


def test_new_shared_storage_is_in_shared_memory():
    _needs(torch.UntypedStorage, "_new_shared", "torch", "new_shared_storage")
    storage = compat.new_shared_storage(64)
    assert isinstance(storage, torch.UntypedStorage) and storage.nbytes() == 64 and storage.is_shared(), (
        "torch changed UntypedStorage._new_shared(size) (a shared-memory byte storage of that size): update "
        "imgcls.utils.compat.new_shared_storage"
    )


def test_storage_use_count_counts_the_tensors_viewing_a_buffer():
    _needs(torch._C, "_storage_Use_Count", "torch", "storage_use_count (the batch pool is off without it)")
    storage = compat.new_shared_storage(64)
    alone = compat.storage_use_count(storage)
    batch = torch.empty(0, dtype=torch.uint8).set_(storage)
    rows = batch[2:]  # a view: one more tensor on the same memory
    viewed = compat.storage_use_count(storage)
    del batch, rows
    assert (alone, viewed, compat.storage_use_count(storage)) == (1, 3, 1), (
        "torch changed torch._C._storage_Use_Count (1 for the storage alone, +1 per tensor viewing it): the batch "
        f"pool would reuse buffers still in use; update imgcls.utils.compat.storage_use_count; saw {alone}, {viewed}"
    )


def test_drop_lr_lambda_state_keeps_this_runs_lambda():
    from torch.optim.lr_scheduler import LambdaLR

    class Cosine:  # a callable object: LambdaLR saves its __dict__
        def __init__(self, total: int) -> None:
            self.total = total

        def __call__(self, step: int) -> float:
            return 1.0 - step / self.total

    def scheduler(total: int) -> LambdaLR:
        return LambdaLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), Cosine(total))

    saved = scheduler(10).state_dict()
    assert saved.get("lr_lambdas") == [{"total": 10}], (
        "torch changed LambdaLR.state_dict()['lr_lambdas'] (one __dict__ per callable-object lambda): update "
        f"imgcls.utils.compat.drop_lr_lambda_state; saw {saved.get('lr_lambdas')}"
    )
    plain = scheduler(20)
    plain.load_state_dict(dict(saved))
    assert plain.lr_lambdas[0].total == 10  # what torch does without the accessor: the old schedule's length
    kept = scheduler(20)
    compat.drop_lr_lambda_state(saved)
    kept.load_state_dict(saved)
    assert kept.lr_lambdas[0].total == 20, (
        "torch's LambdaLR.load_state_dict no longer skips None entries of 'lr_lambdas': update "
        "imgcls.utils.compat.drop_lr_lambda_state"
    )


# ---- torchmetrics -----------------------------------------------------------------------------------------
def test_restore_metric_state_continues_the_accumulation():
    from torchmetrics import MeanMetric

    done = MeanMetric()
    done.update(torch.tensor(1.0))
    done.update(torch.tensor(3.0))
    count, states = done.update_count, {k: v.clone() for k, v in done.metric_state.items()}
    _needs(done, "_update_count", "torchmetrics", "restore_metric_state")
    resumed = MeanMetric()
    compat.restore_metric_state(resumed, count, states)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchmetrics warns on compute() before any update (_update_count == 0)
        restored = float(resumed.compute())
    assert (resumed.update_count, restored) == (2, 2.0), (
        "torchmetrics changed Metric._update_count or the add_state attributes: update "
        "imgcls.utils.compat.restore_metric_state"
    )
    resumed.update(torch.tensor(5.0))
    assert float(resumed.compute()) == 3.0  # (1 + 3 + 5) / 3: the restored states go on accumulating


# ---- Hydra ------------------------------------------------------------------------------------------------
def test_register_hydra_resolvers_registers_now():
    from omegaconf import OmegaConf

    OmegaConf.clear_resolver("now")
    try:
        compat.register_hydra_resolvers()
    except ImportError as exc:
        raise AssertionError(
            "Hydra removed hydra.core.utils.setup_globals: update imgcls.utils.compat.register_hydra_resolvers"
        ) from exc
    assert OmegaConf.has_resolver("now"), (
        "Hydra's setup_globals no longer registers the `now` resolver: update "
        "imgcls.utils.compat.register_hydra_resolvers"
    )
    assert OmegaConf.create({"year": "${now:%Y}"}).year == str(datetime.now().year)


def test_job_return_value_reads_a_failed_jobs_exception_without_raising():
    from hydra.core.utils import JobReturn, JobStatus

    error = ValueError("boom")
    failed = JobReturn(status=JobStatus.FAILED, _return_value=error)
    _needs(failed, "_return_value", "Hydra", "job_return_value")
    assert compat.job_return_value(failed) is error
    with pytest.raises(ValueError):
        failed.return_value  # noqa: B018 (the public property re-raises: why compat reads the field)
    done = JobReturn(status=JobStatus.COMPLETED)
    done.return_value = 0.5
    assert compat.job_return_value(done) == 0.5, (
        "Hydra changed JobReturn._return_value (the value behind return_value): update "
        "imgcls.utils.compat.job_return_value"
    )
