"""Fine-tuning controls: timm's parameter groups with layer-wise lr decay, and any timm optimizer by name."""

from __future__ import annotations

import hydra
import pytest
import timm
import torch
from helpers import compose

from imgcls.models.optim import parameter_groups, timm_optimizer
from imgcls.models.schedulers import warmup_cosine
from imgcls.utils.errors import ConfigError

SPEC = {"class_names": ["a", "b", "c"], "channels": 3, "image_size": [32, 32], "crop": {}, "mean": None, "std": None}


def test_layer_decay_scales_each_block_and_never_decays_norms_or_biases():
    model = timm.create_model("test_vit", num_classes=3)
    groups = parameter_groups(model, lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    lrs = sorted({g["lr"] for g in groups})
    assert lrs[-1] == pytest.approx(1e-3)  # the head learns at the full lr
    assert all(b == pytest.approx(2 * a) for a, b in zip(lrs, lrs[1:]))  # each block: 0.5x the one above
    assert len(lrs) >= 3
    for group in groups:
        if group["weight_decay"] == 0.0:
            assert all(p.ndim <= 1 or p is model.pos_embed or p is model.cls_token for p in group["params"])
        else:
            assert all(p.ndim > 1 for p in group["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))  # every parameter once


def test_without_layer_decay_one_lr_and_the_same_no_decay_rule():
    model = timm.create_model("test_resnet", num_classes=3)
    groups = parameter_groups(model, lr=1e-3, weight_decay=0.05)
    assert {g["weight_decay"] for g in groups} == {0.0, 0.05} and all("lr" not in g for g in groups)


def test_the_warmup_cosine_schedule_keeps_the_per_block_ratios():
    model = timm.create_model("test_vit", num_classes=3)
    optimizer = torch.optim.AdamW(parameter_groups(model, lr=1e-3, weight_decay=0.05, layer_decay=0.5), lr=1e-3)
    schedule = warmup_cosine(optimizer, total_steps=10, warmup_fraction=0.2)
    before = [g["lr"] / optimizer.param_groups[-1]["lr"] for g in optimizer.param_groups]
    for _ in range(4):
        optimizer.step()
        schedule.step()
    after = [g["lr"] / optimizer.param_groups[-1]["lr"] for g in optimizer.param_groups]
    assert after == pytest.approx(before) and len(set(before)) > 2


@pytest.mark.parametrize("value,message", [(0.0, "model.layer_decay=0.0 must be in"), (1.5, "must be in")])
def test_a_layer_decay_out_of_range_names_the_key(value, message):
    with pytest.raises(ConfigError, match=message):
        parameter_groups(timm.create_model("test_resnet"), lr=1e-3, weight_decay=0.0, layer_decay=value)


def test_timm_optimizers_by_name_and_a_wrong_name_lists_them():
    model = timm.create_model("test_resnet", num_classes=3)
    lamb = timm_optimizer(parameter_groups(model, 1e-3, 0.01), opt="lamb", lr=1e-3, weight_decay=0.01)
    assert type(lamb).__name__ == "Lamb"
    with pytest.raises(ConfigError, match=r"model.optimizer.opt='lamm' is not a timm optimizer: use one of .*lamb"):
        timm_optimizer(model.parameters(), opt="lamm")


def test_the_config_builds_a_timm_optimizer_with_layer_decay():
    cfg = compose(
        "train",
        [
            "model.name=test_vit",
            "++model.model_kwargs.img_size=32",
            "model.layer_decay=0.75",
            "model.optimizer._target_=imgcls.models.optim.timm_optimizer",
            "+model.optimizer.opt=lion",
            "model.optimizer.lr=1e-4",
            "model.scheduler=null",
        ],
    )
    module = hydra.utils.instantiate(cfg.model, data_spec=SPEC)
    optimizer = module.configure_optimizers()
    assert type(optimizer).__name__ == "Lion"
    lrs = sorted({g["lr"] for g in optimizer.param_groups})
    assert lrs[-1] == pytest.approx(1e-4) and lrs[-2] == pytest.approx(0.75e-4)
    assert module.hparams.layer_decay == 0.75  # recorded in the checkpoint's one hyper-parameter record


def _lrs(schedule_factory, steps=20, **kwargs) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = schedule_factory(optimizer, total_steps=steps, **kwargs)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return out


def test_poly_decays_as_its_power_after_the_warmup():
    from imgcls.models.schedulers import warmup_poly

    lrs = _lrs(warmup_poly, steps=22, warmup_steps=2, power=2.0)
    assert lrs[:2] == pytest.approx([0.5, 1.0])  # linear warm-up
    assert lrs[12] == pytest.approx(0.25)  # half-way through the decay: (1 - 0.5) ** 2
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))


def test_multistep_multiplies_by_gamma_at_each_milestone():
    from imgcls.models.schedulers import warmup_multistep

    lrs = _lrs(warmup_multistep, steps=20, warmup_steps=0, milestones=[0.5, 0.75], gamma=0.1)
    assert lrs[:10] == pytest.approx([1.0] * 10) and lrs[10:15] == pytest.approx([0.1] * 5)
    assert lrs[15:] == pytest.approx([0.01] * 5)
    with pytest.raises(ConfigError, match=r"model.scheduler.milestones=\[5\]: fractions of training"):
        _lrs(warmup_multistep, milestones=[5])


@pytest.mark.parametrize("shape", ["warmup_poly", "warmup_multistep"])
def test_each_schedule_is_picked_by_its_target_with_the_shared_keys(shape):
    cfg = compose("train", ["model.name=test_resnet", f"model.scheduler._target_=imgcls.models.schedulers.{shape}"])
    schedule = hydra.utils.instantiate(cfg.model.scheduler)(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), total_steps=10
    )
    assert schedule.lr_lambdas[0].shape == {"warmup_poly": "poly", "warmup_multistep": "steps"}[shape]
    saved = schedule.state_dict()["lr_lambdas"][0]  # in every checkpoint: plain values only (weights_only loads)
    assert all(isinstance(v, (int, float, str, list)) for v in saved.values()), saved


def test_list_settings_reach_the_checkpoint_as_plain_lists(image_tree, tmp_path):
    """Hydra hands nested lists over as ListConfig; in the hyper-parameters they would make every checkpoint
    refuse to load with weights_only=True (resume and predict read it so)."""
    from helpers import FAST, run_task

    from imgcls.models.checkpoint import read_checkpoint

    run_task(
        "train",
        "data=folder",
        f"data.root={image_tree}",
        *FAST,
        "model.scheduler._target_=imgcls.models.schedulers.warmup_multistep",
        "+model.scheduler.milestones=[0.5]",
        "+model.optimizer.betas=[0.9,0.95]",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "test=false",
        run_dir=tmp_path,
    )
    hparams = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["hyper_parameters"]
    assert hparams["scheduler"]["milestones"] == [0.5] and hparams["optimizer"]["betas"] == [0.9, 0.95]


def test_a_compile_value_that_is_neither_a_switch_nor_arguments_is_named():
    cfg = compose("train", ["model.name=test_resnet", "model.compile=fast"])
    with pytest.raises(Exception, match=r"model.compile='fast': use true, false or torch.compile's arguments"):
        hydra.utils.instantiate(cfg.model, data_spec=SPEC)
