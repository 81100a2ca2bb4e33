"""Predicting for a competition: `python predict.py data=<a source with a submission template>` (data=mask) fills
in the template, every row in its order, instead of writing a plain predictions table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import pandas as pd

from imgcls.data.sources import DataConfigError
from imgcls.utils.logging import get_logger

log = get_logger(__name__)


@dataclass
class Submission:
    """What predict fills in: `table.path` in the template's row order, answers go to `template[column]`."""

    table: pd.DataFrame
    template: pd.DataFrame
    column: str
    source: Path

    def fill(self, answers: pd.Series) -> pd.DataFrame:
        """The template with `answers` (class indices by template row) in `column`. A submission needs every
        row: one whose image was unreadable (no answer) gets the most frequent answer, with a warning."""
        answers = answers.reindex(range(len(self.template)))
        if answers.isna().any():
            fallback = int(answers.mode().iloc[0])
            log.warning(
                f"{int(answers.isna().sum())} submission rows had unreadable images: answered {fallback} "
                "(the most frequent prediction); see bad_images.csv"
            )
            answers = answers.fillna(fallback)
        return self.template.assign(**{self.column: answers.astype(int).to_numpy()})


def load_submission(data: Mapping[str, Any], class_names: Sequence[str], ckpt: str) -> Submission:
    """The template of `data`'s source (the `data` config group), checked against the classes of `ckpt`."""
    from imgcls.models.checkpoint import describe_classes  # here: `data=mask` itself needs no timm or Lightning

    log.info(f"Instantiating data source <{data['source']['_target_']}>")
    source = hydra.utils.instantiate(data["source"])
    if not hasattr(source, "submission"):
        raise DataConfigError(f"data={data['source']['_target_']} has no submission template: use input= instead")
    if list(source.class_names) != list(class_names):
        raise DataConfigError(
            f"ckpt_path='{ckpt}' was trained on {describe_classes(class_names)}, but data.root='{data.get('root')}' "
            f"has {describe_classes(source.class_names)}: predict this data with a checkpoint trained on it, or "
            "pass input= instead of data="
        )
    return source.submission()
