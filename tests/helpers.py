"""Test data and CLI helpers: small, deterministic, generated on the fly (nothing downloaded)."""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("circle", "square", "bar")


def draw_shape(kind: str, rng: np.random.Generator, size: int = 40) -> Image.Image:
    """A noisy photo-like RGB image of one shape: easy to learn, never identical."""
    base = rng.integers(60, 200, size=3)
    arr = np.clip(base + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    c = int(rng.integers(size // 3, 2 * size // 3))
    r = int(rng.integers(size // 6, size // 4))
    fill = tuple(int(v) for v in 255 - base)
    if kind == "circle":
        draw.ellipse([c - r, c - r, c + r, c + r], fill=fill)
    elif kind == "square":
        draw.rectangle([c - r, c - r, c + r, c + r], fill=fill)
    else:
        draw.rectangle([2, c - 3, size - 3, c + 3], fill=fill)
    return img


def make_image_tree(root: Path, per_class: int = 20, seed: int = 0, classes=CLASSES) -> Path:
    """root/<class>/<n>.png|jpg, mixed formats, plus a hidden macOS `._` file that must be ignored."""
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ext = "jpg" if i % 2 else "png"
            draw_shape(name, rng).save(root / name / f"{i:03d}.{ext}")
    (root / classes[0] / "._000.jpg").write_bytes(b"\x00\x05\x16\x07 not an image")
    return root


def make_manifest(root: Path, per_class: int = 20, seed: int = 0, groups: bool = False) -> Path:
    """An image tree plus labels.csv (`path,label[,group]`) with paths relative to `root`."""
    make_image_tree(root / "images", per_class, seed)
    rows = ["path,label" + (",group" if groups else "")]
    for name in CLASSES:
        for i, p in enumerate(sorted((root / "images" / name).glob("[!.]*"))):
            rows.append(f"images/{name}/{p.name},{name}" + (f",{name}-{i // 2}" if groups else ""))
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


_SCRATCH: list[str] = []


def _scratch() -> str:
    """One folder per test process for what CLI runs write outside tmp_path (exports, caches, logs). Under pytest
    it lies in pytest's base temp (conftest.py: kept if a test failed, removed otherwise); elsewhere it is removed
    at exit. CI runs on the developer's own machine: a suite that leaves its outputs behind fills that disk."""
    if not _SCRATCH:
        _SCRATCH.append(tempfile.mkdtemp(prefix="imgcls-tests-"))
        atexit.register(shutil.rmtree, _SCRATCH[0], ignore_errors=True)
    return _SCRATCH[0]


def use_scratch(folder: Path) -> None:
    _SCRATCH[:] = [str(folder)]


def run_cli(
    script: str, *overrides: str, cwd: Path = ROOT, check: bool = True, timeout: int = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `python <script> overrides...` as a user would; fail with its output on a non-zero exit."""
    # IMGCLS_ROOT moves paths.data_dir (exports, caches) and paths.log_dir away from the clone.
    full_env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "PYTHONWARNINGS": "ignore",
        "IMGCLS_ROOT": _scratch(),
        **(env or {}),
    }
    target = ["-m", script] if script.startswith("imgcls.") else [str(ROOT / script)]  # a module or a script
    proc = subprocess.run(
        [sys.executable, *target, *overrides], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{script} {' '.join(overrides)} exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


def compose(config_name: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The config exactly as the CLI would compose it (Hydra's compose API, no run dir created)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from imgcls.utils.resolvers import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


# Overrides that make a CLI training run take seconds: a tiny timm model, small inputs, no progress bar.
FAST = (
    "model=resnet10t",
    "model.name=test_resnet",
    "data.image_size=32",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "loader.batch_size=16",
    "loader.num_workers=0",
    "callbacks.progress_bar=null",
    "callbacks.pictures=null",  # ~3 s of matplotlib per run; the runs whose pictures are checked use the next one
    "print_config=false",
)
FAST_WITH_PICTURES = tuple(o for o in FAST if o != "callbacks.pictures=null")


# ---- tasks in-process: the CLI's config and run dir, without a new interpreter --------------------------------
TASKS = {
    "train": "imgcls.tasks.train:train",
    "predict": "imgcls.tasks.predict:predict",
    "eda": "imgcls.tasks.eda:eda",
    "bench": "imgcls.tasks.bench:bench",
    "export": "imgcls.tasks.export:export",
    "eval": "imgcls.tasks.eval:evaluate",
    "shards": "imgcls.tasks.shards:shards",
}


@dataclass
class TaskRun:
    """What an in-process run left: its run dir, the task's return value and the run's log (what the console
    showed: Hydra logs every record to both)."""

    run_dir: Path
    value: Any
    log: str


def run_task(config_name: str, *overrides: str, run_dir: Path, env: dict | None = None) -> TaskRun:
    """`python <config_name>.py overrides... hydra.run.dir=<run_dir>` in this process: the config composed by
    Hydra's compose API as the CLI composes it, the run dir, `.hydra/` and the log file made by Hydra's own
    `run_job`, then the task function. A ConfigError reaches the caller as itself: the CLI's exit status 2 is
    for single Hydra RUNs only (cli/wrapper.py), and a composed config is not one. Global state a run changes
    (logging, warnings, RNGs, env vars, Lightning's rank, the PIL pixel limit, torch flags, Hydra's run config)
    is put back after."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra._internal.callbacks import Callbacks  # what Hydra.run gives run_job
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import run_job
    from hydra.types import HydraContext

    from imgcls.utils.resolvers import register_resolvers

    module, name = TASKS[config_name].split(":")
    task = getattr(importlib.import_module(module), name)  # imported first: what importing changes stays
    args = [*overrides, f"hydra.run.dir={run_dir}"]
    with isolated_state(env):
        register_resolvers()
        if config_name == "train":  # train.py's `ckpt_path=last|<run dir>` step (cli/entry.py)
            from imgcls.resume.runs import resolve_resume

            args = resolve_resume(args, str(ROOT / "configs"), config_name)
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=args, return_hydra_config=True)
            callbacks = Callbacks(cfg)
            context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=callbacks)
            callbacks.on_run_start(config=cfg, config_name=config_name)
            job = run_job(task, cfg, "hydra.run.dir", None, hydra_context=context, configure_logging=True)
            callbacks.on_run_end(config=cfg, config_name=config_name, job_return=job)
        log_file = Path(run_dir) / f"{cfg.task_name}.log"
        log = log_file.read_text() if log_file.exists() else ""
        return TaskRun(Path(run_dir), job.return_value, log)  # return_value raises the task's exception


@dataclass
class Exit:
    """What `python <script> ...` would have left: exit status and console output (as subprocess.run's)."""

    returncode: int
    stdout: str
    stderr: str


def run_main(script: str, *args: str, env: dict | None = None) -> Exit:
    """`python <script> args...` in this process: the script's own `main()` with `sys.argv` set (Hydra's
    argument parsing, our error translation and exit status, Hydra's logging set up by Hydra), the console
    output captured. For what a command prints and its exit status; the tests that need a real process (the
    exit status as the shell sees it, SIGKILL, DDP, launchers) use run_cli. An exception nothing caught is what
    the interpreter would print: exit status 1 and its traceback on stderr. Unlike a fresh `python train.py`,
    Lightning's loggers here print through the root logger (pytest had handlers when Lightning was imported),
    so a line printed twice by the CLI is not seen twice here: tests/test_quiet_run.py is a real process."""
    import io
    import runpy
    import traceback

    from hydra.core.global_hydra import GlobalHydra

    module = script[:-3] if script.endswith(".py") else script
    path = ROOT / script if script.endswith(".py") else None
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv[:]
    # Console handlers made before this run (e.g. Lightning's, at import) write to the streams they were given:
    # pointed at the captured ones for the run, so what they print is seen too.
    consoles = {
        id(s): buf for s, buf in ((sys.stdout, out), (sys.stderr, err), (sys.__stdout__, out), (sys.__stderr__, err))
    }
    handlers = [
        (h, h.stream)
        for lg in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        if isinstance(lg, logging.Logger)
        for h in lg.handlers
        if type(h) is logging.StreamHandler and id(h.stream) in consoles
    ]
    for handler, stream in handlers:
        handler.setStream(consoles[id(stream)])
    with isolated_state(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        sys.argv = [str(path or module), *args]
        try:
            entry = runpy.run_path(str(path)) if path else vars(importlib.import_module(module))
            entry["main"]()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                err.write(exc.code + "\n")
        except Exception:
            traceback.print_exc(file=err)
            code = 1
        finally:
            sys.argv = argv
            GlobalHydra.instance().clear()
            for handler, stream in handlers:
                handler.setStream(stream)
    return Exit(code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def isolated_state(env: dict | None = None):
    """Run a task as if in a fresh process, then restore what it changed in this one."""
    import random
    import warnings

    import torch
    from hydra.core.hydra_config import HydraConfig
    from lightning.fabric.utilities import rank_zero as fabric_rank_zero
    from lightning.pytorch.utilities import rank_zero as pl_rank_zero
    from lightning_utilities.core import rank_zero as utils_rank_zero
    from PIL import Image

    from imgcls.feeding import image_io

    saved_env = dict(os.environ)
    cwd = os.getcwd()
    ranks = [
        (m.rank_zero_only, getattr(m.rank_zero_only, "rank", None))
        for m in (fabric_rank_zero, pl_rank_zero, utils_rank_zero)
    ]
    loggers = {
        name: (lg.level, list(lg.handlers), lg.propagate, lg.disabled)
        for name, lg in [("", logging.getLogger()), *logging.Logger.manager.loggerDict.items()]
        if isinstance(lg, logging.Logger)
    }
    rngs = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch_flags = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.get_num_threads(),
        torch.get_float32_matmul_precision(),
    )
    pixels = Image.MAX_IMAGE_PIXELS, image_io._max_pixels
    hydra_config = HydraConfig.instance().cfg  # a run's (its mode decides how task_wrapper ends a failure)
    os.environ.update({"WANDB_MODE": "disabled", "IMGCLS_ROOT": _scratch(), **(env or {})})
    try:
        with warnings.catch_warnings():
            yield
    finally:
        for name, (level, handlers, propagate, disabled) in loggers.items():
            lg = logging.getLogger(name or None)
            for handler in set(lg.handlers) - set(handlers):  # the run's own (its log file): flushed and closed
                handler.close()
            lg.setLevel(level)
            lg.handlers[:] = handlers
            lg.propagate, lg.disabled = propagate, disabled
        torch.set_rng_state(rngs[0])
        np.random.set_state(rngs[1])
        random.setstate(rngs[2])
        torch.use_deterministic_algorithms(torch_flags[0], warn_only=torch_flags[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = torch_flags[2:4]
        torch.set_num_threads(torch_flags[4])
        torch.set_float32_matmul_precision(torch_flags[5])
        Image.MAX_IMAGE_PIXELS, image_io._max_pixels = pixels
        HydraConfig.instance().cfg = hydra_config
        for obj, rank in ranks:
            if rank is not None:
                obj.rank = rank
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(cwd)


# ---- the network guard: a process that tries to reach beyond this machine fails, and the attempt is logged -----
# A `sitecustomize.py` on PYTHONPATH (so it also loads in DataLoader workers and spawned processes): it refuses
# every Python-level connection or name lookup beyond this machine and records the attempt, so an attempt that a
# library catches and swallows (an update check, a hub retry) still fails the test. Loopback and AF_UNIX stay
# open (multiprocessing, gloo). Code outside Python (e.g. W&B's `wandb-core` binary) is not covered.
GUARD = '''
"""Test-only network guard (tests/test_offline.py): non-local connections and lookups raise and are logged."""
import ipaddress
import os
import re
import socket


class NetworkBlocked(OSError):
    pass


def _is_local(host):
    if isinstance(host, bytes):
        host = host.decode()
    host = "" if host is None else str(host).split("%")[0].lower()
    if host in ("", "localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # any other name needs a DNS lookup
    return ip.is_loopback or ip.is_unspecified


def _block(what, target):
    message = f"network guard: {what} to {target!r} blocked (pid {os.getpid()})"
    with open(os.environ["NETWORK_GUARD_LOG"], "a") as log:
        log.write(message + "\\n")
    raise NetworkBlocked(message)


def _guarded(method, what):
    def guarded(self, address):
        if self.family != getattr(socket, "AF_UNIX", None) and isinstance(address, tuple) and not _is_local(address[0]):
            _block(what, address)
        return method(self, address)
    return guarded


def _guarded_host(function, what):
    def guarded(host, *args, **kwargs):
        name = host[0] if isinstance(host, tuple) else host
        if not _is_local(name):
            _block(what, host)
        return function(host, *args, **kwargs)
    return guarded


socket.socket.connect = _guarded(socket.socket.connect, "connect")
socket.socket.connect_ex = _guarded(socket.socket.connect_ex, "connect_ex")
socket.create_connection = _guarded_host(socket.create_connection, "create_connection")
socket.getaddrinfo = _guarded_host(socket.getaddrinfo, "getaddrinfo")
'''


def network_guard(folder: Path) -> tuple[dict[str, str], Path]:
    """(env for run_cli, the attempts log). The log exists only if something tried the network."""
    (folder / "guard").mkdir(parents=True)
    (folder / "guard" / "sitecustomize.py").write_text(GUARD)
    log = folder / "network_attempts.log"
    path = os.pathsep.join(p for p in (str(folder / "guard"), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "NETWORK_GUARD_LOG": str(log)}, log


def network_attempts(log: Path) -> str:
    return log.read_text() if os.path.exists(log) else ""


def error_line(proc) -> str:
    """The message the run ended with: its `SomeConfigError: <message>` line, after checking that the run
    failed with exit status 2 and printed one line, no traceback (a setting to fix is not a crash)."""
    out = proc.stdout + proc.stderr
    found = re.findall(r"ConfigError: (.+)$", out, flags=re.M)
    assert proc.returncode == 2 and len(found) == 1 and "Traceback" not in out, out[-3000:]
    assert "HYDRA_FULL_ERROR" not in out and "Error executing job" not in out, out[-3000:]  # nothing of Hydra's
    return found[-1]
