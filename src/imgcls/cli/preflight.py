"""The command line checked before Hydra runs it, so that a mistake in it is one line too.

Hydra reports a command line it cannot compose (an option a group lacks, a key the config lacks, an override it
cannot parse) in several lines, ending in its HYDRA_FULL_ERROR advice, with exit status 1; and it accepts a new
top-level key (`+foo=1`) that no code reads. For a single run the config is composed here first, with Hydra's
Compose API (~0.3 s, no torch import): what Hydra would refuse becomes one `OverrideConfigError` line naming the
key and the fix (exit status 2), and a new top-level key is refused. Left to Hydra: multiruns (`-m`, or a config
that sets `hydra.mode: MULTIRUN`, as hparams_search=optuna does; Hydra composes each job), other config names or
dirs, shell completion, `HYDRA_FULL_ERROR=1`, and an option missing from a config file's own defaults list (a
broken config, not a setting: Hydra's report names the file).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from imgcls.utils.errors import ConfigError, did_you_mean


class OverrideConfigError(ConfigError):
    """An override Hydra cannot apply, or one that adds a setting nothing reads."""


_LEFT_TO_HYDRA = (
    *("-m", "--multirun", "-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir"),
    *("-sc", "--shell-completion"),
)


def overrides_of(args: Sequence[str]) -> list[str]:
    """The overrides among the arguments (`key=value`, `+key=value`, `~key`); flags and their values are not."""
    return [a for a in args if not a.startswith("-") and ("=" in a or a.startswith("~"))]


def check_command_line(config_dir: str, config_name: str, args: Sequence[str]) -> None:
    """Raise OverrideConfigError if `python <config_name>.py args...` (a single run) cannot be composed, or adds a
    top-level key nothing reads."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1" or any(a.split("=")[0] in _LEFT_TO_HYDRA for a in args):
        return
    overrides = overrides_of(args)
    sweeps = _sweeps(overrides)  # raises for an override that cannot be parsed
    single = [o for o in overrides if o not in sweeps]
    with initialize_config_dir(config_dir=config_dir, version_base="1.3", job_name=config_name):
        try:
            cfg = compose(config_name=config_name, overrides=single, return_hydra_config=True)
        except (ConfigCompositionException, OmegaConfBaseException) as exc:
            message = _composition_error(exc, config_name, single)
            if message is None:
                return
            raise OverrideConfigError(message) from exc
        if "MULTIRUN" in str(OmegaConf.select(cfg, "hydra.mode", default="")):
            return  # e.g. hparams_search=optuna: a multirun without -m
        if sweeps:
            raise OverrideConfigError(
                f"{sweeps[0]} gives several values (a sweep): add -m (--multirun) to run one job per value, or give one"
            )
        groups = _groups(Path(config_dir))
        added = _added(overrides, groups)
        if added:  # which of them the config lacks: compose it without them
            base = compose(config_name=config_name, overrides=[o for o in overrides if _top(o) not in added])
            known = sorted(base)
            unknown = sorted(added - set(known))
            if unknown:
                raise OverrideConfigError(
                    f"{unknown[0]} is not a setting of {config_name}.py (nothing reads it): "
                    f"{did_you_mean(unknown[0], known)}the top-level settings are {', '.join(known)} (add your own to "
                    f"configs/{config_name}.yaml)"
                )


def _sweeps(overrides: Sequence[str]) -> list[str]:
    """The overrides that give several values (`a=1,2`, `x=range(3)`); an unreadable one is one error line."""
    parser = OverridesParser.create()
    sweeps = []
    for override in overrides:
        try:
            if parser.parse_override(override).is_sweep_override():
                sweeps.append(override)
        except HydraException as exc:
            reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise OverrideConfigError(
                f"'{override}' cannot be read as an override ({reason}): close brackets and quotes, and quote a "
                "value with spaces, e.g. 'key=[1,2]'"
            ) from exc
    return sweeps


def _groups(config_dir: Path) -> set[str]:
    """The config groups a command line can pick from: the folders of configs/ (their top-level names)."""
    return {p.name for p in config_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}


def _top(override: str) -> str:
    """`+foo.bar=1` -> `foo`; `hydra/launcher=local` -> `hydra`."""
    return re.split(r"[./@]", override.split("=", 1)[0].lstrip("+~"))[0]


def _added(overrides: Sequence[str], groups: set[str]) -> set[str]:
    """The top-level keys `+key=...` / `++key=...` overrides may add (groups pick an option, not a key)."""
    return {_top(o) for o in overrides if o.startswith("+")} - groups - {"hydra"}


def _composition_error(exc: Exception, config_name: str, overrides: list[str]) -> str | None:
    """One line for what Hydra could not compose; None when the fault is in a config file, not the command line."""
    message = str(exc)
    missing = re.search(r"Could not find '([^']+)'", message)
    if missing:  # `augment=extreme`: an option the group lacks
        group, _, option = missing.group(1).rpartition("/")
        if f"{group}={option}" not in (o.lstrip("+") for o in overrides):
            return None  # asked for by a config file's defaults list: Hydra's report names it
        loader = GlobalHydra.instance().config_loader()  # every source: ours, Hydra's, its plugins'
        options = sorted(o for o in loader.get_group_options(group) if not o.startswith("_"))
        if not options:
            return f"{group}={option} is not an option: the group has none (add configs/{group}/{option}.yaml)"
        return f"{group}={option} is not an option: {did_you_mean(option, options)}use one of {', '.join(options)}"
    twice = re.search(r"Multiple values for (\S+?)\.", message)
    if twice:  # `+experiment=mask`: the defaults list has a slot for that group already
        group = twice.group(1)
        given = next((o for o in overrides if _top(o) == group.split("/")[0]), f"+{group}=...")
        return f"{given}: {group} already has a place in the defaults; pick its option with {given.lstrip('+')}"
    unknown = re.search(r"Could not override '([^']+)'", message)
    if unknown:  # `loader.num_worker=2`: a key the config lacks
        return _unknown_key(unknown.group(1), config_name, overrides)
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return "; ".join(lines)[:400] + " (the command line: check the override it names)"


def _unknown_key(key: str, config_name: str, overrides: list[str]) -> str:
    parent, _, leaf = key.rpartition(".")
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    node: Any = None
    try:  # the config without this override: what the key's parent holds
        base = compose(config_name=config_name, overrides=rest)
        node = OmegaConf.select(base, parent) if parent else base
    except Exception:  # noqa: BLE001  (only the hint needs it; the error line does not)
        pass
    known = sorted(node) if isinstance(node, DictConfig) else []
    hint = did_you_mean(leaf, known, f"{parent}." if parent else "")
    if hint:
        return f"{key} is not in the config (nothing reads it): {hint.rstrip()}"
    value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key), "...")
    if isinstance(node, DictConfig) and "_target_" in node:  # an argument of what the config builds
        return (
            f"{key} is not in the config: {parent} builds {node._target_}, and {parent}.* are its arguments; "
            f"to pass it {leaf}, add it: +{key}={value}"
        )
    settings = f"the settings there are {', '.join(known)}" if known else "check the spelling"
    return f"{key} is not in the config (nothing reads it): {settings}"
