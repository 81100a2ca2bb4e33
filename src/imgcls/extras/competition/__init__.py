"""The mask-wearing competition the template grew out of: its folder layout as a data source (18 classes made of
mask x gender x age, grouped by person, label corrections), its submission template, and a generator of data in
that layout (synth_mask.py, `python -m imgcls.extras.competition.synth_mask`)."""

from imgcls.extras.competition.mask import MaskSource
from imgcls.extras.competition.submission import Submission, load_submission

__all__ = ["MaskSource", "Submission", "load_submission"]
