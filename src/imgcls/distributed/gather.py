"""Gathers across DDP ranks of shares whose length differs per rank (unpadded validation/test shares)."""

from __future__ import annotations

import lightning as L
import torch


def gather_uneven(
    trainer: L.Trainer, pl_module: L.LightningModule, local: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """all_gather of 1-D tensors whose length differs per rank (an unpadded validation share): pad to the
    longest with index -1, gather, drop the padding. One process: the tensors themselves."""
    if getattr(trainer, "world_size", 1) == 1:
        return {k: v.cpu() for k, v in local.items()}
    n = len(local["index"])
    longest = int(pl_module.all_gather(torch.tensor([n], device=local["index"].device)).max())
    padded = {k: torch.cat([v, v.new_full((longest - n,), -1)]) for k, v in local.items()}
    gathered = {k: pl_module.all_gather(v).reshape(-1).cpu() for k, v in padded.items()}
    keep = gathered["index"] >= 0
    return {k: v[keep] for k, v in gathered.items()}
