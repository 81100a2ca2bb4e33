"""RunPictures keeps the best validation epoch, counting each image once (DDP pads with repeats)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from imgcls.callbacks import RunPictures


def _epoch(cb: RunPictures, f1: float, batches: list[dict]) -> None:
    trainer = SimpleNamespace(
        sanity_checking=False,
        callback_metrics={"val/f1": torch.tensor(f1)},
        is_global_zero=True,
        current_epoch=int(f1 * 10),
    )
    module = SimpleNamespace(all_gather=lambda t: t)  # one process: gathering is the identity
    cb.on_validation_epoch_start(trainer, module)
    for i, b in enumerate(batches):
        cb.on_validation_batch_end(trainer, module, {"preds": b["preds"], "conf": b["conf"]}, b, i)
    cb.on_validation_end(trainer, module)


def _batch(index, preds):
    n = len(index)
    return {
        "index": torch.tensor(index),
        "target": torch.zeros(n, dtype=torch.long),
        "preds": torch.tensor(preds),
        "conf": torch.full((n,), 0.9),
    }


def test_keeps_best_epoch_and_drops_ddp_padding(tmp_path):
    cb = RunPictures(str(tmp_path))
    # 3 images; the sampler padded the last batch with index 0 again (as DistributedSampler does)
    _epoch(cb, 0.8, [_batch([0, 1], [0, 1]), _batch([2, 0], [1, 0])])
    _epoch(cb, 0.5, [_batch([0, 1], [1, 1]), _batch([2, 0], [1, 1])])  # worse: not kept
    assert cb._best["epoch"] == 8
    assert sorted(cb._best["index"].tolist()) == [0, 1, 2]
    assert cb._best["preds"].tolist() == [0, 1, 1]


def test_uneven_validation_shares_are_gathered_without_padding():
    """Two ranks holding 3 and 2 images (an unpadded DDP split): the gather pads, then drops the padding."""
    from imgcls.distributed.gather import gather_uneven

    other = {"index": torch.tensor([3, 4]), "preds": torch.tensor([1, 0])}

    def all_gather(t):  # what rank 1 would contribute, padded like rank 0's tensor
        if t.numel() == 1:
            return torch.stack([t, torch.tensor([2])])
        key = "index" if t[0] == 0 else "preds"
        mine = other[key]
        return torch.stack([t, torch.cat([mine, mine.new_full((len(t) - len(mine),), -1)])])

    trainer, module = SimpleNamespace(world_size=2), SimpleNamespace(all_gather=all_gather)
    out = gather_uneven(trainer, module, {"index": torch.tensor([0, 1, 2]), "preds": torch.tensor([2, 2, 1])})
    assert out["index"].tolist() == [0, 1, 2, 3, 4] and out["preds"].tolist() == [2, 2, 1, 1, 0]


def test_best_epoch_survives_a_resume_through_the_checkpoint(tmp_path):
    """A resumed run reports the best epoch of the whole run, not the best since the resume."""
    import numpy as np
    import torch

    from imgcls.callbacks import RunPictures

    before = RunPictures(str(tmp_path))
    assert before.state_dict() == {}
    before._best_score = 0.75
    before._best = {
        "epoch": 3,
        "preds": np.array([0, 2]),
        "conf": np.array([0.9, 0.4], np.float32),
        "target": np.array([0, 1]),
        "index": np.array([5, 9]),
    }
    torch.save({"callbacks": before.state_dict()}, tmp_path / "state.pt")
    after = RunPictures(str(tmp_path))
    after.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True)["callbacks"])  # no pickled code
    assert after._best_score == 0.75 and after._best["epoch"] == 3
    for key in ("preds", "conf", "target", "index"):
        np.testing.assert_array_equal(after._best[key], before._best[key])
