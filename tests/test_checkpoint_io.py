"""Checkpoints are written atomically: a failure mid-write leaves the previous checkpoint intact."""

from __future__ import annotations

import os

import pytest
import torch

from imgcls.resume.checkpoint_io import AtomicCheckpointIO


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    assert io.load_checkpoint(path)["epoch"] == 1

    def killed(*args, **kwargs):  # the process dies between writing the temp file and the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert io.load_checkpoint(path)["epoch"] == 1  # still the complete previous one
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left behind
    io.save_checkpoint({"epoch": 3}, path)
    assert io.load_checkpoint(path)["epoch"] == 3
