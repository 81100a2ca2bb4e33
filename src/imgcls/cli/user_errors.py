"""Which failures are a setting to fix, and the one line that says which key and how (`user_error`).

Our own code raises `ConfigError` with that line already. Everything else reaches the task wrapper as the
library raised it: Hydra wraps whatever a constructor raised in an `InstantiationException` (whose `full_key`
says which config node was being built), omegaconf names the missing or unresolvable key, and torch and
Lightning reject a setting with their own words. This module maps those to `ConfigError`s; anything it does
not recognise is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import inspect
import re
import traceback
from typing import Any

from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    GrammarParseError,
    InterpolationResolutionError,
    InterpolationToMissingValueError,
    MissingMandatoryValue,
    ValidationError,
)

from imgcls.utils.errors import ConfigError, did_you_mean

# torch.optim's `Invalid <what>: <value>` -> the optimizer argument and what to use instead.
_OPTIMIZER_ARGS = {
    "learning": ("lr", "use a positive value, e.g. 1e-3"),
    "epsilon": ("eps", "use a small positive value, e.g. 1e-8"),
    "beta": ("betas", "use two values in [0, 1), e.g. [0.9, 0.999]"),
    "weight_decay": ("weight_decay", "use 0 or a positive value"),
    "momentum": ("momentum", "use 0 or a positive value"),
}
# (library file, message pattern) -> (key, fix); the key may depend on which setting holds the value.
_LOADER_ERRORS = (
    (r"batch_size should be a positive integer value, but got batch_size=(\S+)", "batch_size", "use a positive int"),
    (r"num_workers option should be non-negative", "num_workers", "use 0 (main process), a count or null (per CPU)"),
    (r"prefetch_factor option should be non-negative", "prefetch_factor", "use a positive int"),
)


def user_error(exc: BaseException, cfg: DictConfig | None = None) -> ConfigError | None:
    """The `ConfigError` that `exc` amounts to (one line: the key and the fix), or None when it is a bug.

    `cfg` is the task's config: it tells which key holds a value a library refused.
    """
    node = ""  # the config node Hydra was instantiating, innermost first
    error: BaseException | None = exc
    while isinstance(error, InstantiationException):
        message = str(error)
        found = re.search(r"^full_key: (\S+)$", message, flags=re.M)
        node = found.group(1) if found else node
        if message.startswith("Error locating target"):
            target = re.match(r"Error locating target '([^']+)'", message)
            cause = error.__cause__
            why = f" ({type(cause).__name__}: {_one_line(cause)})" if cause else ""
            name = target.group(1) if target else "?"
            return ConfigError(
                f"{node + '.' if node else ''}_target_={name!r} cannot be imported{why}: check the dotted path "
                "(a module of your own must be importable: on PYTHONPATH or installed)"
            )
        if error.__cause__ is None:  # Hydra's own complaint about the config node itself
            return ConfigError(f"{node}: {_one_line(error)}" if node else _one_line(error))
        error = error.__cause__
    if isinstance(error, ConfigError):
        return error
    if (spawned := _raised_in_a_spawned_rank(error)) is not None:
        return spawned
    line = _translate(error, node, cfg)
    if line is None:
        return None
    found = ConfigError(line)
    found.__cause__ = exc
    return found


def _raised_in_a_spawned_rank(error: BaseException) -> ConfigError | None:
    """Under ddp_spawn (trainer=ddp_cpu) a rank's exception reaches the main process as the text of its traceback
    (torch's ProcessRaisedException): a ConfigError of ours is its last line, `<module>.<class>: <line>`."""
    if type(error).__name__ != "ProcessRaisedException":
        return None
    last = str(error).strip().splitlines()[-1]
    found = re.match(r"(imgcls(?:\.\w+)*)\.(\w+): (.+)$", last)
    if found is None:
        return None
    kind = getattr(importlib.import_module(found.group(1)), found.group(2), None)
    if not (isinstance(kind, type) and issubclass(kind, ConfigError)):
        return None
    spawned = kind(found.group(3))
    spawned.__cause__ = error
    return spawned


def _translate(error: BaseException, node: str, cfg: DictConfig | None) -> str | None:
    message = str(error)
    if isinstance(error, MissingMandatoryValue | InterpolationToMissingValueError):
        missing = re.search(r"Missing mandatory value: (\S+)", message)
        key = missing.group(1) if missing else error.full_key
        via = f", needed by {error.full_key}" if error.full_key and error.full_key != key else ""
        return f"{key} must be set (it is ??? in the config{via}): add {key}=<value> to the command line"
    if isinstance(error, ConfigKeyError | ConfigAttributeError):
        return None  # code reading a key the config does not have
    if isinstance(error, InterpolationResolutionError | ValidationError | GrammarParseError):
        key = getattr(error, "full_key", "") or node
        return f"{key}: {_one_line(message.split(chr(10))[0])}" if key else _one_line(message)
    if isinstance(error, TypeError):
        return _unknown_setting(message, node, cfg)
    origin = _origin(error)
    if isinstance(error, ValueError) and "/torch/optim/" in origin:
        return _optimizer_value(message, cfg)
    if isinstance(error, ValueError) and "/torch/utils/data/" in origin:
        return _loader_value(message, cfg)
    if type(error).__name__ == "MisconfigurationException":  # Lightning's word for "a setting is wrong"
        return _lightning(message, node, cfg)
    if isinstance(error, ValueError) and node:  # a constructor refused one of its arguments: the node's settings
        return f"{node} ({_target(cfg, node)}): {_one_line(message)}"
    return None


def _unknown_setting(message: str, node: str, cfg: DictConfig | None) -> str | None:
    """`f() got an unexpected keyword argument 'x'`: a key the config sets that the code it builds does not take."""
    found = re.search(r"unexpected keyword argument '(\w+)'|'(\w+)' is an invalid keyword argument", message)
    if not found or cfg is None:
        return None
    name = found.group(1) or found.group(2)
    paths = [p for p in _paths(cfg) if p.rsplit(".", 1)[-1] == name]
    paths.sort(key=lambda p: not p.startswith(f"{node}."))  # the node being built first
    if not paths:
        return None  # not a key of the config: the code passed it
    path = paths[0]
    parent = path.rsplit(".", 1)[0] if "." in path else ""
    target = _target(cfg, parent) if parent else ""
    settings = _settings(target)
    if not settings:
        callee = re.match(r"([\w.]+)\(\)", message)
        return f"{path} is not accepted by {callee.group(1) if callee else target or 'the code'}: remove it"
    hint = did_you_mean(name, settings, f"{parent}.")
    return f"{path} is not a setting of {target}: {hint}its settings are {', '.join(settings)}"


def _optimizer_value(message: str, cfg: DictConfig | None) -> str | None:
    found = re.match(r"Invalid (\w+)", message)
    if not found or found.group(1) not in _OPTIMIZER_ARGS:
        return None
    arg, fix = _OPTIMIZER_ARGS[found.group(1)]
    node = next((p for p, t in _targets(cfg) if t.startswith("torch.optim.") and ".lr_scheduler." not in t), None)
    node = node or "model.optimizer"
    return f"{node}.{arg}={_value(cfg, f'{node}.{arg}')} is refused by {_target(cfg, node)} ({message}): {fix}"


def _loader_value(message: str, cfg: DictConfig | None) -> str | None:
    for pattern, arg, fix in _LOADER_ERRORS:
        found = re.search(pattern, message)
        if not found:
            continue
        key = f"loader.{arg}"
        if (
            arg == "batch_size" and cfg is not None and str(_value(cfg, key)) != found.group(1)
        ):  # then eval_batch_size holds it
            key = "loader.eval_batch_size"
        return f"{key}={_value(cfg, key)} is refused by torch's DataLoader ({message}): {fix}"
    return None


def _lightning(message: str, node: str, cfg: DictConfig | None) -> str | None:
    if "No supported gpu backend found" in message:
        return (
            f"trainer.accelerator={_value(cfg, 'trainer.accelerator')!r} needs a GPU and torch finds none on this "
            "machine: use trainer=cpu (or trainer.accelerator=auto: a GPU when there is one)"
        )
    found = re.search(r"You requested gpu: (.+?)\s+But your machine only has: (.+?)$", message, flags=re.S)
    if found:
        return (
            f"trainer.devices={_value(cfg, 'trainer.devices')} asks for GPUs {found.group(1).strip()}, this machine "
            f"has {found.group(2).strip()}: lower trainer.devices (-1 = all visible)"
        )
    return f"{node}: {_one_line(message)}" if node else None  # outside the Trainer's construction: a bug, maybe


# ---- reading the config ---------------------------------------------------------------------------------
def _paths(cfg: DictConfig) -> list[str]:
    """Every key path of the config, as written (interpolations unresolved)."""
    out: list[str] = []

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                path = f"{prefix}{key}"
                out.append(path)
                walk(child, f"{path}.")

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return out


def _targets(cfg: DictConfig | None) -> list[tuple[str, str]]:
    """(path, `_target_`) of every node that has one."""
    if cfg is None:
        return []
    return [(p[: -len("._target_")], str(_value(cfg, p))) for p in _paths(cfg) if p.endswith("._target_")]


def _target(cfg: DictConfig | None, node: str) -> str:
    return str(_value(cfg, f"{node}._target_") or "?")


def _value(cfg: DictConfig | None, key: str) -> Any:
    if cfg is None:
        return "?"
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=False)
    except Exception:  # an interpolation that does not resolve: show it as written
        return OmegaConf.select(cfg, key, throw_on_resolution_failure=False)


def _settings(target: str) -> list[str]:
    """The keyword arguments `target` takes (its signature), [] when it cannot be inspected."""
    module, _, name = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), name)
        params = inspect.signature(obj).parameters.values()
    except (ImportError, AttributeError, TypeError, ValueError):
        return []
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return []  # takes any keyword: it would not have refused one
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _origin(error: BaseException) -> str:
    """The file the exception was raised in."""
    frames = traceback.extract_tb(error.__traceback__)
    return frames[-1].filename.replace("\\", "/") if frames else ""


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())
