"""What `configure_optimizers` hands the `model.optimizer` factory, and timm's optimizers by name.

Parameter groups follow timm's fine-tuning rules: no weight decay on norms and biases, and with `model.layer_decay`
each block nearer the input learns at `layer_decay` times the lr of the block above it (timm's `--layer-decay`).
The scale is applied to each group's own lr, so any torch optimizer and scheduler (warm-up + cosine multiplies
each group's initial lr) honour it, not only timm's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from timm.optim import param_groups_layer_decay, param_groups_weight_decay

from imgcls.utils.errors import ConfigError
from imgcls.utils.logging import get_logger

log = get_logger(__name__)


def parameter_groups(
    model: torch.nn.Module, lr: float | None, weight_decay: float, layer_decay: float | None = None
) -> list[dict[str, Any]]:
    """timm's groups: decayed weights and undecayed norms/biases; with `layer_decay`, one group per block depth."""
    skip = tuple(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else ()
    if layer_decay is None:
        return param_groups_weight_decay(model, weight_decay, no_weight_decay_list=skip)
    if not 0.0 < float(layer_decay) <= 1.0:
        raise ConfigError(f"model.layer_decay={layer_decay} must be in (0, 1] (e.g. 0.75), or null for none")
    if lr is None:
        raise ConfigError("model.layer_decay scales model.optimizer.lr per block: set model.optimizer.lr")
    groups = param_groups_layer_decay(model, weight_decay, no_weight_decay_list=skip, layer_decay=float(layer_decay))
    for group in groups:
        group["lr"] = float(lr) * group.pop("lr_scale", 1.0)
    if float(layer_decay) < 1.0 and len({group["lr"] for group in groups}) == 1:  # in the run's own words
        log.warning(
            f"model.layer_decay={layer_decay} has no effect on {type(model).__name__}: timm finds no blocks in it "
            "(no group_matcher(), no pretrained_cfg classifier), so every layer learns at model.optimizer.lr; "
            "set model.layer_decay=null"
        )
    return groups


def timm_optimizer(params: Iterable[Any], opt: str = "adamw", **kwargs: Any) -> torch.optim.Optimizer:
    """Any optimizer timm knows by name (`timm.optim.list_optimizers()`: sgd, momentum, adamw, lamb, lion, ...),
    over the groups above: `model.optimizer._target_=imgcls.models.optim.timm_optimizer +model.optimizer.opt=lamb`."""
    from timm.optim import create_optimizer_v2, list_optimizers

    known = list_optimizers()
    if opt.lower().split("_")[-1] not in known:  # timm itself strips a lookahead_ prefix
        raise ConfigError(f"model.optimizer.opt='{opt}' is not a timm optimizer: use one of {', '.join(known)}")
    return create_optimizer_v2(list(params), opt=opt, **kwargs)
