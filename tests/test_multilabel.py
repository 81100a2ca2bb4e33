"""Multi-label classification (data.task=multilabel): label sets from CSVs, the stratified split, the sigmoid
model's loss and mixup, thresholds tuned on validation, and predict/eval/export applying them."""

from __future__ import annotations

import json
import re

import hydra
import hydra.errors
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import FAST, FAST_WITH_PICTURES, compose, read_metrics, run_task
from torchmetrics.classification import MultilabelPrecisionRecallCurve

from imgcls.callbacks.multilabel_pictures import cooccurrence_figure
from imgcls.data import CsvSource, DataConfigError
from imgcls.data.labels import multi_hot
from imgcls.data.split import assign_splits
from imgcls.extras.mnist_collages import MnistCollageSource, make_collages
from imgcls.models.losses import BinaryCrossEntropy
from imgcls.models.metrics import at_thresholds, tune_thresholds
from imgcls.models.mixup import build_mixup
from imgcls.utils.errors import ConfigError


@pytest.fixture(scope="module")
def collages(tmp_path_factory) -> pd.DataFrame:
    """The shipped data=mnist_multilabel table (1,686 collages of the real digits)."""
    source = MnistCollageSource(str(tmp_path_factory.mktemp("data") / "mnist_multilabel"))
    source.prepare()
    return source.discover().table


def _gap(y: np.ndarray, rows: np.ndarray) -> float:
    """The largest difference between a class's share in `rows` and in the whole table."""
    return float(np.abs(y[rows].mean(axis=0) - y.mean(axis=0)).max())


# ---- data -------------------------------------------------------------------------------------------------------
def test_collages_hold_two_to_four_real_digits_each_used_once():
    pixels, digits = np.zeros((10, 28, 28), np.uint8), np.arange(10)
    for d in range(10):
        pixels[d, d : d + 5, 3:20] = 255  # one mark per digit, where a collage can show it
    images, sets = make_collages(pixels, digits, seed=0)
    assert sum(len(s) for s in sets) == 10 and all(1 <= len(s) <= 4 for s in sets)  # distinct digits: no repeats
    assert [im.shape for im in images] == [(64, 64)] * len(images)
    assert [int((im > 0).sum()) for im in images] == [85 * len(s) for s in sets]  # each digit pasted whole


def test_split_keeps_every_class_share_on_both_sides(collages):
    y = multi_hot(collages["labels"], 10)
    for seed in (0, 1, 2):
        split = assign_splits(collages, val_fraction=0.1, test_fraction=0.1, seed=seed)["split"].to_numpy()
        for side in ("train", "val", "test"):
            assert _gap(y, np.flatnonzero(split == side)) < 0.025, (seed, side)
        assert (split == "val").sum() == pytest.approx(0.1 * len(y), abs=3)
    again = assign_splits(collages, val_fraction=0.1, test_fraction=0.1, seed=2)
    assert again["split"].tolist() == split.tolist()  # a pure function of data and seed
    assert assign_splits(collages, 0.1, 0.1, seed=3)["split"].tolist() != split.tolist()


def test_grouped_split_and_folds_keep_each_group_on_one_side(collages):
    table = collages.assign(group=[f"g{i // 4}" for i in range(len(collages))])
    y = multi_hot(table["labels"], 10)
    split = assign_splits(table, val_fraction=0.2, seed=0)["split"]
    assert (table.assign(split=split).groupby("group")["split"].nunique() == 1).all()
    assert _gap(y, np.flatnonzero(split == "val")) < 0.045 and _gap(y, np.flatnonzero(split == "train")) < 0.012
    folds = assign_splits(table, val_fraction=0.1, seed=0, n_folds=5, fold=2)
    assert sorted(set(folds["fold"])) == [0, 1, 2, 3, 4]
    assert (table.assign(fold=folds["fold"]).groupby("group")["fold"].nunique() == 1).all()
    assert max(_gap(y, np.flatnonzero(folds["fold"] == k)) for k in range(5)) < 0.045  # random groups: ~0.06
    assert (folds["split"] == "val").tolist() == (folds["fold"] == 2).tolist()


def _csv_source(tmp_path, rows: dict, **kwargs) -> CsvSource:
    for name in rows["path"]:
        (tmp_path / name).write_bytes(b"")  # discovery only checks that the files exist
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    return CsvSource(str(tmp_path), task="multilabel", **kwargs)


def test_label_sets_from_a_separator_column_or_one_column_per_class(tmp_path):
    paths = ["a.png", "b.png", "c.png"]
    found = _csv_source(tmp_path, {"path": paths, "label": ["dog|cat", "", "cat"]}).discover()
    assert found.multilabel and found.class_names == ["cat", "dog"]
    assert found.table["labels"].tolist() == [(0, 1), (), (0,)]  # empty = "no label": kept, all-negative
    columns = {"path": paths, "cat": [1, 0, 1], "dog": [1, 0, 0]}
    by_columns = _csv_source(tmp_path, columns, label_columns=["cat", "dog"]).discover()
    assert by_columns.table["labels"].tolist() == found.table["labels"].tolist()
    assert multi_hot(found.table["labels"], 2).tolist() == [[1, 1], [0, 0], [1, 0]]


@pytest.mark.parametrize(
    ("labels", "kwargs", "message"),
    [
        (["cat", "cat||dog", "dog"], {}, r"row 3 has label='cat\|\|dog', not names joined by '\|'"),
        (["cat|cat", "dog", "cat"], {}, r"row 2 has label='cat\|cat'"),
        (["cat", "dog|cow", "cat"], {"class_names": ["cat", "dog"]}, r"row 3 has label 'cow' not in"),
    ],
)
def test_bad_label_sets_are_one_line_errors_naming_the_row(tmp_path, labels, kwargs, message):
    with pytest.raises(DataConfigError, match=message):
        _csv_source(tmp_path, {"path": ["a.png", "b.png", "c.png"], "label": labels}, **kwargs).discover()


def test_na_like_labels_are_class_names_and_only_an_empty_cell_is_no_label(tmp_path):
    """pandas reads NA, None, null, nan as missing: a label set would silently become empty ("no label")."""
    rows = {"path": ["a.png", "b.png", "c.png", "d.png"], "label": ["cat", "NA", "NA|None", ""]}
    found = _csv_source(tmp_path, rows).discover()
    assert found.class_names == ["NA", "None", "cat"]
    assert found.table["labels"].tolist() == [(2,), (0,), (0, 1), ()]
    single = {"path": ["a.png", "b.png"], "label": ["None", "cat"]}  # one label per image: 'None' is a class too
    pd.DataFrame(single).to_csv(tmp_path / "labels.csv", index=False)
    assert CsvSource(str(tmp_path)).discover().class_names == ["None", "cat"]


def test_a_class_name_holding_the_separator_is_refused(tmp_path):
    """Label sets are written `a|b` in split.csv and predictions: a class named `a|b` could not be read back."""
    rows = {"path": ["a.png", "b.png"], "a|b": [1, 0], "c": [0, 1]}
    with pytest.raises(DataConfigError, match=r"class name 'a\|b' contains '\|'.*rename the class"):
        _csv_source(tmp_path, rows, label_columns=["a|b", "c"]).discover()
    rows = {"path": ["a.png", "b.png"], "label": ["a|b;c", "c"]}
    with pytest.raises(DataConfigError, match=r"class name 'a\|b' contains"):
        _csv_source(tmp_path, rows, label_separator=";").discover()


def test_class_weights_on_multilabel_data_point_to_pos_weight():
    cfg = compose("train", ["data=mnist_multilabel", "model/class_weights=balanced"])
    spec = {"class_names": ["a", "b"], "channels": 1, "image_size": [32, 32], "crop": {}, "multilabel": True}
    spec |= {"mean": None, "std": None}
    with pytest.raises(hydra.errors.InstantiationException) as info:
        hydra.utils.instantiate(cfg.model, data_spec=spec)
    assert isinstance(info.value.__cause__, ConfigError)
    assert re.search(r"^model\.class_weights .* use model\.loss\.pos_weight=balanced", str(info.value.__cause__))


def test_at_thresholds_keeps_the_ranking_and_puts_each_threshold_at_one_half():
    probs = torch.rand(200, 3, generator=torch.Generator().manual_seed(0))
    thresholds = torch.tensor([0.2, 0.5, 0.9])
    moved = at_thresholds(probs, thresholds)
    assert torch.equal(moved >= 0.5, probs >= thresholds)
    for c in range(3):
        assert torch.equal(moved[:, c].argsort(), probs[:, c].argsort())


def test_cooccurrence_rows_are_shares_of_each_class_s_images():
    target = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [1, 1, 0]])
    figure = cooccurrence_figure(target, ["a", "b", "c"], "co-occurrence")
    shown = figure.axes[0].images[0].get_array()
    assert np.allclose(np.diag(shown), 1) and shown[0, 1] == pytest.approx(2 / 3)  # 2 of a's 3 images have b


def test_a_label_column_not_zero_or_one_and_single_label_data_with_sets_are_named(tmp_path):
    rows = {"path": ["a.png", "b.png"], "cat": [1, 2], "dog": [0, 1]}
    with pytest.raises(DataConfigError, match=r"row 3 has cat='2': label columns hold 0 or 1"):
        _csv_source(tmp_path, rows, label_columns=["cat", "dog"]).discover()
    pd.DataFrame({"path": ["a.png", "b.png"], "label": ["cat|dog", "cat"]}).to_csv(tmp_path / "labels.csv")
    with pytest.raises(DataConfigError, match=r"several labels per image\? set data.task=multilabel"):
        CsvSource(str(tmp_path), class_names=["cat", "dog"]).discover()


# ---- model ------------------------------------------------------------------------------------------------------
def _best_f1_brute_force(probs: np.ndarray, truth: np.ndarray) -> float:
    """The best F1 any threshold gives one class (every distinct probability tried)."""
    best = 0.0
    for t in np.unique(probs):
        said = probs >= t
        tp = (said & truth).sum()
        best = max(best, 2 * tp / max(said.sum() + truth.sum(), 1))
    return best


def _f1(said: np.ndarray, truth: np.ndarray) -> float:
    return 2 * (said & truth).sum() / max(said.sum() + truth.sum(), 1)


def test_tuned_thresholds_are_each_class_s_f1_maximiser():
    gen = torch.Generator().manual_seed(0)
    target = (torch.rand(300, 5, generator=gen) < torch.tensor([0.5, 0.3, 0.1, 0.05, 0.0])).int()
    probs = (0.35 * target + 0.65 * torch.rand(300, 5, generator=gen)).float()  # informative, not separable
    curve = MultilabelPrecisionRecallCurve(5, thresholds=None)
    curve.update(probs, target)
    thresholds, f1 = tune_thresholds(*curve.compute())
    p, y = probs.numpy(), target.numpy().astype(bool)
    for c in range(4):
        best = _best_f1_brute_force(p[:, c], y[:, c])
        assert _f1(p[:, c] >= thresholds[c].item(), y[:, c]) == pytest.approx(best)
        assert f1[c].item() == pytest.approx(best)
        assert not np.isin(thresholds[c].item(), p[:, c])  # between two probabilities: rounding cannot flip it
    assert thresholds[4].item() == 0.5 and f1[4].item() == 0.0  # no positives in validation: left at 0.5


def test_mixup_mixes_multi_hot_targets_with_the_images_weights():
    mixup = build_mixup({"mixup_alpha": 1.0, "mode": "elem"}, num_classes=3, multilabel=True)
    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 2, 2).clone()  # image i is all i
    target = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    torch.manual_seed(0)
    mixed, soft = mixup(images, target)
    # image i = lam_i * i + (1 - lam_i) * (3 - i): timm pairs each image with its mirror in the batch
    lam = (mixed[:, 0, 0, 0] - torch.tensor([3.0, 2, 1, 0])) / (torch.arange(4.0) - torch.tensor([3.0, 2, 1, 0]))
    expected = lam[:, None] * target + (1 - lam[:, None]) * target.flip(0)
    assert torch.allclose(soft, expected, atol=1e-6)
    assert not torch.allclose(lam, torch.ones(4))  # something was mixed


def test_bce_balanced_pos_weight_and_smoothing_towards_a_half():
    loss = BinaryCrossEntropy(label_smoothing=0.2, pos_weight="balanced")
    loss.fit_counts(torch.tensor([10, 50, 0]), total=100)
    assert loss.pos_weight.tolist() == [9.0, 1.0, 1.0]  # negatives/positives; no positives: 1
    logits, target = torch.randn(4, 3), torch.tensor([[1.0, 0, 0], [0, 1, 1], [0, 0, 0], [1, 1, 1]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, target * 0.8 + 0.1, pos_weight=torch.tensor([9.0, 1.0, 1.0])
    )
    assert loss(logits, target).item() == pytest.approx(expected.item())


# ---- end to end: train, predict, eval, export ------------------------------------------------------------------
@pytest.fixture(scope="module")
def multilabel_run(collages, tmp_path_factory):
    """`python train.py data=mnist_multilabel` (fast settings): the shipped multi-label recipe."""
    run_dir = tmp_path_factory.mktemp("multilabel_run")
    data_dir = collages["path"].iloc[0].rsplit("/mnist_multilabel/", 1)[0]
    run_task(
        "train",
        "data=mnist_multilabel",
        f"paths.data_dir={data_dir}",
        *FAST_WITH_PICTURES,
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=30",
        "loader.batch_size=32",
        "data.test_fraction=0.1",  # test/* is scored at the tuned thresholds, as eval scores it
        "model.ema={decay: 0.9}",  # predict, eval and export use the EMA weights and their own thresholds
        run_dir=run_dir,
    )
    return run_dir


def _predict(run_dir, tmp_path, ckpt=None, name="predict", *extra):
    ckpt = ckpt or run_dir / "checkpoints" / "best.ckpt"
    overrides = (f"ckpt_path={ckpt}", f"input={run_dir / 'split.csv'}", "split=val", *extra)
    run_task("predict", *overrides, run_dir=tmp_path / name)
    return pd.read_csv(tmp_path / name / "predictions.csv", keep_default_na=False), read_metrics(tmp_path / name)


@pytest.mark.slow
def test_a_run_records_label_sets_and_ranks_by_map(multilabel_run):
    split = pd.read_csv(multilabel_run / "split.csv", keep_default_na=False, dtype=str)
    assert list(split.columns[:3]) == ["path", "labels", "split"] and len(split) == 1686
    metrics = read_metrics(multilabel_run)
    assert metrics["best_score"] == pytest.approx(metrics["best"]["val/map_best"])
    assert 0.3 < metrics["final"]["val/map"] <= 1.0 and "val/f1_tuned" in metrics["final"]
    per_class = pd.read_csv(multilabel_run / "per_class.csv")
    assert list(per_class.columns) == ["class", "ap", "threshold", "precision", "recall", "f1", "support"]
    assert per_class["ap"].mean() == pytest.approx(metrics["final"]["val/map"], abs=1e-3)
    for picture in ("per_class_ap.png", "label_cooccurrence.png", "worst_misclassified.png"):
        assert (multilabel_run / picture).stat().st_size > 0


@pytest.mark.slow
def test_checkpoint_thresholds_maximise_validation_f1_and_predict_applies_them(multilabel_run, tmp_path):
    ckpt = torch.load(multilabel_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    for weights, key, tuned in (("ema", "thresholds_ema", "val_ema/f1_tuned"), ("raw", "thresholds", "val/f1_tuned")):
        thresholds = ckpt["state_dict"][key].numpy()  # each set of weights has its own, tuned on its outputs
        rows, metrics = _predict(multilabel_run, tmp_path, None, weights, f"ema={weights == 'ema'}")
        probs = rows[[f"prob_{c}" for c in range(10)]].to_numpy()
        truth = multi_hot([tuple(int(c) for c in s.split("|")) if s else () for s in rows["true_labels"]], 10) > 0
        said = probs >= thresholds[None, :]
        assert rows["labels"].tolist() == ["|".join(str(c) for c in np.flatnonzero(r)) for r in said]
        for c in range(10):  # the tuned thresholds are the validation F1 maximisers (probabilities rounded to 1e-6)
            best = _best_f1_brute_force(probs[:, c], truth[:, c])
            assert _f1(said[:, c], truth[:, c]) == pytest.approx(best, abs=0.02)
        assert metrics["f1"] == pytest.approx(read_metrics(multilabel_run)["final"][tuned], abs=0.02)
    assert not np.allclose(ckpt["state_dict"]["thresholds"], ckpt["state_dict"]["thresholds_ema"])

    # Other thresholds in the checkpoint: predict follows them (class 0 always said, class 1 never).
    thresholds = ckpt["state_dict"]["thresholds_ema"]
    ckpt["state_dict"]["thresholds_ema"] = torch.tensor([0.0, 1.01] + thresholds[2:].tolist())
    torch.save(ckpt, tmp_path / "edited.ckpt")
    edited, _ = _predict(multilabel_run, tmp_path, tmp_path / "edited.ckpt", "edited")
    assert all("0" in s.split("|") and "1" not in s.split("|") for s in edited["labels"])


@pytest.mark.slow
def test_eval_and_export_keep_the_sigmoid_outputs_and_thresholds(multilabel_run, tmp_path):
    best = multilabel_run / "checkpoints" / "best.ckpt"
    result = run_task("eval", f"ckpt_path={best}", "mistakes=4", run_dir=tmp_path / "eval").value
    final = read_metrics(multilabel_run)["final"]
    assert result["metrics"]["map"] == pytest.approx(final["val_ema/map"], abs=1e-4)
    # After fit, the test split was scored at the tuned thresholds: what eval reports for the same images
    tested = run_task("eval", f"ckpt_path={best}", "split=test", run_dir=tmp_path / "eval_test").value["metrics"]
    assert tested["f1"] == pytest.approx(read_metrics(multilabel_run)["test"]["test_ema/f1"], abs=1e-4)
    assert (tmp_path / "eval" / "per_class.csv").exists() and (tmp_path / "eval" / "report.md").exists()
    run_task("export", f"ckpt_path={best}", run_dir=tmp_path / "export")
    onnx = tmp_path / "export" / "model.onnx"
    import onnx as onnx_lib

    meta = {p.key: p.value for p in onnx_lib.load(str(onnx)).metadata_props}
    assert json.loads(meta["imgcls.thresholds"]) == pytest.approx(result["thresholds"], abs=1e-6)
    from_file, _ = _predict(multilabel_run, tmp_path, onnx, "onnx")
    from_ckpt, _ = _predict(multilabel_run, tmp_path, best, "ckpt")
    assert from_file["labels"].tolist() == from_ckpt["labels"].tolist()


def test_the_model_card_counts_labels_per_class_and_images_per_split(tmp_path):
    from imgcls.deploy.model_card import _data

    rows = {"path": ["a", "b", "c", "d"], "labels": ["cat|dog", "", "dog", "cat"], "split": ["train"] * 3 + ["val"]}
    pd.DataFrame(rows).to_csv(tmp_path / "split.csv", index=False)
    table = _data(tmp_path, ["cat", "dog"])
    assert "| cat | 1 | 1 |" in table and "| dog | 2 | 0 |" in table
    assert "| **total** | 3 | 1 |" in table  # images, the unlabelled one included, not labels


def test_a_labelled_input_is_read_as_its_training_manifest_writes_sets(tmp_path):
    """predict/eval input: split.csv's `labels` (`a|b`), the manifest's own `label` with its separator, or 0/1
    columns, all to the same sets."""
    from imgcls.data.inputs import read_rows

    spec = {"class_names": ["cat", "dog"], "multilabel": True, "label_separator": ";"}
    forms = {
        "labels": {"labels": ["cat|dog", "", "dog"]},
        "label": {"label": ["dog;cat", "", "dog"]},
        "columns": {"cat": [1, 0, 0], "dog": [1, 0, 1]},
    }
    for name, columns in forms.items():
        pd.DataFrame({"path": ["a.png", "b.png", "c.png"], **columns}).to_csv(tmp_path / f"{name}.csv", index=False)
        table = read_rows(str(tmp_path / f"{name}.csv"), spec, None)
        assert table["labels"].tolist() == [(0, 1), (), (1,)], name


def test_export_s_check_compares_label_sets_at_the_thresholds():
    from imgcls.deploy.check import compare

    reference = np.array([[0.9, 0.6, 0.1], [0.2, 0.3, 0.8]])
    moved = reference + np.array([[0.0, -0.15, 0.0], [0.0, 0.0, 0.0]])  # class 1 of image 0 falls below 0.5
    cut = np.array([0.5, 0.5, 0.5])
    assert compare("file", reference, moved, None).decisions_agree == 1.0  # the top class is the same...
    assert compare("file", reference, moved, None, cut).decisions_agree == 0.5  # ...its label set is not


def test_images_without_a_label_train_and_predict_as_all_negative(image_tree, tmp_path):
    """An empty set ("none of the classes") goes through the split, training and predict like any other."""
    files = sorted(p for p in image_tree.rglob("*") if p.suffix in (".png", ".jpg") and not p.name.startswith("."))
    sets = ["", "circle", "circle|square", "bar", "square|bar"]
    rows = {"path": [str(p) for p in files], "label": [sets[i % len(sets)] for i in range(len(files))]}
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    overrides = ("data=csv", f"data.root={tmp_path}", "data.task=multilabel", f"paths.data_dir={tmp_path / 'data'}")
    run = run_task("train", *overrides, *FAST, run_dir=tmp_path / "run")
    split = pd.read_csv(run.run_dir / "split.csv", keep_default_na=False)
    assert (split["labels"] == "").sum() == len(files) // 5 and {"train", "val"} <= set(split["split"])
    predict = (f"ckpt_path={run.run_dir / 'checkpoints' / 'best.ckpt'}", f"input={run.run_dir / 'split.csv'}")
    run_task("predict", *predict, run_dir=tmp_path / "predict")
    rows = pd.read_csv(tmp_path / "predict" / "predictions.csv", keep_default_na=False)
    assert len(rows) == len(files) and (rows["true_labels"] == "").sum() == len(files) // 5
