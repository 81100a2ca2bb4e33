"""The fake face-mask dataset: the competition's layout and quirks, deterministic bytes, visible labels, safe writes."""

from __future__ import annotations

import csv
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgcls.extras.competition import synth_mask
from imgcls.extras.competition.synth_mask import KINDS, class_of, make_mask_dataset

SMALL = {"width": 96, "height": 128}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 train people (+ the default 10 eval people) at 96x128; read-only for tests."""
    out = tmp_path_factory.mktemp("mask") / "ds"
    assert make_mask_dataset(out, people=40, **SMALL) == out
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def photos(folder: Path) -> dict[str, Path]:
    """kind -> file, skipping the macOS `._` junk the way a reader must."""
    return {p.stem: p for p in folder.iterdir() if not p.name.startswith(".")}


def test_layout_and_counts(dataset):
    folders = sorted((dataset / "train" / "images").iterdir())
    assert len(folders) == 40
    exts, junk = Counter(), []
    for folder in folders:
        kinds = photos(folder)
        assert sorted(kinds) == sorted(KINDS)
        exts.update(p.suffix for p in kinds.values())
        junk += [p for p in folder.iterdir() if p.name.startswith("._")]
        with Image.open(kinds["normal"]) as img:
            assert img.mode == "RGB" and img.size == (96, 128)
    assert set(exts) == {".jpg", ".jpeg", ".png"}
    assert len(junk) >= 2
    for path in junk:
        with pytest.raises(OSError):
            Image.open(path)
    rows = read_csv(dataset / "train" / "train.csv")
    assert list(rows[0]) == ["id", "gender", "race", "age", "path"]
    assert [r["path"] for r in rows] == [f.name for f in folders]
    assert [r["id"] for r in rows] == sorted({r["id"] for r in rows})  # unique, in id order
    assert all(r["path"] == f"{r['id']}_{r['gender']}_{r['race']}_{r['age']}" and len(r["id"]) == 6 for r in rows)

    info, truth = read_csv(dataset / "eval" / "info.csv"), read_csv(dataset / "eval" / "truth.csv")
    files = sorted(p.name for p in (dataset / "eval" / "images").iterdir())
    assert len(files) == 10 * 7 and all(len(name) == 44 and name.endswith(".jpg") for name in files)
    assert sorted(r["ImageID"] for r in info) == files
    assert [r["ImageID"] for r in truth] == [r["ImageID"] for r in info]
    assert {r["ans"] for r in info} == {"0"} and list(info[0]) == ["ImageID", "ans"]
    assert [r["ImageID"] for r in info] != files  # shuffled, not listed in name order
    assert not list(dataset.parent.glob(".ds.partial-*"))


def test_labels_decode_from_names(dataset):
    rows = read_csv(dataset / "train" / "train.csv")
    assert {r["race"] for r in rows} == {"Asian"} and {r["gender"] for r in rows} == {"male", "female"}
    ages = [int(r["age"]) for r in rows]
    assert min(ages) >= 18 and max(ages) <= 75
    assert {synth_mask.age_band(a) for a in ages} == {0, 1, 2}
    classes = {class_of(kind, r["gender"], int(r["age"])) for r in rows for kind in KINDS}
    assert classes == set(range(18))
    assert class_of("mask3", "female", 29) == 3 and class_of("incorrect_mask", "male", 30) == 7
    assert class_of("normal", "female", 60) == 17
    truth = [int(r["ans"]) for r in read_csv(dataset / "eval" / "truth.csv")]
    assert Counter(a // 6 for a in truth) == {0: 50, 1: 10, 2: 10}  # 5 worn, 1 incorrect, 1 normal each


def test_same_seed_same_bytes_other_seed_differs(tmp_path, dataset):
    kwargs = {"people": 3, "eval_people": 1, **SMALL}
    a, b = make_mask_dataset(tmp_path / "a", **kwargs), make_mask_dataset(tmp_path / "b", **kwargs)
    c = make_mask_dataset(tmp_path / "c", seed=1, **kwargs)
    for rel in ("train/train.csv", "eval/info.csv", "eval/truth.csv"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    folder = read_csv(a / "train" / "train.csv")[0]["path"]
    assert folder == read_csv(dataset / "train" / "train.csv")[0]["path"]  # people do not depend on the count
    first_a, first_b = photos(a / "train/images" / folder), photos(b / "train/images" / folder)
    for kind in ("mask1", "normal"):
        assert first_a[kind].read_bytes() == first_b[kind].read_bytes()
    assert (a / "eval" / "truth.csv").read_bytes() != (c / "eval" / "truth.csv").read_bytes()
    other = read_csv(c / "train" / "train.csv")[0]["path"]
    assert first_a["normal"].read_bytes() != photos(c / "train/images" / other)["normal"].read_bytes()


def pixels(path: Path) -> np.ndarray:
    """The photo as a small CNN would see it (64x48), so the check is about visible cues, not pixel detail."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB").resize((48, 64), Image.BOX), np.float32)


def region_diff(a: np.ndarray, b: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> float:
    h, w = a.shape[:2]
    ys, xs = slice(int(y0 * h), int(y1 * h)), slice(int(x0 * w), int(x1 * w))
    return float(np.abs(a[ys, xs] - b[ys, xs]).mean())


def test_mask_state_is_visible_in_the_lower_face(dataset):
    """Masks change the mouth and chin far more than the eyes and forehead; pulling one down bares the nose."""
    lower, upper, nose = (0.40, 0.60, 0.45, 0.56), (0.36, 0.64, 0.22, 0.34), (0.44, 0.56, 0.40, 0.45)
    low, up, bare = [], [], []
    for folder in sorted((dataset / "train" / "images").iterdir()):
        kinds = {k: pixels(p) for k, p in photos(folder).items()}
        for kind in KINDS[:-1]:
            low.append(region_diff(kinds[kind], kinds["normal"], *lower))
            up.append(region_diff(kinds[kind], kinds["normal"], *upper))
        bare += [region_diff(kinds[k], kinds["incorrect_mask"], *nose) for k in KINDS[:5]]
    assert min(low) > 15 and np.median(low) > 2.5 * np.median(up)
    assert np.median(bare) > 2.5 * np.median(up)


def test_photos_of_a_person_are_near_identical_not_equal(dataset):
    """Within a person only small shifts, light and noise change outside the face: never the same bytes."""
    for folder in sorted((dataset / "train" / "images").iterdir()):
        kinds = photos(folder)
        a, b = (pixels(kinds[k])[:13] for k in ("mask1", "mask2"))  # the top strip: backdrop and hair
        assert np.abs(a / a.mean() - b / b.mean()).mean() * 128 < 25  # once brightness is evened out
        assert len({p.read_bytes() for p in kinds.values()}) == 7


def test_second_call_is_a_no_op(tmp_path):
    out = make_mask_dataset(tmp_path / "ds", people=2, eval_people=0, **SMALL)
    marker = (out / ".complete").stat().st_mtime_ns
    start = time.perf_counter()
    assert make_mask_dataset(tmp_path / "ds", people=2, eval_people=0, **SMALL) == out
    assert time.perf_counter() - start < 0.05 and (out / ".complete").stat().st_mtime_ns == marker


def test_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="delete it or choose another --out"):
        make_mask_dataset(tmp_path / "mine", people=2, **SMALL)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    make_mask_dataset(tmp_path / "ds", people=2, eval_people=0, **SMALL)
    with pytest.raises(FileExistsError):  # made, but with other parameters
        make_mask_dataset(tmp_path / "ds", people=3, eval_people=0, **SMALL)
    (tmp_path / "empty").mkdir()  # an empty folder (e.g. made by a caller) is filled
    assert (make_mask_dataset(tmp_path / "empty", people=1, eval_people=0, **SMALL) / ".complete").exists()


def test_a_failed_run_leaves_nothing(tmp_path, monkeypatch):
    def fail(root: Path, *args: object) -> None:
        (root / "train").mkdir()
        raise RuntimeError("disk full")

    monkeypatch.setattr(synth_mask, "_write", fail)
    with pytest.raises(RuntimeError):
        make_mask_dataset(tmp_path / "ds", people=2, **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_command_line(tmp_path, monkeypatch, capsys):
    argv = ["synth_mask", "--out", str(tmp_path / "ds"), "--people", "4", "--width", "64", "--height", "80"]
    monkeypatch.setattr(sys, "argv", argv)
    synth_mask.main()
    assert capsys.readouterr().out.strip() == str(tmp_path / "ds")
    assert len(read_csv(tmp_path / "ds" / "eval" / "truth.csv")) == 4 * 7  # eval people: max(4, people // 4)
    with Image.open(next((tmp_path / "ds" / "eval" / "images").iterdir())) as img:
        assert img.size == (64, 80)
