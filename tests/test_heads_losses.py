"""Sub-task heads (mask x gender x age), focal loss, balanced class weights, TTA and their checkpoints."""

from __future__ import annotations

import functools
import logging
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from imgcls.models import Classifier, FocalLoss, MultiTaskHead, SingleHead, TaskLayout, balanced_weights, focal_loss
from imgcls.models.checkpoint import load_classifier

TASKS = {"mask": 3, "gender": 2, "age": 3}
SPEC = {
    "class_names": [str(i) for i in range(18)],
    "channels": 3,
    "image_size": [32, 32],
    "crop": {"mode": "none"},
    "mean": None,
    "std": None,
    "tasks": TASKS,
}
PLAIN = {k: v for k, v in SPEC.items() if k != "tasks"}
LAYOUT = TaskLayout(("mask", "gender", "age"), (3, 2, 3))


# ---- TaskLayout ------------------------------------------------------------------------------------------
def test_layout_from_spec_and_round_trip_over_all_classes():
    layout = TaskLayout.from_spec(SPEC)
    assert layout == LAYOUT and layout.num_classes == 18 and layout.num_outputs == 8
    assert TaskLayout.from_spec(PLAIN) is None and TaskLayout.from_spec({**SPEC, "tasks": None}) is None
    c = torch.arange(18)
    mask, gender, age = layout.decompose(c)
    assert mask.tolist() == (c // 6).tolist()
    assert gender.tolist() == ((c // 3) % 2).tolist()
    assert age.tolist() == (c % 3).tolist()
    assert layout.compose([mask, gender, age]).tolist() == c.tolist()


def test_layout_rejects_tasks_that_do_not_multiply_to_the_classes():
    with pytest.raises(ValueError, match="12 combined classes.*18 class_names"):
        TaskLayout.from_spec({**SPEC, "tasks": {"mask": 3, "gender": 2, "age": 2}})


def test_class_log_probs_is_a_distribution_whose_argmax_combines_task_argmaxes():
    torch.manual_seed(0)
    logits = torch.randn(64, 8) * 3
    parts = LAYOUT.split(logits)
    assert [p.shape[1] for p in parts] == [3, 2, 3]
    log_probs = LAYOUT.class_log_probs(parts)
    assert log_probs.shape == (64, 18)
    torch.testing.assert_close(log_probs.exp().sum(1), torch.ones(64))
    assert log_probs.argmax(1).tolist() == LAYOUT.compose([p.argmax(1) for p in parts]).tolist()
    # every combined class is the product of its tasks' probabilities
    per_task = [p.softmax(1) for p in parts]
    for c, (m, g, a) in enumerate(zip(*LAYOUT.decompose(torch.arange(18)))):
        expected = per_task[0][:, m] * per_task[1][:, g] * per_task[2][:, a]
        torch.testing.assert_close(log_probs[:, c].exp(), expected)


def test_marginal_of_soft_targets_and_smoothed_one_hots():
    torch.manual_seed(0)
    soft = torch.distributions.Dirichlet(torch.ones(18)).sample((5,))
    marginals = LAYOUT.marginal(soft)
    mask, gender, age = LAYOUT.decompose(torch.arange(18))
    for marg, idx, size in zip(marginals, (mask, gender, age), (3, 2, 3)):
        expected = torch.stack([soft[:, idx == k].sum(1) for k in range(size)], dim=1)
        torch.testing.assert_close(marg, expected)
    # a smoothed 18-way one-hot (what timm's Mixup makes) marginalises to the per-task smoothed one-hots
    eps, target = 0.1, torch.tensor([13])  # mask 2, gender 0, age 1
    smoothed = F.one_hot(target, 18).float() * (1 - eps) + eps / 18
    for marg, part, size in zip(LAYOUT.marginal(smoothed), LAYOUT.decompose(target), (3, 2, 3)):
        torch.testing.assert_close(marg, F.one_hot(part, size).float() * (1 - eps) + eps / size)


# ---- losses ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_focal_with_gamma_zero_is_cross_entropy(weighted, smoothing):
    torch.manual_seed(0)
    logits, target = torch.randn(16, 5), torch.randint(0, 5, (16,))
    weight = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.25]) if weighted else None
    expected = F.cross_entropy(logits, target, weight=weight, label_smoothing=smoothing)
    torch.testing.assert_close(focal_loss(logits, target, 0.0, weight, smoothing), expected)
    soft = torch.softmax(torch.randn(16, 5), dim=1)  # distribution targets (mixup)
    expected = F.cross_entropy(logits, soft, weight=weight, label_smoothing=smoothing)
    torch.testing.assert_close(focal_loss(logits, soft, 0.0, weight, smoothing), expected)


def test_focal_down_weights_easy_examples():
    logits = torch.tensor([[6.0, 0.0, 0.0], [0.0, 0.5, 0.0]])  # row 0 easy (p_t ~ 0.995), row 1 hard
    target = torch.tensor([0, 0])
    ce = F.cross_entropy(logits, target, reduction="none")
    focal = torch.stack([focal_loss(logits[i : i + 1], target[i : i + 1], gamma=2.0) for i in range(2)])
    ratio = focal / ce
    p_t = logits.softmax(1)[:, 0]
    torch.testing.assert_close(ratio, (1 - p_t) ** 2)  # exactly the focusing factor for hard targets
    assert ratio[0] < 1e-3 and ratio[1] > 0.3


def test_focal_gradient_is_finite_for_confident_predictions():
    logits = torch.tensor([[40.0, -40.0, 0.0]], requires_grad=True)
    focal_loss(logits, torch.tensor([0]), gamma=2.0, label_smoothing=0.1).backward()
    assert torch.isfinite(logits.grad).all()


def test_balanced_weights_and_absent_classes():
    torch.testing.assert_close(balanced_weights([10, 30, 20]), torch.tensor([2.0, 2 / 3, 1.0]))
    weights = balanced_weights(np.array([10, 0, 30]))  # absent class counted as 1: finite, the largest
    torch.testing.assert_close(weights, torch.tensor([40 / 30, 40 / 3, 40 / 90]))


# ---- the module with sub-task heads ----------------------------------------------------------------------
def _batch(n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g),
        "target": torch.randint(0, 18, (n,), generator=g),
        "index": torch.arange(n),
    }


def test_multi_head_outputs_one_block_per_task_and_a_finite_loss():
    model = Classifier("test_resnet", SPEC, head=MultiTaskHead)
    assert model.model.get_classifier().out_features == 8
    assert Classifier("test_resnet", SPEC).model.get_classifier().out_features == 18
    batch = model.on_after_batch_transfer(_batch(), 0)
    loss, preds, _ = model._shared_step(batch)
    assert torch.isfinite(loss) and preds.shape == (4,) and preds.max() < 18
    # the loss is the sum of the per-task cross-entropies
    parts = LAYOUT.split(model(batch["image"]))
    expected = sum(F.cross_entropy(p, t) for p, t in zip(parts, LAYOUT.decompose(batch["target"])))
    torch.testing.assert_close(loss, expected)


def test_multi_head_without_tasks_names_the_key_and_the_fix():
    with pytest.raises(ValueError, match=r"model/head=multi.*no sub-tasks.*data=mask"):
        Classifier("test_resnet", PLAIN, head=MultiTaskHead)
    # A name where a `_target_` config belongs (the pre-`_target_` style) names the group and its options.
    options = r"model/loss=<asl\|bce\|ce\|focal>"
    with pytest.raises(ValueError, match=r"model.loss='dice' is not a `_target_` config.*" + options):
        Classifier("test_resnet", SPEC, loss="dice")
    with pytest.raises(ValueError, match=r"model.class_weights='inverse'.*model/class_weights=<balanced>"):
        Classifier("test_resnet", SPEC, class_weights="inverse")


def test_multi_head_mixup_marginalises_soft_targets():
    model = Classifier(
        "test_resnet",
        SPEC,
        head=MultiTaskHead,
        loss=FocalLoss,
        label_smoothing=0.1,
        mixup={"mixup_alpha": 0.4, "cutmix_alpha": 0.0, "prob": 1.0},
    )
    batch = model.mix(model.on_after_batch_transfer(_batch(), 0))
    assert batch["soft_target"].shape == (4, 18)
    loss, _, _ = model._shared_step(batch)
    parts = LAYOUT.split(model(batch["image"]))
    expected = sum(focal_loss(p, t, 2.0) for p, t in zip(parts, LAYOUT.marginal(batch["soft_target"])))
    torch.testing.assert_close(loss, expected)


def test_multi_head_overfits_a_handful_of_images():
    torch.manual_seed(0)
    model = Classifier("test_resnet", SPEC, head=MultiTaskHead)
    batch = model.on_after_batch_transfer(_batch(8), 0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss, _, _ = model._shared_step(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    model.eval()
    with torch.no_grad():
        assert (model.predict_step(batch, 0)["probs"].argmax(1) == batch["target"]).float().mean() >= 0.75


class _Images(Dataset):
    def __init__(self, targets: torch.Tensor, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.targets = targets
        self.images = torch.randint(0, 256, (len(targets), 3, 16, 16), dtype=torch.uint8, generator=g)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "target": self.targets[i], "index": torch.tensor(i)}


class _TinyData(L.LightningDataModule):
    """18 classes with uneven counts (class c has 1 + c % 3 images); no train_class_counts()."""

    def __init__(self) -> None:
        super().__init__()
        self.targets = torch.tensor([c for c in range(18) for _ in range(1 + c % 3)])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Images(self.targets, 0), batch_size=8, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_Images(self.targets, 1), batch_size=12)

    test_dataloader = val_dataloader


class _CountingData(_TinyData):
    def train_class_counts(self) -> np.ndarray:
        return np.bincount(self.targets.numpy(), minlength=18)


def _trainer(epochs: int = 1) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A multi-head model (focal, balanced weights, mixup) fitted for 2 epochs, its trainer and a checkpoint."""
    L.seed_everything(0)
    model = Classifier(
        "test_resnet",
        SPEC,
        head=MultiTaskHead,
        loss=FocalLoss,
        class_weights=balanced_weights,
        label_smoothing=0.1,
        mixup={"mixup_alpha": 0.4, "prob": 1.0},
    )
    dm = _CountingData()
    trainer = _trainer(2)
    trainer.fit(model, datamodule=dm)
    ckpt = tmp_path_factory.mktemp("ckpt") / "multi.ckpt"
    trainer.save_checkpoint(ckpt)
    return SimpleNamespace(model=model, trainer=trainer, dm=dm, ckpt=ckpt)


@pytest.mark.parametrize("head", ["single", "multi"])
def test_fit_logs_per_task_f1_for_both_heads(fitted, head):
    if head == "multi":
        trainer = fitted.trainer
    else:
        trainer = _trainer()
        trainer.fit(Classifier("test_resnet", SPEC), datamodule=_TinyData())
    logged = trainer.callback_metrics
    for key in ("val/f1", "val/acc", "val/f1_best", "val/f1_mask", "val/f1_gender", "val/f1_age"):
        assert key in logged and 0 <= float(logged[key]) <= 1, key


def test_per_task_f1_is_the_decomposed_f1(fitted):
    from torchmetrics.functional.classification import multiclass_f1_score

    model, dm = fitted.model.eval(), fitted.dm
    (tested,) = fitted.trainer.test(model, datamodule=dm, verbose=False)
    dataset = dm.test_dataloader().dataset
    with torch.no_grad():
        batch = model.on_after_batch_transfer({"image": dataset.images.clone(), "target": dataset.targets}, 0)
        preds = model.predict_step({**batch, "index": torch.arange(len(dataset))}, 0)["probs"].argmax(1)
    for name, p, t, size in zip(LAYOUT.names, LAYOUT.decompose(preds), LAYOUT.decompose(dataset.targets), LAYOUT.sizes):
        expected = multiclass_f1_score(p, t, size, average="macro")
        assert tested[f"test/f1_{name}"] == pytest.approx(float(expected), abs=1e-5), name
    assert tested["test/f1"] == pytest.approx(float(multiclass_f1_score(preds, dataset.targets, 18)), abs=1e-5)


def test_balanced_weights_come_from_the_datamodule_per_task(fitted):
    counts = np.bincount(fitted.dm.targets.numpy(), minlength=18)  # age counts 6, 12, 18; mask 12 each...
    grid = counts.reshape(3, 2, 3)
    expected = [grid.sum((1, 2)), grid.sum((0, 2)), grid.sum((0, 1))]
    assert expected[2].tolist() == [6, 12, 18]
    for criterion, c in zip(fitted.model.head.criteria, expected):
        torch.testing.assert_close(criterion.weight, balanced_weights(c))
    assert fitted.model.head.criteria[2].weight.tolist() == pytest.approx([2.0, 1.0, 2 / 3])


def test_balanced_weights_single_head_and_missing_counts(caplog):
    model = Classifier("test_resnet", SPEC, class_weights=balanced_weights)
    model._trainer = SimpleNamespace(datamodule=_CountingData(), training=False)
    model.setup("fit")
    counts = torch.tensor([1 + c % 3 for c in range(18)], dtype=torch.float32)
    torch.testing.assert_close(model.head.criteria[0].weight, 36 / (18 * counts))
    batch = model.on_after_batch_transfer(_batch(), 0)
    loss, _, _ = model._shared_step(batch)
    expected = F.cross_entropy(model(batch["image"]), batch["target"], weight=36 / (18 * counts))
    torch.testing.assert_close(loss, expected)

    plain = Classifier("test_resnet", SPEC, class_weights=balanced_weights)
    plain._trainer = SimpleNamespace(datamodule=_TinyData(), training=False)  # no train_class_counts()
    with caplog.at_level(logging.WARNING):
        plain.setup("fit")
    assert "train_class_counts" in caplog.text and plain.head.criteria[0].weight is None


def test_validation_outputs_are_combined_classes():
    model = Classifier("test_resnet", SPEC, head=MultiTaskHead).eval()
    batch = model.on_after_batch_transfer(_batch(6), 0)
    with torch.no_grad():
        out = model.validation_step(batch, 0)
        log_probs = LAYOUT.class_log_probs(LAYOUT.split(model(batch["image"])))
    assert out["preds"].tolist() == log_probs.argmax(1).tolist()
    torch.testing.assert_close(out["conf"], log_probs.exp().max(1).values)


# ---- test-time augmentation ------------------------------------------------------------------------------
@pytest.mark.parametrize("head", [SingleHead, MultiTaskHead])
def test_hflip_tta_averages_image_and_mirror(head):
    torch.manual_seed(0)
    model = Classifier("test_resnet", SPEC, head=head).eval()
    batch = model.on_after_batch_transfer(_batch(3), 0)
    image = batch["image"]
    symmetric = torch.cat([image[..., :8], image[..., :8].flip(-1)], dim=-1)
    assert torch.equal(symmetric, symmetric.flip(-1))
    with torch.no_grad():
        plain = model.predict_step({**batch}, 0)["probs"]
        mirrored = model.predict_step({**batch, "image": image.flip(-1)}, 0)["probs"]
        plain_sym = model.predict_step({**batch, "image": symmetric}, 0)["probs"]
        model.tta = ["hflip"]
        tta = model.predict_step({**batch}, 0)["probs"]
        tta_sym = model.predict_step({**batch, "image": symmetric}, 0)["probs"]
    assert not torch.allclose(plain, mirrored)  # the model does see the flip
    torch.testing.assert_close(tta, (plain + mirrored) / 2)
    torch.testing.assert_close(tta_sym, plain_sym)
    torch.testing.assert_close(tta.sum(1), torch.ones(3))


def test_unknown_tta_lists_the_supported_ones():
    model = Classifier("test_resnet", SPEC)
    assert model.tta == []
    with pytest.raises(ValueError, match="vflip.*supported: hflip"):
        model.tta = ["hflip", "vflip"]


# ---- checkpoints -----------------------------------------------------------------------------------------
def test_multi_head_checkpoint_reloads_with_identical_predictions(fitted):
    model = fitted.model.eval()
    loaded = load_classifier(fitted.ckpt)
    assert isinstance(loaded.head, MultiTaskHead) and isinstance(loaded.head.criteria[0], FocalLoss)
    assert loaded.hparams.loss == {"_target_": "imgcls.models.losses.FocalLoss", "_partial_": True}
    assert loaded.hparams.class_weights["_target_"] == "imgcls.models.losses.balanced_weights"
    assert loaded.class_weights is not None  # rebuilt from the record (used again when training resumes)
    assert loaded.model.get_classifier().out_features == 8
    batch = model.on_after_batch_transfer(_batch(5, seed=3), 0)
    with torch.no_grad():
        expected = model.predict_step(dict(batch), 0)["probs"]
        torch.testing.assert_close(loaded.predict_step(dict(batch), 0)["probs"], expected)


def test_checkpoint_without_new_hparams_loads_with_defaults(tmp_path):
    model = Classifier("test_resnet", PLAIN).eval()
    old_keys = ("name", "data_spec", "drop_rate", "model_kwargs", "label_smoothing", "channels_last", "pretrained_path")
    torch.save(
        {"state_dict": model.state_dict(), "hyper_parameters": {k: model.hparams[k] for k in old_keys}},
        tmp_path / "old.ckpt",
    )
    loaded = load_classifier(tmp_path / "old.ckpt")
    assert isinstance(loaded.head, SingleHead) and type(loaded.head.criteria[0]).__name__ == "CrossEntropy"
    assert loaded.class_weights is None
    batch = model.on_after_batch_transfer(_batch(2), 0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch["image"]), model(batch["image"]))


def test_checkpoint_with_string_switches_loads_as_target_configs(tmp_path):
    """Checkpoints from before `_target_` heads/losses named them by string (`head: multi`, `loss: focal`)."""
    model = Classifier("test_resnet", SPEC, head=MultiTaskHead, loss=functools.partial(FocalLoss, gamma=3.0)).eval()
    old = {**model.hparams, "head": "multi", "loss": "focal", "focal_gamma": 3.0, "class_weights": "none"}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": old}, tmp_path / "v1.ckpt")
    loaded = load_classifier(tmp_path / "v1.ckpt")
    assert isinstance(loaded.head, MultiTaskHead) and loaded.class_weights is None
    assert [c.gamma for c in loaded.head.criteria] == [3.0, 3.0, 3.0]


def test_hparams_are_one_plain_record_that_rebuilds_the_model():
    """Every constructor argument is recorded once, factories as `_target_` configs (weights_only-loadable)."""
    import inspect

    model = Classifier(
        "test_resnet", SPEC, loss=functools.partial(FocalLoss, gamma=1.5), class_weights=balanced_weights
    )
    assert set(model.hparams) == set(inspect.signature(Classifier).parameters)
    assert model.hparams.loss == {"_target_": "imgcls.models.losses.FocalLoss", "_partial_": True, "gamma": 1.5}
    rebuilt = Classifier(**model.hparams)
    assert isinstance(rebuilt.head.criteria[0], FocalLoss) and rebuilt.head.criteria[0].gamma == 1.5
    assert rebuilt.class_weights is not None
