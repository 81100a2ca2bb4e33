"""The mask-wearing competition's layout (`data=mask`): 18 classes = mask x gender x age band.

    root/train/train.csv                           id,gender,race,age,path (path = the person's folder name)
    root/train/images/<id>_<gender>_<race>_<age>/  mask1..mask5, incorrect_mask, normal (.jpg/.jpeg/.png)
    root/eval/info.csv, root/eval/images/          ImageID,ans: the submission template

class = mask*6 + gender*3 + age (mask: wear 0, incorrect 1, normal 2; gender: male 0, female 1; age: <30,
30-59, >=60 with configurable band edges). Every image carries its person as `group`, so the split keeps all
seven photos of a person on one side. Label corrections (known annotation errors) are applied before
anything else, from a YAML file (`configs/data/corrections/known.yaml` ships the list participants reported).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from imgcls import CONFIG_DIR
from imgcls.data.sources import DataConfigError, Discovered, _check_root
from imgcls.extras.competition.submission import Submission
from imgcls.feeding.image_io import is_image_file
from imgcls.utils.logging import get_logger

log = get_logger(__name__)

MASK_STATES = ("wear", "incorrect", "normal")
FILE_TO_MASK = {**{f"mask{i}": 0 for i in range(1, 6)}, "incorrect_mask": 1, "normal": 2}
GENDERS = ("male", "female")
CORRECTION_KEYS = ("gender_flip", "mask_swap")


def age_band_names(edges: Sequence[int]) -> list[str]:
    """[30, 60] -> ['<30', '30-59', '>=60']."""
    edges = [int(e) for e in edges]
    return [f"<{edges[0]}"] + [f"{a}-{b - 1}" for a, b in zip(edges, edges[1:])] + [f">={edges[-1]}"]


def load_corrections(spec: str | None) -> dict[str, set[str]]:
    """`none`, `known` (the shipped list) or a YAML path -> {'gender_flip': {ids}, 'mask_swap': {ids}}."""
    if spec in (None, "", "none", False):
        return {key: set() for key in CORRECTION_KEYS}
    path = (
        CONFIG_DIR / "data" / "corrections" / f"{spec}.yaml"
        if "/" not in str(spec) and not str(spec).endswith((".yaml", ".yml"))
        else Path(str(spec)).expanduser()
    )
    if not path.is_file():
        raise DataConfigError(f"data.source.corrections='{spec}': no such file {path}; use none, known or a YAML path")
    content = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(content) - set(CORRECTION_KEYS))
    if unknown:
        raise DataConfigError(f"{path}: unknown key(s) {unknown}; expected {list(CORRECTION_KEYS)}")
    return {key: {str(v) for v in content.get(key) or []} for key in CORRECTION_KEYS}


class MaskSource:
    """Discovers the competition's training images; `submission()` gives predict the eval set."""

    def __init__(self, root: str | None, age_bands: Sequence[int] = (30, 60), corrections: str | None = "none") -> None:
        self.root = root
        self.age_bands = [int(e) for e in age_bands]
        if not self.age_bands or sorted(self.age_bands) != self.age_bands:
            raise DataConfigError(f"data.source.age_bands={list(age_bands)} must be increasing edges, e.g. [30, 60]")
        self.corrections = corrections

    @property
    def tasks(self) -> dict[str, int]:
        return {"mask": len(MASK_STATES), "gender": len(GENDERS), "age": len(self.age_bands) + 1}

    @property
    def class_names(self) -> list[str]:
        ages = age_band_names(self.age_bands)
        return [f"{m}/{g}/{a}" for m in MASK_STATES for g in GENDERS for a in ages]

    def prepare(self) -> None:
        """Nothing to export: the competition files are the user's."""

    def _people(self, root: Path) -> pd.DataFrame:
        csv_path = root / "train" / "train.csv"
        if not csv_path.is_file():
            raise DataConfigError(
                f"data.root='{root}' has no train/train.csv: point data.root at the competition folder (train/, eval/)"
            )
        people = pd.read_csv(csv_path, dtype=str)
        missing = [c for c in ("id", "gender", "age", "path") if c not in people.columns]
        if missing:
            raise DataConfigError(f"{csv_path}: missing column(s) {missing}; found {list(people.columns)}")
        bad = people[~people["gender"].isin(GENDERS) | ~people["age"].str.fullmatch(r"\d+")]
        if len(bad):
            raise DataConfigError(
                f"{csv_path}: row {bad.index[0] + 2} has gender '{bad.iloc[0]['gender']}' / age "
                f"'{bad.iloc[0]['age']}' ({len(bad)} such rows): gender must be male/female, age "
                "an integer"
            )
        return people

    def discover(self) -> Discovered:
        root = _check_root(self.root)
        people = self._people(root)
        fixes = load_corrections(self.corrections)
        for key, ids in fixes.items():
            absent = sorted(ids - set(people["id"]))
            if absent:
                log.warning(f"data.source.corrections: {key} ids not in train.csv (ignored): {absent}")
        rows, skipped = [], []
        sizes = self.tasks
        for person in people.itertuples(index=False):
            folder = root / "train" / "images" / person.path
            if not folder.is_dir():
                raise DataConfigError(f"train.csv lists '{person.path}' but {folder} does not exist")
            gender = GENDERS.index(person.gender)
            if person.id in fixes["gender_flip"]:
                gender = 1 - gender
            age = int(person.age)
            band = int(np.searchsorted(self.age_bands, age, side="right"))
            for file in sorted(folder.iterdir()):
                stem = file.name.rsplit(".", 1)[0]
                if not is_image_file(file.name) or stem not in FILE_TO_MASK:
                    if not file.name.startswith("."):
                        skipped.append(str(file))
                    continue
                mask = FILE_TO_MASK[stem]
                if person.id in fixes["mask_swap"] and mask in (1, 2):
                    mask = 3 - mask  # incorrect_mask <-> normal
                label = (mask * sizes["gender"] + gender) * sizes["age"] + band
                rows.append((str(file), label, person.id, mask, gender, band, age))
        if skipped:
            log.warning(
                f"Skipped {len(skipped)} file(s) that are not mask1-5/incorrect_mask/normal images, "
                f"first: {skipped[:3]}"
            )
        if not rows:
            raise DataConfigError(f"no images found under {root / 'train' / 'images'}")
        table = pd.DataFrame(rows, columns=["path", "label", "group", "mask", "gender", "age_band", "age"])
        changed = sum(len(ids & set(people["id"])) for ids in fixes.values())
        if changed:
            log.info(f"Applied label corrections '{self.corrections}' to {changed} people")
        return Discovered(table, self.class_names, tasks=sizes)

    def submission(self) -> Submission:
        """The eval images in `eval/info.csv` order; predict writes the class index into its `ans` column."""
        root = _check_root(self.root)
        info = root / "eval" / "info.csv"
        if not info.is_file():
            raise DataConfigError(f"data.root='{root}' has no eval/info.csv to fill in")
        template = pd.read_csv(info, dtype=str, keep_default_na=False)
        if "ImageID" not in template.columns:
            raise DataConfigError(f"{info}: no ImageID column (found {list(template.columns)})")
        paths = [str(root / "eval" / "images" / name) for name in template["ImageID"]]
        absent = [p for p in paths if not Path(p).is_file()]
        if absent:
            raise DataConfigError(f"{info}: {len(absent)} listed image(s) missing, first: {absent[0]}")
        return Submission(pd.DataFrame({"path": paths}), template, "ans", info)
