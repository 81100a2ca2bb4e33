"""Continue a killed run in its own run dir: `python train.py ckpt_path=last` or `ckpt_path=<run dir>`.

Hydra picks the run dir before any task code runs, so the resume target is resolved here, on the command line,
before Hydra starts:
- `ckpt_path=last`: the newest run under `<log_dir>/<task_name>/runs` whose overrides equal this command's
  (ignoring `ckpt_path` and `hydra.*`): "the same config".
- `ckpt_path=<run dir>`: that run, with its own overrides put first, so `python train.py ckpt_path=<dir>
  trainer.max_epochs=30` continues that run for longer.
Either becomes `hydra.run.dir=<run dir>` + `ckpt_path=<run dir>/checkpoints/last.ckpt` (or `ckpt_path=null`
when the run was killed before its first checkpoint: it starts again, in the same folder). Any other
`ckpt_path` (a .ckpt file) is left alone: a new run starting from those weights and that loop state.
"""

from __future__ import annotations

import re
import secrets
import string
import sys
from pathlib import Path

import yaml

from imgcls.utils.compat import register_hydra_resolvers
from imgcls.utils.errors import ConfigError
from imgcls.utils.io import atomic_write_text

LAST = "last"
CHECKPOINT = Path("checkpoints") / "last.ckpt"


class ResumeError(ConfigError):
    """A `ckpt_path=last|<run dir>` that cannot be resolved; the message names what to do instead."""


def _comparable(overrides: list[str]) -> list[str]:
    return sorted(o for o in overrides if not o.startswith(("ckpt_path=", "hydra.", "+hydra.", "++hydra.")))


def _run_overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    try:
        return list(yaml.safe_load(path.read_text()) or [])
    except (OSError, yaml.YAMLError):
        return []


def _runs_root(config_dir: str, config_name: str, overrides: list[str]) -> Path:
    """The folder `hydra.run.dir` puts runs in (its parent), as this command's config resolves it."""
    from hydra import compose, initialize_config_dir

    register_hydra_resolvers()  # Hydra's `now`, for the run dir
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    return Path(str(cfg.hydra.run.dir)).parent


def find_run(runs_root: Path, overrides: list[str]) -> Path | None:
    """The most recently started (or resumed) run dir with the same overrides, or None."""
    wanted = _comparable(overrides)
    runs = sorted(
        (p for p in runs_root.glob("*") if (p / ".hydra" / "overrides.yaml").is_file()),
        key=lambda p: (p / ".hydra" / "overrides.yaml").stat().st_mtime_ns,
        reverse=True,
    )
    return next((run for run in runs if _comparable(_run_overrides(run)) == wanted), None)


def resolve_resume(argv: list[str], config_dir: str, config_name: str) -> list[str]:
    """`argv` (without the program name) with `ckpt_path=last|<run dir>` turned into the run's checkpoint and
    `hydra.run.dir`; unchanged when there is nothing to resolve."""
    position = next((i for i, a in enumerate(argv) if a.startswith("ckpt_path=")), None)
    if position is None:
        return argv
    value = argv[position].split("=", 1)[1].strip("'\"")
    if value != LAST and not (Path(value) / ".hydra").is_dir():
        return argv  # a checkpoint file (or null): Lightning's own meaning
    if any(a in ("-m", "--multirun") for a in argv):
        raise ResumeError(
            f"ckpt_path={value} resumes one run; for a sweep job, run it alone with that job's overrides "
            "(see <sweep dir>/summary.csv) and ckpt_path=<its run dir>"
        )
    rest = argv[:position] + argv[position + 1 :]
    is_override = [("=" in a and not a.startswith("-")) for a in rest]
    overrides = [a for a, o in zip(rest, is_override) if o]
    if value == LAST:
        try:
            root = _runs_root(config_dir, config_name, overrides)
        except Exception:  # a wrong override: Hydra reports it properly when it composes the same command
            return argv
        run = find_run(root, overrides)
        if run is None:
            shown = " ".join(overrides) or "(no overrides)"
            raise ResumeError(
                f"ckpt_path=last: no earlier run under {root} has these overrides: {shown}. "
                "Pass the run folder instead: ckpt_path=<run dir> (its overrides are reused)"
            )
        base = []
    else:
        run = Path(value).resolve()
        given = {_key(o) for o in overrides}  # this command's own values win (and `+key=` is not added twice)
        base = [o for o in _run_overrides(run) if _key(o) not in given and not o.startswith("ckpt_path=")]
    checkpoint = run / CHECKPOINT
    if checkpoint.is_file():
        note = f"Resuming {run} from {CHECKPOINT}"
        resolved = f"ckpt_path={_quoted(checkpoint)}"
    else:
        note = (
            f"{run} has no {CHECKPOINT} (killed in its first epoch, or callbacks.last_checkpoint was off): "
            "training it again from the start"
        )
        resolved = "ckpt_path=null"
    print(note, file=sys.stderr)
    # Hydra reads the overrides as one run of positional arguments: keep them together, after any flags.
    first = is_override.index(True) if True in is_override else len(rest)
    last = max((i for i, o in enumerate(is_override) if o), default=first - 1) + 1
    return rest[:first] + base + rest[first:last] + [resolved, f"hydra.run.dir={_quoted(run)}"] + rest[last:]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _quoted(path: Path) -> str:
    """A path as a Hydra override value: quoted when it holds characters the override grammar would parse."""
    text = str(path)
    return text if re.fullmatch(r"[\w/.:+~-]+", text) else "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def wandb_run_id(run_dir: str | Path) -> str:
    """The W&B run id of this run dir: made once, kept in `<run dir>/wandb_id.txt`, so a resumed run in the
    same folder continues the same W&B run."""
    path = Path(run_dir) / "wandb_id.txt"
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # W&B's own form
    atomic_write_text(path, run_id + "\n")
    return run_id
