"""Predictions from every DDP rank, gathered through files: each input row exactly once, in input order.

Under DDP each rank predicts its own share (Lightning gives predict an *unrepeated* distributed sampler, so no
row is padded in twice), and under `ddp_spawn` only rank 0's return value would reach the main process. So each
rank writes its `index` + `probs` to a file at the end of the predict epoch, and `gather` (called once all ranks
are done) puts the rows back in input order and checks that every row is there exactly once.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from imgcls.utils.io import atomic_write_bytes

log = logging.getLogger(__name__)


class RankPredictionWriter(BasePredictionWriter):
    """Writes `<folder>/<name>.rank<r>.pt` per rank; `gather(n)` reads them all back as (n, classes) probs."""

    def __init__(self, folder: str | Path, name: str = "predictions") -> None:
        super().__init__(write_interval="epoch")
        self.folder, self.name = Path(folder), name

    def write_on_epoch_end(self, trainer: Any, pl_module: Any, predictions: Any, batch_indices: Any) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        index = torch.cat([b["index"].cpu() for b in batches]) if batches else torch.empty(0, dtype=torch.long)
        probs = torch.cat([b["probs"].cpu().float() for b in batches]) if batches else torch.empty(0)
        buffer = io.BytesIO()
        torch.save({"index": index, "probs": probs}, buffer)
        atomic_write_bytes(self.folder / f"{self.name}.rank{trainer.global_rank}.pt", buffer.getvalue())

    def gather(self, rows: int) -> np.ndarray:
        """All ranks' rows in input order; an error if any row is missing or was predicted twice."""
        parts = [torch.load(p, weights_only=True) for p in sorted(self.folder.glob(f"{self.name}.rank*.pt"))]
        index = torch.cat([p["index"] for p in parts]).numpy() if parts else np.empty(0, int)
        if len(index) != rows or len(np.unique(index)) != rows or (rows and (index.min() < 0 or index.max() >= rows)):
            raise RuntimeError(
                f"predict produced {len(index)} rows ({len(np.unique(index))} distinct) for {rows} "
                f"inputs in {self.folder}"
            )
        probs = torch.cat([p["probs"] for p in parts]).numpy()
        if len(parts) > 1:
            log.info(f"Gathered {rows} rows predicted by {len(parts)} processes")
        ordered = np.empty_like(probs)
        ordered[index] = probs  # rows back in input order, whatever rank or batch order they came in
        for p in self.folder.glob(f"{self.name}.rank*.pt"):
            p.unlink()
        if not any(self.folder.iterdir()):
            self.folder.rmdir()
        return ordered
