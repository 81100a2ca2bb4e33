"""The command line checked before Hydra runs it, so that a mistake in it is one line too.

Hydra reports a command line it cannot compose (an option a group lacks, a key the config lacks, an override it
cannot parse) in several lines, ending in its HYDRA_FULL_ERROR advice, with exit status 1; and it accepts a new
top-level key (`+foo=1`) that no code reads. For a single run the config is composed here first, with Hydra's
Compose API (~0.3 s, no torch import): what Hydra would refuse becomes one `ConfigError` line naming the key and
the fix (exit status 2), and a new top-level key is refused. A multirun's jobs are composed by Hydra, one by one.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from imgcls.utils.errors import ConfigError


class OverrideConfigError(ConfigError):
    """An override Hydra cannot apply, or one that adds a setting nothing reads."""


_LEFT_TO_HYDRA = ("-m", "--multirun", "-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir")


def overrides_of(args: Sequence[str]) -> list[str]:
    """The overrides among the arguments (`key=value`, `+key=value`, `~key`); flags and their values are not."""
    return [a for a in args if not a.startswith("-") and ("=" in a or a.startswith("~"))]


def check_command_line(config_dir: str, config_name: str, args: Sequence[str]) -> None:
    """Raise OverrideConfigError if `python <config_name>.py args...` (a single run) cannot be composed, or adds a
    top-level key. Multiruns and other config names/dirs (`-m`, `--config-name`, ...) are left to Hydra."""
    if any(a.split("=")[0] in _LEFT_TO_HYDRA for a in args):
        return
    overrides = overrides_of(args)
    groups = _groups(Path(config_dir))
    try:
        _compose(config_dir, config_name, overrides)
    except OverrideParseException as exc:
        raise OverrideConfigError(_parse_error(exc, overrides)) from exc
    except (ConfigCompositionException, OmegaConfBaseException) as exc:
        raise OverrideConfigError(_composition_error(exc, config_dir, config_name, overrides, groups)) from exc
    added = _added(overrides, groups)
    if added:  # which of them the config lacks: compose it without them
        base = set(_compose(config_dir, config_name, [o for o in overrides if _top(o) not in added]))
        unknown = sorted(added - base)
        if unknown:
            known = sorted(base)
            raise OverrideConfigError(
                f"{unknown[0]} is not a setting of {config_name}.py (nothing reads it): {_hint(unknown[0], known)}"
                f"the top-level settings are {', '.join(known)} (add your own to configs/{config_name}.yaml)"
            )


def _compose(config_dir: str, config_name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=config_dir, version_base="1.3", job_name=config_name):
        return compose(config_name=config_name, overrides=overrides)


def _groups(config_dir: Path) -> set[str]:
    """The config groups a command line can pick from: the folders of configs/ (their top-level names)."""
    return {p.name for p in config_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}


def _top(override: str) -> str:
    """`+foo.bar=1` -> `foo`; `hydra/launcher=local` -> `hydra`."""
    return re.split(r"[./@]", override.split("=", 1)[0].lstrip("+~"))[0]


def _added(overrides: Sequence[str], groups: set[str]) -> set[str]:
    """The top-level keys `+key=...` / `++key=...` overrides may add (groups pick an option, not a key)."""
    return {_top(o) for o in overrides if o.startswith("+")} - groups - {"hydra"}


def _hint(name: str, known: Sequence[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"did you mean {prefix}{close[0]}? " if close else ""


def _parse_error(exc: OverrideParseException, overrides: Sequence[str]) -> str:
    """Hydra's grammar error (which does not say which override) -> one line naming the override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    wrong = next((o for o in overrides if not _parses(parser, o)), None)
    reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    what = f"'{wrong}' cannot be read as an override" if wrong else "the command line cannot be read"
    return f"{what} ({reason}): close brackets and quotes, and quote a value with spaces, e.g. 'key=[1,2]'"


def _parses(parser, override: str) -> bool:
    try:
        parser.parse_override(override)
        return True
    except HydraException:
        return False


def _composition_error(
    exc: Exception, config_dir: str, config_name: str, overrides: list[str], groups: set[str]
) -> str:
    message = str(exc)
    missing = re.search(r"Could not find '([^']+)'", message)
    if missing:  # `augment=extreme`: an option the group lacks
        group, _, option = missing.group(1).rpartition("/")
        folder = Path(config_dir) / group
        options = sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_"))
        hint = _hint(option, options)
        where = f"configs/{group}/" if folder.is_dir() else f"the config group {group}"
        return f"{group}={option} is not an option: {hint}use one of {', '.join(options)} ({where})"
    twice = re.search(r"Multiple values for (\S+?)\.", message)
    if twice:  # `+experiment=mask`: the defaults list has a slot for that group already
        group = twice.group(1)
        given = next((o for o in overrides if _top(o) == group.split("/")[0]), f"+{group}=...")
        return f"{given}: {group} already has a place in the defaults; pick its option with {given.lstrip('+')}"
    unknown = re.search(r"Could not override '([^']+)'", message)
    if unknown:  # `loader.num_worker=2`: a key the config lacks
        key = unknown.group(1)
        parent, _, leaf = key.rpartition(".")
        rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
        try:
            base = _compose(config_dir, config_name, rest)
            node = OmegaConf.select(base, parent) if parent else base
            known = sorted(node) if isinstance(node, DictConfig) else []
        except Exception:  # noqa: BLE001  (the hint is optional; the error line is not)
            known = []
        hint = _hint(leaf, known, f"{parent}." if parent else "")
        settings = f"the settings there are {', '.join(known)} " if known and not hint else ""
        return (
            f"{key} is not in the config (nothing reads it): {hint or settings or 'check the spelling '}"
            f"(adding it with +{key}=... would only add a key nothing reads)"
        )
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return "; ".join(lines)[:400] + " (the command line: check the override it names)"
