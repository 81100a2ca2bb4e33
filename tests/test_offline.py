"""Offline by default: the default training paths run with the network blocked, and never even try it.

The block is a `sitecustomize.py` on PYTHONPATH (so it also loads in DataLoader workers and spawned processes):
it refuses every Python-level connection or name lookup beyond this machine and records the attempt, so an
attempt that a library catches and swallows (an update check, a hub retry) still fails the test. Loopback and
AF_UNIX stay open (multiprocessing, gloo). Code outside Python (e.g. W&B's `wandb-core` binary) is not covered.
"""

from __future__ import annotations

import os
import textwrap

import pytest
from helpers import FAST, read_metrics, run_cli

pytestmark = pytest.mark.slow

GUARD = '''
"""Test-only network guard (tests/test_offline.py): non-local connections and lookups raise and are logged."""
import ipaddress
import os
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
    folder = tmp_path / "guard"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "network_attempts.log"
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "NETWORK_GUARD_LOG": str(log)}, log


def attempts(log) -> str:
    return log.read_text() if os.path.exists(log) else ""


def test_the_guard_blocks_the_internet_but_not_this_machine(guard, tmp_path):
    env, log = guard
    (tmp_path / "probe.py").write_text(PROBE)
    out = run_cli(str(tmp_path / "probe.py"), env=env).stdout
    assert "CONNECTED" not in out
    assert out.count("NetworkBlocked network guard:") == 4, out
    assert "create_connection to ('1.1.1.1', 443) blocked" in out and "getaddrinfo to 'pypi.org' blocked" in out
    assert "local ok" in out  # loopback TCP and AF_UNIX still work
    assert attempts(log).count("blocked") == 4


def test_folder_training_never_touches_the_network(guard, image_tree, tmp_path):
    env, log = guard
    run_cli("train.py", "data=folder", f"data.root={image_tree}", *FAST, f"hydra.run.dir={tmp_path / 'run'}", env=env)
    assert attempts(log) == ""
    assert read_metrics(tmp_path / "run")["epochs"] == 1


def test_default_data_with_wandb_runs_offline_without_credentials(guard, mnist_root, tmp_path):
    """The default run (MNIST, default loader workers) with logger=wandb, no W&B credentials and no W&B mode set:
    W&B must choose offline on its own and say how to sync later."""
    env, log = guard
    no_credentials = {
        "WANDB_MODE": "",
        "WANDB_API_KEY": "",
        "NETRC": str(tmp_path / "no-netrc"),
        **{k: str(tmp_path / "wandb-home") for k in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR")},
    }
    proc = run_cli(
        "train.py",
        "logger=wandb",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=5",
        f"paths.data_dir={mnist_root.parent}",
        "callbacks.progress_bar=null",
        "print_config=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        env={**env, **no_credentials},
    )
    assert attempts(log) == ""
    assert "W&B ran offline (no credentials found). Upload later with: wandb sync" in proc.stdout + proc.stderr
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert read_metrics(tmp_path / "run")["epochs"] == 1
