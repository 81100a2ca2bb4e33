"""Fine-tuning controls: timm's parameter groups with layer-wise lr decay, and any timm optimizer by name."""

from __future__ import annotations

import io

import hydra
import pandas as pd
import pytest
import timm
import torch
from helpers import FAST, compose, run_task

from imgcls.models.optim import parameter_groups, timm_optimizer
from imgcls.models.schedulers import warmup_cosine, warmup_plateau
from imgcls.utils.compat import drop_lr_lambda_state
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


@pytest.mark.parametrize(
    "name,shape", [("cosine", "cosine"), ("poly", "poly"), ("multistep", "steps"), ("plateau", "plateau")]
)
def test_each_schedule_is_a_group_option_with_the_shared_keys(name, shape):
    cfg = compose("train", ["model.name=test_resnet", f"model/scheduler={name}"])
    assert {"warmup_fraction", "warmup_steps", "min_lr_ratio"} <= set(cfg.model.scheduler)
    schedule = hydra.utils.instantiate(cfg.model.scheduler)(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), total_steps=10
    )
    assert schedule.lr_lambdas[0].shape == shape
    saved = schedule.state_dict()["lr_lambdas"][0]  # in every checkpoint: plain values only (weights_only loads)
    assert all(v is None or isinstance(v, (int, float, str, list, dict)) for v in saved.values()), saved
    if name == "plateau":  # watches the run's own checkpoint metric by default
        assert (schedule.monitor, schedule.lr_lambdas[0].mode) == ("val/f1", "max")


def test_list_settings_reach_the_checkpoint_as_plain_lists(image_tree, tmp_path):
    """Hydra hands nested lists over as ListConfig; in the hyper-parameters they would make every checkpoint
    refuse to load with weights_only=True (resume and predict read it so)."""
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


def _plateau(**kw):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    settings = {"total_steps": 100, "warmup_steps": 2, "patience": 1, "mode": "max", **kw}
    return optimizer, warmup_plateau(optimizer, **settings)


def test_plateau_drops_the_lr_after_patience_validations_and_resumes_its_state():
    optimizer, schedule = _plateau()
    lrs = []
    for value in (None, 0.5, 0.6, 0.6, 0.55, 0.7, 0.7, 0.7):  # validations between optimizer steps
        if value is not None:
            schedule.lr_lambdas[0].observe(value)
        optimizer.step()
        schedule.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    # warm-up (2 steps), then 0.5 and 0.6 improve; 0.6, 0.55: two without -> x0.1; 0.7 improves; 0.7, 0.7 -> x0.1
    assert lrs == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01])
    # What a resumed run does (resume/state.py): the checkpoint's lambda state, torch.save'd and loaded back,
    # with everything but the metric's history dropped, so a longer max_epochs still stretches the schedule.
    buffer = io.BytesIO()
    torch.save(schedule.state_dict(), buffer)
    state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    drop_lr_lambda_state(state)
    _, again = _plateau(total_steps=500)
    again.load_state_dict(state)
    assert again.lr_lambdas[0].observed == {"best": 0.7, "bad": 0, "reductions": 2} and again.lr_lambdas[0].total == 500
    again.lr_lambdas[0].observe(0.7)
    assert again.lr_lambdas[0].observed["bad"] == 1 and again.lr_lambdas[0](again.last_epoch) == pytest.approx(0.01)


def test_plateau_modes_and_a_wrong_mode():
    _, schedule = _plateau(mode="min", patience=0)
    for value in (1.0, 0.5, 0.6):
        schedule.lr_lambdas[0].observe(value)
    assert schedule.lr_lambdas[0].observed["reductions"] == 1  # 0.6 is worse than 0.5 when lower is better
    with pytest.raises(ConfigError, match="model.scheduler.mode='up': use min or max"):
        _plateau(mode="up")


@pytest.mark.slow
def test_plateau_is_fed_the_monitored_metric_after_each_validation(image_tree, tmp_path):
    """`model/scheduler=plateau` in a run: with an unreachable threshold every validation after the first is a
    plateau, so the lr falls 10x per epoch from the second on; the checkpoint keeps the count."""
    overrides = ("data=folder", f"data.root={image_tree}", *FAST, "trainer.max_epochs=3", "model/scheduler=plateau")
    tuned = ("model.scheduler.patience=0", "model.scheduler.threshold=100", "model.scheduler.warmup_steps=0")
    run_task("train", *overrides, *tuned, run_dir=tmp_path)
    lrs = pd.read_csv(tmp_path / "metrics.csv").dropna(subset=["lr-AdamW/pg1"])  # one row per step
    steps_per_epoch = 54 // 16
    lr = lrs.groupby(lrs["step"] // steps_per_epoch)["lr-AdamW/pg1"].agg(["first", "last"])
    top = lr["first"].iloc[0]
    assert lr.to_numpy().ravel().tolist() == pytest.approx([top, top, top, top, top / 10, top / 10])  # epoch 2
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["lr_schedulers"][0]["lr_lambdas"][0]["observed"]["reductions"] == 2


def test_layer_decay_on_a_model_without_blocks_is_warned_about(caplog):
    flat = torch.nn.Sequential(torch.nn.Linear(4, 4))  # no group_matcher, nothing timm can group
    with caplog.at_level("WARNING"):
        groups = parameter_groups(flat, lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    assert {g["lr"] for g in groups} == {1e-3}
    assert "model.layer_decay=0.75 has no effect on Sequential: timm finds no blocks" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        parameter_groups(timm.create_model("test_vit", num_classes=3), lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    assert "has no effect" not in caplog.text
