"""The error users fix by changing a setting, not code: shown as one line naming the key and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Sequence


class ConfigError(ValueError):
    """A wrong config value or input. The message names the key (or file) and what to do; no traceback is
    shown for it on the command line (it is still in the run's log file)."""


class DataConfigError(ConfigError):
    """A data config or data file that cannot work; the message names the config key (or file and row) and the fix."""


def did_you_mean(name: str, known: Sequence[str], prefix: str = "") -> str:
    """`did you mean <prefix><closest>? ` for a misspelt key, or "" when nothing in `known` is close."""
    close = difflib.get_close_matches(name, known, n=1)
    return f"did you mean {prefix}{close[0]}? " if close else ""
