"""One Hydra entry point factory for every command (train.py, predict.py, `python -m imgcls.bench|eda`)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig

from imgcls import CONFIG_DIR
from imgcls.cli.help import print_help
from imgcls.cli.preflight import check_command_line
from imgcls.resume.runs import resolve_resume
from imgcls.utils.errors import ConfigError
from imgcls.utils.resolvers import register_resolvers


def hydra_entry(
    config_name: str, task: str, result: Callable[[DictConfig, Any], Any] | None = None, resumable: bool = False
) -> Callable[[], Any]:
    """`main()` for `configs/<config_name>.yaml` running `task` ("module:function", imported lazily so
    `--help` and `--cfg` answer without importing torch); `result` maps the task's return value to what
    Hydra returns (e.g. the metric a sweeper optimises). `resumable`: `ckpt_path=last|<run dir>` is turned
    into that run's checkpoint and run dir before Hydra starts (see resume/runs.py)."""
    register_resolvers()

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)
    def hydra_main(cfg: DictConfig) -> Any:
        module, name = task.split(":")
        value = getattr(importlib.import_module(module), name)(cfg)
        return result(cfg, value) if result else value

    def main() -> Any:
        if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:  # Hydra's own lists non-choices, slowly (cli/help.py)
            return print_help(str(CONFIG_DIR), config_name, [a for a in sys.argv[1:] if not a.startswith("-")])
        # Lightning gives its loggers their own console handler at import only while the root logger has none:
        # imported after Hydra set up logging, each of its messages would print twice.
        import lightning  # noqa: F401

        if resumable:
            try:
                sys.argv[1:] = resolve_resume(sys.argv[1:], str(CONFIG_DIR), config_name)
            except ConfigError as exc:
                print(f"Error: {exc}", file=sys.stderr)
                raise SystemExit(2) from None
        try:  # what Hydra could not compose (or a new top-level key), as one line: see cli/preflight.py
            check_command_line(str(CONFIG_DIR), config_name, sys.argv[1:])
        except ConfigError as exc:
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        return hydra_main()

    return main
