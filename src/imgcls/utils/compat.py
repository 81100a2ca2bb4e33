"""Every private or undocumented upstream API imgcls relies on, in one place: where an upgrade breaks first.

Each accessor names the upstream object it reaches into, the versions it was checked against and why no public
API does the job; tests/test_compat.py checks each against the installed libraries and names the upstream change
when one fails. Checked against Lightning 2.4.0 (source) and 2.6.6, torch 2.14, torchmetrics 1.4.0 (source) and
1.9, Hydra 1.3. Upstream modules are imported inside the functions: importing this module stays free (the CLI's
`--help` path imports it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sized
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import lightning as L
    import torch
    from hydra.core.utils import JobReturn
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, WandbLogger
    from torch.utils.data import DataLoader, DistributedSampler
    from torchmetrics import Metric


# ---- Lightning --------------------------------------------------------------------------------------------
def epoch_last_batch_reached(trainer: L.Trainer) -> bool:
    """Whether the training batch that just ran is its epoch's last (validation and epoch-end hooks to come).

    Lightning `trainer.fit_loop.epoch_loop._num_ready_batches_reached()` (2.4-2.6): the loop's own test for
    stepping on the final batch. `LastCheckpoint` writes no step checkpoint there: written before the epoch's
    validation, it would resume as if that epoch had been validated."""
    return bool(trainer.fit_loop.epoch_loop._num_ready_batches_reached())


def batches_done(trainer: L.Trainer) -> int:
    """Training batches finished so far in the current epoch (0 at its start; Lightning restores it on resume).

    Lightning `trainer.fit_loop.epoch_loop.batch_progress.current.processed` (2.4-2.6): the loop's progress
    tracker, internal since Lightning 2.0 made the loops private. A resumed run's loader starts there."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)


def save_checkpoint_now(checkpoint: ModelCheckpoint, trainer: L.Trainer) -> None:
    """Let `checkpoint` save its (top-k) file now, unless Lightning would skip saving here: fast_dev_run, not
    fitting, the sanity check, or a file already saved at this global step.

    Lightning `ModelCheckpoint._should_skip_saving_checkpoint`, `._monitor_candidates` and
    `._save_topk_checkpoint` (2.4-2.6): the body of its own `on_train_epoch_end` without its every-n-epochs and
    validation-end conditions. No public method does this: `trainer.save_checkpoint` bypasses the callback's
    bookkeeping (the file name template, top-k, the step last saved, the loggers' `after_save_checkpoint`)."""
    if not checkpoint._should_skip_saving_checkpoint(trainer):
        checkpoint._save_topk_checkpoint(trainer, checkpoint._monitor_candidates(trainer))


def wandb_logger_offline(logger: WandbLogger) -> bool:
    """Whether the WandbLogger was created with `offline=True` (then the run ends with a `wandb sync` hint).

    Lightning `WandbLogger._offline` (2.4-2.6): the constructor argument, kept without a public property."""
    return bool(logger._offline)


def csv_writer(logger: CSVLogger) -> Any | None:
    """A Lightning CSVLogger's experiment writer if it was created already, else None (and none is created).

    Lightning `CSVLogger._experiment` (2.4-2.6): the cache behind the `experiment` property, which imgcls's
    CSVLogger overrides to keep a resumed run's rows when Lightning's writer is created."""
    return logger._experiment


def set_csv_header(writer: Any, header: list[str]) -> None:
    """Make a CSV experiment writer append under `header`: the columns of the metrics.csv it continues.

    Lightning `_ExperimentWriter.metrics_keys` (fabric's private writer class, 2.4-2.6): the columns `save()`
    appends rows with; it rewrites the file's header only when a row brings a key not among them."""
    writer.metrics_keys = list(header)


def unrepeated_distributed_sampler(
    dataset: Sized, num_replicas: int, rank: int, shuffle: bool = False
) -> DistributedSampler:
    """A distributed sampler whose shares are disjoint and unpadded: each item on exactly one rank, the shares'
    lengths differing by at most one (torch's DistributedSampler pads with repeats to even them out).

    Lightning `lightning.pytorch.overrides.distributed.UnrepeatedDistributedSampler` (2.4-2.6): what Lightning
    gives predict under DDP, in an undocumented module. Validation and test use it so that no image counts twice
    in macro-F1."""
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle)


# ---- torch ------------------------------------------------------------------------------------------------
def index_sampler(loader: DataLoader) -> Any:
    """torch's own sampler, or batch sampler, that a DataLoader's iterators draw their indices from.

    torch `DataLoader._index_sampler` (a private property, torch 2.14), which every DataLoader iterator reads from
    its loader when it is created. `ResumableDataLoader` overrides that property to skip a resumed epoch's first
    batches, and reads torch's through this."""
    from torch.utils.data import DataLoader

    return DataLoader._index_sampler.fget(loader)


def new_shared_storage(nbytes: int) -> torch.UntypedStorage:
    """An uninitialised byte storage allocated straight in shared memory, as torch's default collate does in
    workers: nothing is copied when the batch travels to the main process.

    torch `UntypedStorage._new_shared(size)` (a private classmethod, torch 2.14). The public
    `UntypedStorage(n).share_memory_()` allocates twice and copies."""
    import torch

    return torch.UntypedStorage._new_shared(nbytes)


def storage_use_count(storage: torch.UntypedStorage) -> int | None:
    """References to `storage`'s memory: 1 for the storage object itself, one more per tensor viewing it; None
    where this torch cannot tell (then the batch pool stays off).

    torch `torch._C._storage_Use_Count(storage._cdata)` (private, torch 2.14): the StorageImpl's reference count, the
    only way to see whether user code still holds a batch. The batch pool reuses a buffer only at 1."""
    import torch

    count = getattr(torch._C, "_storage_Use_Count", None)
    return None if count is None else int(count(storage._cdata))


OBSERVED = "observed"  # a lambda's attribute holding what it has seen in training (the plateau's metric history)


def drop_lr_lambda_state(scheduler_state: dict[str, Any]) -> None:
    """Make loading a LambdaLR's saved state keep this run's lambdas as built, instead of restoring the saved
    lambdas' attributes: resuming with a larger `trainer.max_epochs` then stretches the schedule. Only what a
    lambda has observed (its `OBSERVED` attribute, run state rather than configuration) is restored.

    torch `LambdaLR.state_dict()["lr_lambdas"]` (its undocumented `__dict__` layout, torch 2.14): one saved `__dict__`
    per callable-object lambda (None for plain functions); `load_state_dict` updates each lambda's `__dict__` with
    its entry and skips the entries that are None."""
    saved = scheduler_state.get("lr_lambdas")
    if isinstance(saved, list):
        scheduler_state["lr_lambdas"] = [
            {OBSERVED: entry[OBSERVED]} if isinstance(entry, dict) and OBSERVED in entry else None for entry in saved
        ]


# ---- torchmetrics -----------------------------------------------------------------------------------------
def restore_metric_state(metric: Metric, update_count: int, states: Mapping[str, Any]) -> None:
    """Put back what a metric had accumulated (read from its public `update_count` and `metric_state`), so
    `compute()` goes on from there: a mid-epoch resume's `train/*_epoch` values cover the whole epoch.

    torchmetrics `Metric._update_count` (1.4-1.9; `update_count` is read-only, and `compute()` warns while it is 0)
    and the state attributes `add_state` registers, set directly (no public setter for either)."""
    metric._update_count = int(update_count)
    for key, value in states.items():
        setattr(metric, key, value)


# ---- Hydra ------------------------------------------------------------------------------------------------
def register_hydra_resolvers() -> None:
    """Register Hydra's own resolvers (`now`, `hydra`, `python_version`) outside a Hydra run, so the run dir can
    be composed (`${now:...}`) before Hydra starts.

    Hydra `hydra.core.utils.setup_globals` (1.3, internal): what `hydra.main` calls at start-up."""
    from hydra.core.utils import setup_globals

    setup_globals()


def job_return_value(job_return: JobReturn) -> Any:
    """A finished job's return value, or the exception a failed job raised, without raising it.

    Hydra `JobReturn._return_value` (a dataclass field, 1.3): the public `return_value` re-raises a failed
    job's exception (and prints an error line), which must not stop a sweep's summary."""
    return job_return._return_value
