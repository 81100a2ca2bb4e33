"""Shared fixtures. Every test is offline and writes only under pytest's tmp_path.

Trained runs that several modules only read are session fixtures here: each trains once per session.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("WANDB_MODE", "disabled")

from helpers import (  # noqa: E402
    FAST,
    FAST_WITH_PICTURES,
    make_image_tree,
    make_manifest,
    network_guard,
    run_cli,
    run_task,
    use_scratch,
)

import imgcls  # noqa: E402,F401  (offline environment defaults)


@pytest.fixture(scope="session", autouse=True)
def _cli_scratch(tmp_path_factory):
    """CLI runs' outputs outside tmp_path in pytest's base temp: left to look into when a test failed."""
    use_scratch(tmp_path_factory.mktemp("cli-scratch"))


# ---- how many Python interpreters the tests start (CLI runs): shown at the end of every session --------------
_STARTS: list[str] = []
_popen_init = subprocess.Popen.__init__


def _counting_init(self, args, *rest, **kwargs):
    ours = isinstance(args, (list, tuple)) and args and str(args[0]) == sys.executable
    if ours and list(map(str, args[1:3])) != ["-u", "-c"]:  # not pytest-xdist's own workers
        _STARTS.append(" ".join(str(a) for a in args[1:3]))
    _popen_init(self, args, *rest, **kwargs)


subprocess.Popen.__init__ = _counting_init
_WORKER_STARTS: list[int] = []  # under pytest-xdist: each worker's count, reported back to the controller


def pytest_sessionfinish(session):
    if hasattr(session.config, "workeroutput"):  # an xdist worker
        session.config.workeroutput["interpreters"] = len(_STARTS)


@pytest.hookimpl(optionalhook=True)  # xdist's hook, on the controller; absent without xdist (-p no:xdist)
def pytest_testnodedown(node, error):
    _WORKER_STARTS.append(getattr(node, "workeroutput", {}).get("interpreters", 0))


def pytest_terminal_summary(terminalreporter):
    count = len(_STARTS) + sum(_WORKER_STARTS)
    terminalreporter.write_line(f"{count} Python interpreters started by the tests (real CLI runs)")


# ---- composing fast: each config file parsed once per session --------------------------------------------------
def _reuse_parsed_config_files() -> bool:
    """Hydra parses every YAML file again on each compose (PyYAML in pure Python: ~0.15 s of a ~0.3 s compose),
    and the suite composes some 300 times in-process. Here each file's parse is kept while its mtime, size and
    inode are unchanged, and every read gets a deep copy (Hydra edits what it loads), so results are the same.
    Tests only: CLI runs in a subprocess parse as users' do. A Hydra whose config sources changed shape just runs
    without it (slower)."""
    import copy

    from hydra._internal.sources_registry import SourcesRegistry
    from hydra.core.plugins import Plugins
    from hydra.plugins.config_source import ConfigResult

    parsed: dict[tuple, ConfigResult] = {}

    def reuse(load):
        def load_config(self, config_path: str) -> ConfigResult:
            file = os.path.join(self.path, self._normalize_file_name(config_path))
            info = os.stat(file) if os.path.exists(file) else None  # None: a package's file
            stamp = None if info is None else (info.st_mtime_ns, info.st_size, info.st_ino)
            key = (type(self).__name__, self.path, config_path, stamp)
            if key not in parsed:
                parsed[key] = load(self, config_path)
            hit = parsed[key]
            return ConfigResult(hit.provider, hit.path, copy.deepcopy(hit.config), dict(hit.header))

        return load_config

    Plugins.instance()  # its plugin scan re-imports the source modules: patch the classes it registered
    for scheme in ("file", "pkg"):
        source = SourcesRegistry.instance().resolve(scheme)
        source.load_config = reuse(source.load_config)
    return True


try:
    _reuse_parsed_config_files()
except (ImportError, AttributeError) as error:  # pragma: no cover - a Hydra upgrade: the suite runs slower
    warnings.warn(f"tests/conftest.py: composing without reused config parses ({error!r})", stacklevel=1)


# ---- running on several CPUs (`make test` runs pytest-xdist with --dist loadgroup) ---------------------------
# A fixture shared by several tests is built once per worker that runs one of them, so the tests sharing an
# expensive one are kept on one worker: those using a session run below, and those sharing a fixture their
# module defines (module- or session-scoped; the expensive ones are session-scoped, so that a worker running
# their tests with others in between still builds them once).
SHARED_RUNS = {
    "default_run": "mnist",
    "mnist_root": "mnist",
    "wandb_run": "wandb_run",
    "folder_run": "folder_run",
    "deploy_runs": "deploy_runs",  # before mask_root, which it uses: its tests are a group of their own
    "mask_root": "mask",
}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the marks into the test ids
def pytest_collection_modifyitems(config, items):
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        names = item.fixturenames
        group = next((SHARED_RUNS[name] for name in SHARED_RUNS if name in names), None)
        if group is None and _uses_a_module_fixture(item):
            group = item.module.__name__
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


class _GroupCheck:
    """After xdist's own hook (in each worker): did the groups reach the test ids its scheduler reads?"""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config, items):
        if not getattr(config.option, "loadgroup", False):
            return
        lost = [i.nodeid for i in items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
        if lost:
            warnings.warn(
                pytest.PytestWarning(
                    f"pytest-xdist ignored the xdist_group of {len(lost)} tests (e.g. {lost[0]}): their shared runs "
                    "are built on every worker (pytest 9.2 with xdist 3.8: pytest-dev/pytest-xdist#1386)"
                ),
                stacklevel=1,
            )


def pytest_configure(config):
    config.pluginmanager.register(_GroupCheck(), "imgcls-xdist-group-check")


def _uses_a_module_fixture(item) -> bool:
    defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", None)
    if defs is None:  # a pytest without it: keep the module together
        return True
    return any(
        d and d[-1].scope in ("module", "session") and str(getattr(d[-1], "baseid", "")).endswith(".py")
        for d in defs.values()
    )


_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:  # each worker (and each CLI run it starts) gets its share of the cores, not all of them
    import torch

    from imgcls.utils.env_report import available_cpus

    _threads = max(1, available_cpus() // _workers)
    torch.set_num_threads(_threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))


@pytest.fixture(scope="session")
def image_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 20 small images; read-only for tests (copy it to modify)."""
    return make_image_tree(tmp_path_factory.mktemp("tree"), per_class=20)


@pytest.fixture(scope="session")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_manifest(tmp_path_factory.mktemp("manifest"), per_class=20)


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real MNIST export (5,000 PNGs) done once per session into a temp data dir."""
    from imgcls.data import MnistSource

    root = tmp_path_factory.mktemp("data") / "mnist5k"
    MnistSource(str(root)).prepare()
    return root


@pytest.fixture(scope="session")
def mask_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated mask-competition folder: 40 train people (280 photos) + 8 eval people, 96x128 pixels."""
    from imgcls.extras.competition.synth_mask import make_mask_dataset

    return make_mask_dataset(
        tmp_path_factory.mktemp("mask") / "competition", people=40, eval_people=8, width=96, height=128, seed=0
    )


# ---- trained runs shared by every test that only reads them --------------------------------------------------
@pytest.fixture(scope="session")
def deploy_runs(image_tree, mask_root, tmp_path_factory):
    """Three one-epoch checkpoints for export and eval (test_export, test_eval): CNN and ViT on the image folder
    (with a test split), a multi-head one on the mask data."""
    root = tmp_path_factory.mktemp("export_runs")
    folder = ("data=folder", f"data.root={image_tree}", "data.test_fraction=0.3", *FAST)
    made = {}
    for name, overrides in {
        "cnn": folder,
        "vit": (*folder, "model.name=test_vit"),
        "multi": (
            "experiment=mask",
            f"data.root={mask_root}",
            *FAST,
            "model.pretrained=false",
            "data.image_size=[40,32]",
            "data.cache_size=null",
            "trainer.limit_train_batches=2",
            f"paths.data_dir={root / 'data'}",
        ),
    }.items():
        run_task("train", *overrides, run_dir=root / name)
        made[name] = root / name
    return made


@pytest.fixture(scope="session")
def folder_run(image_tree, tmp_path_factory) -> Path:
    """One run trained in-process on the generated image folder (with a test split): read by test_train_cli
    (what a run writes) and test_predict (the checkpoint round trip)."""
    run_dir = tmp_path_factory.mktemp("folder_run")
    run_task("train", "data=folder", f"data.root={image_tree}", "data.test_fraction=0.2", *FAST, run_dir=run_dir)
    return run_dir


@pytest.fixture(scope="session")
def wandb_run(image_tree, tmp_path_factory):
    """`python train.py -m logger=wandb seed=1,2` on the image folder, 2 epochs, with the network blocked
    (tests/helpers.py's guard), no W&B credentials and WANDB_MODE unset: each job must go offline on its own, not
    fail, hang or try the network, as its own W&B run. Read by test_tracking (what W&B and the runs recorded) and
    test_offline (no network attempt). Returns (job 0's run dir, the finished process, the guard's attempts log)."""
    root = tmp_path_factory.mktemp("wandb_run")
    env, attempts_log = network_guard(root)
    no_credentials = {
        "WANDB_MODE": "",
        "WANDB_API_KEY": "",
        "NETRC": str(root / "no-netrc"),
        **{k: str(root / "wandb-home") for k in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR")},
    }
    proc = run_cli(
        "train.py",
        "-m",
        "logger=wandb",
        "seed=1,2",
        "data=folder",
        f"data.root={image_tree}",
        *FAST_WITH_PICTURES,  # test_tracking checks them
        "trainer.max_epochs=2",
        f"hydra.sweep.dir={root / 'sweep'}",
        env={**env, **no_credentials},
    )
    return root / "sweep" / "0", proc, attempts_log


@pytest.fixture(scope="session")
def default_run(mnist_root, tmp_path_factory):
    """The default recipe (`make train`: MNIST digits, default loader workers) as `python train.py`, 1 epoch
    instead of 10 (val/acc 0.974 here), with the network blocked. Returns (run dir, the guard's attempts log)."""
    root = tmp_path_factory.mktemp("default_run")
    env, attempts_log = network_guard(root)
    run_cli(
        "train.py",
        "trainer.max_epochs=1",
        f"paths.data_dir={mnist_root.parent}",
        "callbacks.progress_bar=null",
        f"hydra.run.dir={root / 'run'}",
        env=env,
        timeout=900,  # an epoch of 4,500 digits: minutes on a loaded 2-core machine
    )
    return root / "run", attempts_log
