"""Print the resolved config as a tree (and save it), so every run shows exactly what it ran with."""

from __future__ import annotations

import io
from pathlib import Path

import rich
import rich.console
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf

from imgcls.utils.io import atomic_write_text

_FIRST = ("data", "augment", "loader", "model", "callbacks", "logger", "trainer", "paths")


def print_config_tree(cfg: DictConfig, save_to: str | Path | None = None, show: bool = True) -> None:
    """Render the config tree; `show` prints it, `save_to` keeps a plain-text copy in the run dir."""
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in _FIRST if k in cfg] + [k for k in cfg if k not in _FIRST]
    for key in keys:
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(str(key), style="yellow").add(rich.syntax.Syntax(text, "yaml"))
    if show:
        rich.print(tree)
    if save_to is not None:
        console = rich.console.Console(record=True, width=120, file=io.StringIO())
        console.print(tree)
        atomic_write_text(Path(save_to), console.export_text())
