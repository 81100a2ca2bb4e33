"""RunPictures keeps the best validation epoch, counting each image once (DDP pads with repeats)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from imgcls.callbacks import RunPictures


def _epoch(cb: RunPictures, f1: float, batches: list[dict]) -> None:
    trainer = SimpleNamespace(sanity_checking=False, callback_metrics={"val/f1": torch.tensor(f1)},
                              is_global_zero=True, current_epoch=int(f1 * 10))
    module = SimpleNamespace(all_gather=lambda t: t)  # one process: gathering is the identity
    cb.on_validation_epoch_start(trainer, module)
    for i, b in enumerate(batches):
        cb.on_validation_batch_end(trainer, module, {"preds": b["preds"], "conf": b["conf"]}, b, i)
    cb.on_validation_end(trainer, module)


def _batch(index, preds):
    n = len(index)
    return {"index": torch.tensor(index), "target": torch.zeros(n, dtype=torch.long),
            "preds": torch.tensor(preds), "conf": torch.full((n,), 0.9)}


def test_keeps_best_epoch_and_drops_ddp_padding(tmp_path):
    cb = RunPictures(str(tmp_path))
    # 3 images; the sampler padded the last batch with index 0 again (as DistributedSampler does)
    _epoch(cb, 0.8, [_batch([0, 1], [0, 1]), _batch([2, 0], [1, 0])])
    _epoch(cb, 0.5, [_batch([0, 1], [1, 1]), _batch([2, 0], [1, 1])])  # worse: not kept
    assert cb._best["epoch"] == 8
    assert sorted(cb._best["index"].tolist()) == [0, 1, 2]
    assert cb._best["preds"].tolist() == [0, 1, 1]
