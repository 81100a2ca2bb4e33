"""Offline by default: the default training paths run with the network blocked, and never even try it.

The block is a `sitecustomize.py` on PYTHONPATH (tests/helpers.py's GUARD; so it also loads in DataLoader workers
and spawned processes): it refuses every Python-level connection or name lookup beyond this machine and records
the attempt, so an attempt that a library catches and swallows (an update check, a hub retry) still fails the
test. Loopback and AF_UNIX stay open (multiprocessing, gloo). Code outside Python (e.g. W&B's `wandb-core`
binary) is not covered. The guarded training runs are conftest.py's `wandb_run` and `default_run` (shared with
test_tracking and test_train_cli, which check what they recorded).
"""

from __future__ import annotations

import os
import textwrap

import pytest
from helpers import network_attempts, network_guard, read_metrics, run_cli

pytestmark = pytest.mark.slow

PROBE = textwrap.dedent("""
    import socket
    for name, attempt in [("create_connection", lambda: socket.create_connection(("1.1.1.1", 443), timeout=5)),
                          ("connect", lambda: socket.socket().connect(("1.1.1.1", 443))),
                          ("connect_ex", lambda: socket.socket().connect_ex(("1.1.1.1", 443))),
                          ("getaddrinfo", lambda: socket.getaddrinfo("pypi.org", 443))]:
        try:
            attempt()
            print(name, "CONNECTED")
        except OSError as exc:
            print(name, type(exc).__name__, exc)
    server = socket.create_server(("127.0.0.1", 0))
    socket.create_connection(server.getsockname(), timeout=5).close()
    a, b = socket.socketpair()
    print("local ok")
""")


@pytest.fixture
def guard(tmp_path) -> tuple[dict[str, str], os.PathLike]:
    """(env for run_cli, the attempts log). The log exists only if something tried the network."""
    return network_guard(tmp_path)


def test_the_guard_blocks_the_internet_but_not_this_machine(guard, tmp_path):
    env, log = guard
    (tmp_path / "probe.py").write_text(PROBE)
    out = run_cli(str(tmp_path / "probe.py"), env=env).stdout
    assert "CONNECTED" not in out
    assert out.count("NetworkBlocked network guard:") == 4, out
    assert "create_connection to ('1.1.1.1', 443) blocked" in out and "getaddrinfo to 'pypi.org' blocked" in out
    assert "local ok" in out  # loopback TCP and AF_UNIX still work
    assert network_attempts(log).count("blocked") == 4


def test_folder_training_with_wandb_never_touches_the_network(wandb_run):
    """The two-job folder multirun with logger=wandb and no credentials (conftest.py; test_tracking checks each
    job went offline)."""
    run_dir, _, log = wandb_run
    assert network_attempts(log) == ""
    assert read_metrics(run_dir)["epochs"] == 2


@pytest.mark.timeout(1800)  # conftest.py's default_run may start here: an epoch of 4,500 digits
def test_default_data_and_loader_workers_never_touch_the_network(default_run):
    """The default run (MNIST, default loader workers: the guard loads in each worker too)."""
    run_dir, log = default_run
    assert network_attempts(log) == ""
    assert read_metrics(run_dir)["epochs"] == 1
