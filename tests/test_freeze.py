"""`model.freeze_backbone_epochs`: the head trains alone first, then every layer."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from imgcls.data import FolderSource, ImageDataModule
from imgcls.models import Classifier
from imgcls.models.freeze import FreezeBackbone, backbone_parameters
from imgcls.utils.errors import ConfigError


def _fit(model: Classifier, datamodule: ImageDataModule, epochs: int, ckpt_path: str | None = None) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=epochs,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=datamodule.output_dir,
        deterministic=True,
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer


def _state(model: Classifier) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(backbone parameters, classifier parameters) by name, copied."""
    head = {id(p) for p in model.model.get_classifier().parameters()}
    params = dict(model.model.named_parameters())
    backbone = {k: v.detach().clone() for k, v in params.items() if id(v) not in head}
    return backbone, {k: v.detach().clone() for k, v in params.items() if id(v) in head}


@pytest.mark.slow
def test_the_backbone_waits_while_the_head_learns_then_both_learn(image_tree, tmp_path, caplog):
    dm = ImageDataModule(
        FolderSource(str(image_tree)),
        root=str(image_tree),
        image_size=32,
        loader={"batch_size": 8, "num_workers": 0},
        cache_dir=str(tmp_path / "cache"),
        output_dir=str(tmp_path),
    )
    model = Classifier("test_resnet", dm.spec, freeze_backbone_epochs=1)
    before_backbone, before_head = _state(model)
    buffers = {k: v.clone() for k, v in model.model.named_buffers() if v.is_floating_point()}
    with caplog.at_level("WARNING"):
        trainer = _fit(model, dm, epochs=1)
    assert "the lr warm-up" not in caplog.text  # no scheduler here: nothing to warn about
    assert any(isinstance(c, FreezeBackbone) for c in trainer.callbacks)
    frozen_backbone, frozen_head = _state(model)
    assert all(torch.equal(before_backbone[k], v) for k, v in frozen_backbone.items())  # not one step taken
    assert not all(torch.equal(before_head[k], v) for k, v in frozen_head.items())
    assert any(not torch.equal(buffers[k], v) for k, v in model.model.named_buffers() if k in buffers)  # BN adapts

    trainer.save_checkpoint(tmp_path / "epoch1.ckpt")
    _fit(model, dm, epochs=2, ckpt_path=str(tmp_path / "epoch1.ckpt"))  # epoch 1: unfrozen
    unfrozen_backbone, _ = _state(model)
    assert (
        sum(not torch.equal(frozen_backbone[k], v) for k, v in unfrozen_backbone.items()) > len(unfrozen_backbone) // 2
    )


def test_off_by_default_and_a_wrong_value_is_one_line():
    spec = {"class_names": ["a", "b"], "channels": 3, "image_size": [32, 32], "crop": {}, "mean": None, "std": None}
    assert Classifier("test_resnet", spec).freeze_epochs == 0
    with pytest.raises(ConfigError, match=r"^model.freeze_backbone_epochs=-1: a number of epochs \(0 = never frozen\)"):
        Classifier("test_resnet", spec, freeze_backbone_epochs=-1)
    with pytest.raises(ConfigError, match="has no timm classifier"):
        backbone_parameters(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_a_warmup_over_before_the_unfreeze_is_warned_about(image_tree, tmp_path, caplog):
    from functools import partial

    from imgcls.models.schedulers import warmup_cosine

    dm = ImageDataModule(
        FolderSource(str(image_tree)), root=str(image_tree), image_size=32, loader={"batch_size": 8, "num_workers": 0},
        cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path),
    )  # fmt: skip
    schedule = partial(warmup_cosine, warmup_steps=1)
    optimizer = partial(torch.optim.AdamW, lr=1e-3)
    model = Classifier("test_resnet", dm.spec, freeze_backbone_epochs=1, optimizer=optimizer, scheduler=schedule)
    with caplog.at_level("WARNING"):
        _fit(model, dm, epochs=1)
    assert "the lr warm-up (1 steps) is over before the backbone unfreezes (step 2)" in caplog.text
