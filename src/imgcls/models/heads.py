"""Heads: how the network's logits become class probabilities and a loss (`model/head=single|multi`, by `_target_`).

Multi-label data (`data_spec["multilabel"]`) gets `MultiLabelHead` in place of the single head: one sigmoid per
class, whose "log_probs" are per-class log-probabilities (they do not sum to one).

A head is an nn.Module built as `head(data_spec, loss, label_smoothing)`, with `num_outputs` (logits the network
must produce), `log_probs(logits)` (N, num_classes), `compute_loss(logits, target)` and `criteria` (its losses, each
fed with the class-count block `blocks(counts)` gives it). Combined classes made of sub-tasks (mask x gender x age)
use the index arithmetic and the multi-head probabilities of `TaskLayout`.

A class index is a mixed-radix number over the sub-tasks, the first task most significant
(`class = mask*6 + gender*3 + age` for sizes 3, 2, 3), so one layout serves labels, logits, targets and counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from imgcls.models.losses import BinaryCrossEntropy, CrossEntropy
from imgcls.utils.errors import ConfigError
from imgcls.utils.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class TaskLayout:
    """Ordered sub-tasks `names` with `sizes` classes each; their product is the number of combined classes."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.sizes) or not self.sizes or min(self.sizes) < 1:
            raise ValueError(f"sub-tasks need a name and a positive size each, got {dict(zip(self.names, self.sizes))}")

    @classmethod
    def from_spec(cls, data_spec: Mapping[str, Any]) -> TaskLayout | None:
        """`data_spec["tasks"]` (name -> size, in order) or None for data without sub-tasks."""
        tasks = data_spec.get("tasks")
        if not tasks:
            return None
        layout = cls(tuple(str(n) for n in tasks), tuple(int(s) for s in tasks.values()))
        if layout.num_classes != len(data_spec["class_names"]):
            raise ValueError(
                f"data_spec tasks {dict(tasks)} make {layout.num_classes} combined classes, "
                f"but there are {len(data_spec['class_names'])} class_names"
            )
        return layout

    @property
    def num_classes(self) -> int:
        return math.prod(self.sizes)

    @property
    def num_outputs(self) -> int:
        """Logits of the multi head: the per-task heads side by side."""
        return sum(self.sizes)

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(math.prod(self.sizes[i + 1 :]) for i in range(len(self.sizes)))

    def decompose(self, classes: torch.Tensor) -> list[torch.Tensor]:
        """Combined class indices -> one index tensor per task."""
        return [
            torch.div(classes, stride, rounding_mode="floor") % size for stride, size in zip(self.strides, self.sizes)
        ]

    def compose(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-task indices -> combined class indices (inverse of `decompose`)."""
        return sum(part * stride for part, stride in zip(parts, self.strides))

    def split(self, logits: torch.Tensor) -> list[torch.Tensor]:
        """(N, sum(sizes)) multi-head logits -> one (N, size) block per task."""
        return list(logits.split(self.sizes, dim=1))

    def class_log_probs(self, task_logits: Sequence[torch.Tensor]) -> torch.Tensor:
        """(N, num_classes) log-probabilities of the combined classes: the outer sum of per-task log-softmaxes.

        The tasks are treated as independent, so the combined argmax is the combination of per-task argmaxes.
        """
        total = torch.zeros(task_logits[0].shape[0], 1, device=task_logits[0].device)
        for logits in task_logits:
            total = (total.unsqueeze(2) + logits.float().log_softmax(dim=1).unsqueeze(1)).flatten(1)
        return total

    def marginal(self, values: torch.Tensor) -> list[torch.Tensor]:
        """(N, num_classes) soft targets or counts -> per-task (N, size): sum over the other tasks' axes."""
        grid = values.reshape(values.shape[0], *self.sizes)
        axes = range(1, len(self.sizes) + 1)
        return [grid.sum(dim=[a for a in axes if a != keep]) if len(self.sizes) > 1 else grid for keep in axes]


class SingleHead(nn.Module):
    """One N-way classifier over all (combined) classes, one loss."""

    def __init__(
        self, data_spec: Mapping[str, Any], loss: Callable[..., nn.Module], label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        self.num_outputs = len(data_spec["class_names"])
        self.criteria = nn.ModuleList([loss(label_smoothing=label_smoothing)])

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().log_softmax(dim=1)

    def compute_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Class indices (N,) or soft targets (N, C)."""
        return self.criteria[0](logits, target)

    def blocks(self, counts: torch.Tensor) -> list[torch.Tensor]:
        """(1, num_classes) counts -> one block per criterion (for class weights)."""
        return [counts]


class MultiTaskHead(nn.Module):
    """One head per sub-task of the data (mask 3, gender 2, age 3 for data=mask): the network outputs the per-task
    logits side by side, the per-task losses are summed, the combined-class probabilities multiplied."""

    def __init__(
        self, data_spec: Mapping[str, Any], loss: Callable[..., nn.Module], label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        layout = TaskLayout.from_spec(data_spec)
        if layout is None:
            raise ConfigError(
                "model/head=multi needs sub-tasks, but the data has no sub-tasks (no data_spec 'tasks'): use a "
                "dataset that defines them (e.g. data=mask) or model/head=single"
            )
        self.layout = layout
        self.num_outputs = layout.num_outputs
        self.criteria = nn.ModuleList([loss(label_smoothing=label_smoothing) for _ in layout.sizes])

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        return self.layout.class_log_probs(self.layout.split(logits))

    def compute_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Combined class indices (N,) or soft targets (N, C), split into the per-task targets."""
        parts = self.layout.decompose(target) if target.dim() == 1 else self.layout.marginal(target)
        return sum(crit(block, part) for crit, block, part in zip(self.criteria, self.layout.split(logits), parts))

    def blocks(self, counts: torch.Tensor) -> list[torch.Tensor]:
        return self.layout.marginal(counts)


def _loss_of(factory: Callable[..., nn.Module]) -> type | None:
    """The class a loss factory builds (a class, or a functools.partial of one from a `_partial_` config)."""
    target = getattr(factory, "func", factory)
    return target if isinstance(target, type) else None


class MultiLabelHead(nn.Module):
    """One independent sigmoid per class (several labels per image, or none): binary losses (`model/loss=bce|asl`).

    The default `model/loss=ce` is read as `bce` (said in the log); a single-label loss chosen on purpose (focal)
    is an error rather than silently replaced."""

    def __init__(
        self, data_spec: Mapping[str, Any], loss: Callable[..., nn.Module], label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        self.num_outputs = len(data_spec["class_names"])
        kind = _loss_of(loss)
        if kind is CrossEntropy:
            log.info("Multi-label data: training with binary cross-entropy per class (model/loss=bce)")
            loss = BinaryCrossEntropy
        elif kind is not None and not getattr(kind, "multilabel", False):
            raise ConfigError(
                f"model.loss={kind.__name__} is a single-label loss, but the data is multi-label: use model/loss=bce "
                "or model/loss=asl"
            )
        self.criteria = nn.ModuleList([loss(label_smoothing=label_smoothing)])

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.logsigmoid(logits.float())

    def compute_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(N, C) 0/1 targets, or mixed ones (mixup)."""
        return self.criteria[0](logits, target)

    def blocks(self, counts: torch.Tensor) -> list[torch.Tensor]:
        return [counts]


def build_head(
    head: Callable[..., nn.Module], data_spec: Mapping[str, Any], loss: Callable[..., nn.Module], smoothing: float
) -> nn.Module:
    """`head(data_spec, loss, smoothing)`, with the single head read as `MultiLabelHead` for multi-label data."""
    multilabel = bool(data_spec.get("multilabel"))
    target = getattr(head, "func", head)
    if multilabel and target is MultiTaskHead:
        raise ConfigError("model/head=multi is for sub-tasks of one label each; multi-label data: model/head=single")
    if multilabel and target is SingleHead:
        head = MultiLabelHead
    if not multilabel and getattr(_loss_of(loss), "multilabel", False):
        raise ConfigError(
            f"model.loss={_loss_of(loss).__name__} is a multi-label loss, but the data has one label per image: use "
            "model/loss=ce or focal (or data.task=multilabel)"
        )
    return head(data_spec, loss, smoothing)
