"""The classifier: device-side normalisation, local weights (compiled/DDP prefixes), name errors, schedule."""

from __future__ import annotations

import pytest
import timm
import torch

from imgcls.models import Classifier, ModelConfigError, create_classifier
from imgcls.models.schedulers import warmup_cosine

SPEC = {
    "class_names": ["a", "b", "c"],
    "channels": 3,
    "image_size": [32, 32],
    "crop": {"mode": "none"},
    "mean": None,
    "std": None,
}


def test_normalisation_on_device_equals_cpu_reference():
    model = Classifier("test_resnet", SPEC)
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    cfg = timm.data.resolve_model_data_config(model.model)
    mean, std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    reference = (images.double() / 255.0 - mean) / std
    batch = model.on_after_batch_transfer({"image": images.clone(), "target": torch.zeros(2)}, 0)
    assert batch["image"].dtype == torch.float32
    torch.testing.assert_close(batch["image"].double(), reference, rtol=1e-5, atol=1e-5)


def test_data_stats_override_model_stats_and_grayscale():
    spec = {**SPEC, "channels": 1, "mean": [0.5], "std": [0.25]}
    model = Classifier("test_resnet", spec)
    out = model.normalize(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8))
    torch.testing.assert_close(out, torch.full((1, 1, 2, 2), 2.0))
    assert model.model.conv1[0].in_channels == 1


def test_channels_last_option():
    model = Classifier("test_resnet", SPEC, channels_last=True)
    out = model.normalize(torch.zeros((2, 3, 4, 4), dtype=torch.uint8))
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("prefix", ["", "_orig_mod.", "module.", "model._orig_mod."])
def test_pretrained_path_strips_prefixes_and_reinits_head(tmp_path, prefix):
    source = timm.create_model("test_resnet", num_classes=1000)
    state = {prefix + k: v for k, v in source.state_dict().items()}
    torch.save({"state_dict": state} if prefix.startswith("model.") else state, tmp_path / "w.pth")
    model = create_classifier("test_resnet", num_classes=3, pretrained_path=str(tmp_path / "w.pth"))
    torch.testing.assert_close(model.conv1[0].weight, source.conv1[0].weight)
    assert model.get_classifier().out_features == 3


@pytest.mark.slow  # torch.compile's first call imports its compiler stack: ~3 s
def test_real_torch_compile_checkpoint_loads(tmp_path):
    source = timm.create_model("test_resnet", num_classes=3)
    torch.save(torch.compile(source).state_dict(), tmp_path / "compiled.pth")  # keys start with _orig_mod.
    model = create_classifier("test_resnet", num_classes=3, pretrained_path=str(tmp_path / "compiled.pth"))
    for a, b in zip(model.state_dict().values(), source.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_pretrained_rgb_weights_adapt_to_grayscale(tmp_path):
    from timm.models import adapt_input_conv

    rgb = timm.create_model("test_resnet").state_dict()
    torch.save(rgb, tmp_path / "rgb.pth")
    model = create_classifier("test_resnet", num_classes=3, in_chans=1, pretrained_path=str(tmp_path / "rgb.pth"))
    torch.testing.assert_close(model.conv1[0].weight, adapt_input_conv(1, rgb["conv1.0.weight"]))


def test_unknown_model_name_suggests_closest():
    with pytest.raises(ModelConfigError, match=r"model.name='resnet181'.*closest timm names: .*resnet18"):
        create_classifier("resnet181", num_classes=3)


# model.pretrained=true (the Hugging Face cache or hub): tests/test_pretrained_hub.py


def test_missing_weights_file_named(tmp_path):
    with pytest.raises(ModelConfigError, match="nope.pth"):
        create_classifier("test_resnet", num_classes=3, pretrained_path=str(tmp_path / "nope.pth"))


def test_warmup_then_cosine():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, total_steps=100, warmup_fraction=0.1, min_lr_ratio=0.01)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))  # rising during warm-up
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then never rising
    assert lrs[-1] == pytest.approx(0.01, abs=2e-3)


def test_mixup_runs_on_device_batches_with_soft_targets():
    from types import SimpleNamespace

    model = Classifier("test_resnet", SPEC, mixup={"mixup_alpha": 0.4, "cutmix_alpha": 1.0, "prob": 1.0})
    batch = {"image": torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8), "target": torch.tensor([0, 1, 2, 1])}
    model._trainer = SimpleNamespace(training=False)
    assert "soft_target" not in model.on_after_batch_transfer(dict(batch), 0)  # transfer alone never mixes
    mixed = model.mix(model.on_after_batch_transfer(dict(batch), 0))  # training_step mixes (after the reseed)
    soft = mixed["soft_target"]
    assert soft.shape == (4, 3) and torch.allclose(soft.sum(1), torch.ones(4))
    assert (soft.max(1).values < 1).all()  # every target is a blend (pairs are i and B-1-i: different classes)
    loss, _, _ = model._shared_step(mixed)
    assert torch.isfinite(loss)


def test_mixup_off_by_default_and_with_zero_alphas():
    assert Classifier("test_resnet", SPEC).mixup is None
    assert Classifier("test_resnet", SPEC, mixup={"mixup_alpha": 0.0, "cutmix_alpha": 0.0}).mixup is None


@pytest.mark.slow  # dynamo + AOTAutograd trace the forward and backward: seconds
def test_model_compile_trains_and_its_checkpoint_stays_plain(image_tree, tmp_path):
    """torch.compile's arguments pass through; the aot_eager backend traces exactly what inductor would compile
    (graph capture, AOTAutograd's backward) without inductor's C++ build, ~140 s cold on 2 cores (true uses it)."""
    from helpers import FAST, run_task

    from imgcls.models.checkpoint import load_classifier

    run = run_task(
        "train",
        "data=folder",
        f"data.root={image_tree}",
        *FAST,
        "model.compile={backend: aot_eager}",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "test=false",
        run_dir=tmp_path,
    )
    assert "Compiling the network with torch.compile({'backend': 'aot_eager'})" in run.log
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert state and not any("_orig_mod" in k or k.startswith("_compiled") for k in state)
    assert load_classifier(tmp_path / "checkpoints" / "last.ckpt").hparams.compile is False  # predict runs eager
