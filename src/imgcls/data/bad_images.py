"""The unreadable-image policy, one for training (`data.on_bad_image`) and predict (`on_bad_image`).

Unreadable files are found before anything else happens (see imgcls.feeding.checks), then either left out and
listed in `<run dir>/bad_images.csv` (`skip`) or reported as one error naming the first file (`error`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from imgcls.data.dataset import ImageDataset
from imgcls.data.sources import DataConfigError
from imgcls.feeding.checks import find_bad_images
from imgcls.feeding.image_io import BadImageError
from imgcls.utils.io import atomic_write_text
from imgcls.utils.logging import get_logger

log = get_logger(__name__)

POLICIES = ("skip", "error")


def check_policy(policy: str, key: str) -> str:
    if policy not in POLICIES:
        raise DataConfigError(f"{key}='{policy}' is not an option: use {' or '.join(POLICIES)}")
    return policy


def find_unreadable(
    table: pd.DataFrame, channels: int, crop: dict[str, Any], record: Path | None, num_workers: int
) -> pd.DataFrame:
    """`row,path,reason` of the rows of `table` whose file cannot be decoded (remembered in `record` if given)."""
    probe = ImageDataset(table, None, channels, crop, decode_size=(1, 1))  # JPEGs decode at 1/8 scale
    return find_bad_images(probe, record, num_workers)


def drop_unreadable(
    table: pd.DataFrame,
    bad: pd.DataFrame,
    policy: str,
    *,
    key: str,
    source: str,
    listed: Path | None,
    what: str = "images",
    consequence: str = "",
) -> pd.DataFrame:
    """`table` without the rows listed in `bad` (`policy` skip), or a BadImageError naming the first one (`error`,
    or when no image is readable at all). `bad["row"]` are positions in `table`; `listed` is where the list was
    written (None: nowhere), `key` the policy's config key and `source` the key that names the inputs."""
    if bad.empty:
        return table
    first_path, first_reason = bad["path"].iloc[0], bad["reason"].iloc[0]
    if policy == "error" or len(bad) == len(table):
        fix = f"check {source}" if len(bad) == len(table) else f"fix or remove them, or pass {key}=skip"
        note = f" (all listed in {listed})" if listed else ""
        raise BadImageError(
            first_path, f"{first_reason}. {len(bad)} of {len(table)} {what} are unreadable{note}: {fix}"
        )
    where = f"see {listed}" if listed else f"first: '{first_path}': {first_reason}"
    log.warning(f"Skipped {len(bad)} unreadable {what} ({where}){consequence}")
    return table.drop(index=table.index[bad["row"].to_numpy()])


def readable_inputs(
    table: pd.DataFrame, spec: dict[str, Any], policy: str, num_workers: int, output_dir: Path
) -> pd.DataFrame:
    """predict's inputs without their unreadable images (`on_bad_image=skip`, listed in <run dir>/bad_images.csv),
    or the error naming the first one. Checked before predicting (a reduced-size decode), not found half-way."""
    check_policy(policy, "on_bad_image")
    bad = find_unreadable(
        table.drop(columns="row", errors="ignore"), spec["channels"], spec.get("crop") or {}, None, num_workers
    )
    if bad.empty:
        return table
    listed = atomic_write_text(output_dir / "bad_images.csv", bad[["path", "reason"]].to_csv(index=False))
    return drop_unreadable(
        table,
        bad,
        policy,
        key="on_bad_image",
        source="input",
        listed=listed,
        what="input images",
        consequence="; they get no prediction",
    )
