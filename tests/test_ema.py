"""`model.ema` (run here inside `experiment=finetune`): the weight average is validated and tested beside
the trained weights, saved in the checkpoint, and what predict uses. Exact resume with EMA on is
tests/test_resume.py (its runs all have `model.ema`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import FAST, read_metrics, run_task

from imgcls.utils.errors import ConfigError

EMA = "model.ema={decay:0.9,warmup:false}"  # 3 steps: the average is clearly not the last weights


@pytest.fixture(scope="module")
def ema_run(image_tree, tmp_path_factory):
    """The fine-tuning recipe (EMA, RandAugment + erasing, layer decay, monitor val_ema/f1), from scratch here."""
    run_dir = tmp_path_factory.mktemp("ema_run")
    recipe = ("experiment=finetune", "model.pretrained=false", "model.name=test_efficientnet")
    overrides = ("data=folder", f"data.root={image_tree}", "data.test_fraction=0.2", *FAST, *recipe, EMA)
    run_task("train", *overrides, run_dir=run_dir)
    return run_dir


@pytest.mark.slow
def test_ema_is_validated_tested_and_checkpointed_beside_the_weights(ema_run):
    config = (ema_run / ".hydra" / "config.yaml").read_text()
    assert "imgcls.data.policies.RandAugment" in config and "layer_decay: 0.75" in config  # experiment=finetune
    metrics = read_metrics(ema_run)
    assert {"val_ema/acc", "val_ema/f1", "val_ema/loss", "val_ema/f1_best", "val/f1"} <= set(metrics["final"])
    assert {"test_ema/acc", "test_ema/f1", "test/acc"} <= set(metrics["test"])
    assert metrics["best_score"] == pytest.approx(metrics["final"]["val_ema/f1"])  # the monitor chose by it
    ckpt = torch.load(ema_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    network = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    assert ckpt["state_dict_ema"].keys() == network.keys()  # keyed like the network: loadable into timm's model
    assert not all(torch.equal(network[k], v) for k, v in ckpt["state_dict_ema"].items())


@pytest.mark.slow
def test_predict_uses_the_ema_weights_and_reproduces_val_ema(ema_run, tmp_path):
    final = read_metrics(ema_run)["final"]
    probs = {}
    for ema in (True, False):
        out = tmp_path / str(ema)
        run_task(
            "predict",
            f"ckpt_path={ema_run / 'checkpoints' / 'best.ckpt'}",
            f"input={ema_run / 'split.csv'}",
            "split=val",
            f"ema={ema}",
            run_dir=out,
        )
        measured = read_metrics(out)
        assert measured["weights"] == (["ema"] if ema else ["raw"])
        assert measured["acc"] == pytest.approx(final["val_ema/acc" if ema else "val/acc"], abs=1e-6)
        probs[ema] = pd.read_csv(out / "predictions.csv")["prob"].to_numpy()
    assert not np.allclose(probs[True], probs[False])


@pytest.mark.parametrize(
    ("value", "message"),
    [("{decay:1.5}", "model.ema.decay=1.5: use a value in"), ("{decy:0.9}", "model.ema: unknown ['decy']")],
)
def test_a_wrong_ema_setting_is_named(image_tree, tmp_path, value, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        run_task("train", "data=folder", f"data.root={image_tree}", *FAST, f"model.ema={value}", run_dir=tmp_path)


def test_a_checkpoint_without_ema_starts_the_average_at_its_weights():
    """Lightning restores the weights before the callbacks: the average must start from them, not from the weights
    the model had when the callback was set up."""
    from test_model import SPEC

    from imgcls.models import Classifier
    from imgcls.models.ema import ModelEma

    model = Classifier("test_resnet", SPEC, ema=True)  # true: timm's defaults
    assert model.ema_settings == {}
    ema = ModelEma(**model.ema_settings)
    ema.setup(None, model, "fit")
    with torch.no_grad():
        for p in model.model.parameters():
            p.add_(1.0)  # the checkpoint's weights, restored
    ema.on_load_checkpoint(None, model, {})
    assert all(
        torch.equal(a, b) for a, b in zip(ema.ema.module.state_dict().values(), model.model.state_dict().values())
    )
    saved = {k: torch.zeros_like(v) for k, v in model.model.state_dict().items()}
    ema.on_load_checkpoint(None, model, {"state_dict_ema": saved})
    assert all(not v.any() for v in ema.ema.module.state_dict().values())
