"""Likely mistakes end in one line that names the key, its value and the fix: `<key>=<value> ...: <fix>`.

Unit tests where the check lives in one function (our checks, and `user_error`, which turns what Hydra,
omegaconf, torch and Lightning raise into that line); the command line where what matters is what the user
reads: one line, exit status 2, no traceback on the console (it is in the run's log file), and a traceback for a
bug. Each mistake goes through the script's own `main()` in this process (tests/helpers.py's `run_main`: Hydra's
argument parsing, logging and exit status, without a new interpreter); two real processes check that the shell
sees the same (one mistake, one bug). Covered elsewhere: data.val_fraction out of range (test_split).
"""

from __future__ import annotations

import os
import re
import shutil
import traceback
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import CLASSES, FAST, ROOT, compose, error_line, run_cli, run_main
from omegaconf import OmegaConf

from imgcls.cli.preflight import check_command_line
from imgcls.cli.user_errors import user_error
from imgcls.data.sources import DataConfigError
from imgcls.data.split import assign_splits
from imgcls.data.transforms import as_hw
from imgcls.feeding.loaders import check_loader_settings, make_loader
from imgcls.models import Classifier, ModelConfigError, create_classifier
from imgcls.models.checkpoint import checkpoint_paths, load_classifier, load_ensemble, read_checkpoint
from imgcls.utils.errors import ConfigError

SPEC = {
    "class_names": list(CLASSES),
    "channels": 3,
    "image_size": [32, 32],
    "crop": {"mode": "none"},
    "mean": None,
    "std": None,
}


def raised(call, *args, **kwargs) -> BaseException:
    """The exception `call(*args, **kwargs)` raises, as the task wrapper would catch it."""
    with pytest.raises(Exception) as caught:
        call(*args, **kwargs)
    return caught.value


def translated(exc: BaseException, cfg=None) -> str:
    error = user_error(exc, cfg)
    assert isinstance(error, ConfigError), exc
    message = str(error)
    assert "\n" not in message, message
    return message


# ---- user_error: what Hydra, omegaconf, torch and Lightning raise, as one line ----------------------------
def test_a_config_error_raised_inside_instantiate_is_ours_unchanged():
    cfg = OmegaConf.create({"data": {"_target_": "imgcls.data.transforms.as_hw", "image_size": [10]}})
    exc = raised(hydra.utils.instantiate, cfg.data)
    assert type(exc).__name__ == "InstantiationException"
    assert user_error(exc, cfg) is exc.__cause__
    assert str(exc.__cause__).startswith("data.image_size=[10] is not a size: use an int")


@pytest.mark.parametrize("value", [[10], [0, 32], "big", [32, 32, 3]])
def test_image_size_that_is_not_a_size(value):
    with pytest.raises(ConfigError, match=rf"^data\.image_size={re.escape(repr(value))} is not a size"):
        as_hw(value)


def test_unknown_key_of_an_instantiated_group_names_the_closest_setting():
    cfg = OmegaConf.create({"trainer": {"_target_": "lightning.pytorch.Trainer", "max_epoch": 3}})
    message = translated(raised(hydra.utils.instantiate, cfg.trainer), cfg)
    assert message.startswith(
        "trainer.max_epoch is not a setting of lightning.pytorch.Trainer: did you mean trainer.max_epochs? "
        "its settings are accelerator, strategy, devices,"
    ), message


def test_unknown_key_of_a_partial_found_when_it_is_called():
    cfg = OmegaConf.create({"model": {"optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lrr": 1}}})
    optimizer = hydra.utils.instantiate(cfg.model.optimizer)
    message = translated(raised(optimizer, [torch.zeros(1, requires_grad=True)]), cfg)
    assert message.startswith(
        "model.optimizer.lrr is not a setting of torch.optim.AdamW: did you mean model.optimizer.lr?"
    )


def test_invalid_learning_rate_names_the_optimizer_key():
    cfg = OmegaConf.create({"model": {"optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": -1}}})
    optimizer = hydra.utils.instantiate(cfg.model.optimizer)
    assert translated(raised(optimizer, [torch.zeros(1, requires_grad=True)]), cfg) == (
        "model.optimizer.lr=-1 is refused by torch.optim.AdamW (Invalid learning rate: -1): use a positive value, "
        "e.g. 1e-3"
    )


@pytest.mark.parametrize("key,value", [("batch_size", 0), ("eval_batch_size", -4)])
def test_batch_size_torch_refuses_names_the_loader_key(key, value):
    cfg = compose("train", [f"loader.{key}={value}", "loader.num_workers=0"])
    exc = raised(make_loader, list(range(10)), cfg.loader, train=key == "batch_size")
    assert translated(exc, cfg).startswith(f"loader.{key}={value} is refused by torch's DataLoader (batch_size should")


@pytest.mark.parametrize(
    "config,read,expected",
    [
        ({"ckpt_path": "???"}, "ckpt_path", "ckpt_path must be set (it is ??? in the config): add ckpt_path=<value>"),
        (
            {"data": {"root": "???", "source": {"root": "${data.root}"}}},
            "data.source.root",
            "data.root must be set (it is ??? in the config, needed by data.source.root): add data.root=<value>",
        ),
        ({"model": {"lr": "${nowhere}"}}, "model.lr", "model.lr: Interpolation key 'nowhere' not found"),
    ],
)
def test_omegaconf_errors_name_the_key(config, read, expected):
    cfg = OmegaConf.create(config)
    assert translated(raised(OmegaConf.select, cfg, read, throw_on_missing=True), cfg).startswith(expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_trainer_without_a_gpu_points_to_trainer_cpu(tmp_path):
    cfg = compose("train", ["trainer=gpu", f"paths.output_dir={tmp_path}"])
    exc = raised(hydra.utils.instantiate, cfg.trainer)
    assert translated(exc, cfg) == (
        "trainer.accelerator='gpu' needs a GPU and torch finds none on this machine: use trainer=cpu "
        "(or trainer.accelerator=auto: a GPU when there is one)"
    )


def test_a_target_that_cannot_be_imported():
    cfg = OmegaConf.create({"callbacks": {"mine": {"_target_": "my_callbacks.Mine"}}})
    assert translated(raised(hydra.utils.instantiate, cfg.callbacks.mine), cfg).startswith(
        "callbacks.mine._target_='my_callbacks.Mine' cannot be imported (ImportError:"
    )


def takes_a(a):
    return a


def bug_unknown_keyword():
    return takes_a(b=1)  # the code's own mistake: no config key is named `b`


@pytest.mark.parametrize(
    "call",
    [
        lambda: (_ for _ in ()).throw(RuntimeError("boom")),
        lambda: {}["key"],
        lambda: OmegaConf.create({"a": 1}, flags={"struct": True}).b,  # code reading a key the config lacks
        lambda: OmegaConf.create({"a": 1}).a.nope,
        lambda: int("x"),  # a ValueError outside instantiate, not from torch
        lambda: open(ROOT / "no such file"),
        lambda: sorted([1, "a"]),
        bug_unknown_keyword,
    ],
)
def test_bugs_are_not_settings(call):
    cfg = OmegaConf.create({"trainer": {"_target_": "lightning.pytorch.Trainer"}, "loader": {"batch_size": 2}})
    assert user_error(raised(call), cfg) is None


def _raised_in_a_spawned_rank(error: BaseException) -> BaseException:
    """What torch.multiprocessing.spawn raises in the main process when a rank raised `error` (ddp_spawn)."""
    from torch.multiprocessing.spawn import ProcessRaisedException

    try:
        raise error
    except Exception:
        trace = traceback.format_exc()  # as torch sends it back from the rank
    return ProcessRaisedException(f"\n\n-- Process 0 terminated with the following error:\n{trace}", 0, 1234)


def test_a_config_error_raised_in_a_spawned_ddp_rank_is_its_one_line():
    line = "loader.batch_size=32: the 42 training images in data.input_dir make no batch for each of 2 DDP processes"
    found = user_error(_raised_in_a_spawned_rank(DataConfigError(line)))
    assert type(found) is DataConfigError and str(found) == line
    assert user_error(_raised_in_a_spawned_rank(ValueError("a bug"))) is None


def test_sweep_summary_lists_the_one_line_not_the_library_error():
    from imgcls.extras.sweep_summary import _first_line

    cfg = OmegaConf.create({"trainer": {"_target_": "lightning.pytorch.Trainer", "max_epoch": 3}})
    error = user_error(raised(hydra.utils.instantiate, cfg.trainer), cfg)
    assert _first_line(error) == f"ConfigError: {error}" and isinstance(error.__cause__, Exception)


def test_bug_inside_instantiate_is_not_a_setting():
    cfg = OmegaConf.create({"callbacks": {"boom": {"_target_": "boom.Boom"}}})
    assert user_error(raised(hydra.utils.instantiate, cfg.callbacks.boom), cfg) is None


# ---- a loader key that nothing reads -----------------------------------------------------------------------
def test_loader_key_nothing_reads_names_the_closest_setting():
    with pytest.raises(ConfigError) as caught:
        check_loader_settings({"batch_size": 8, "num_worker": 2})
    assert str(caught.value).startswith(
        "loader.num_worker is not a loader setting (nothing reads it): did you mean loader.num_workers=2? the "
        "settings are batch_size, eval_batch_size, num_workers,"
    )


def test_every_documented_loader_key_is_accepted():
    loader = compose("train", ["loader.num_workers=0"]).loader  # configs/loader/default.yaml, as composed
    check_loader_settings(loader)
    assert len(make_loader(list(range(10)), loader, train=False)) == 1
    with pytest.raises(ConfigError, match=r"^loader\.workers is not a loader setting"):
        make_loader(list(range(10)), {**loader, "workers": 2}, train=False)


def test_a_start_method_this_platform_lacks_is_named():
    with pytest.raises(ConfigError, match=r"^loader\.start_method='threads' is not available here: use null or one"):
        make_loader(list(range(10)), {"num_workers": 1, "start_method": "threads"}, train=False)


# ---- data.image_size the model cannot take ---------------------------------------------------------------
def test_image_size_too_small_for_a_cnn_names_the_key_and_a_size_that_works():
    with pytest.raises(ModelConfigError) as caught:
        create_classifier("test_convnext", num_classes=3, image_size=4)
    message = str(caught.value)
    assert message.startswith("data.image_size=[4, 4] does not fit model.name='test_convnext' (")
    suggested = re.search(r"use a larger data.image_size, e.g. \[(\d+), (\d+)\]", message)
    assert suggested, message
    create_classifier("test_convnext", num_classes=3, image_size=[int(v) for v in suggested.groups()])


def test_fixed_size_vit_points_to_its_size_or_img_size():
    with pytest.raises(ModelConfigError) as caught:
        create_classifier("vit_tiny_patch16_224", num_classes=3, image_size=[32, 32])
    message = str(caught.value)
    assert message.startswith("data.image_size=[32, 32] does not fit model.name='vit_tiny_patch16_224' (Input height")
    assert "set data.image_size=[224, 224] (its fixed size)" in message
    assert "++model.model_kwargs.img_size=[32, 32]" in message
    create_classifier("vit_tiny_patch16_224", num_classes=3, image_size=[32, 32], kwargs={"img_size": [32, 32]})


def test_size_check_changes_no_weight_statistic_mode_or_random_state():
    torch.manual_seed(0)
    plain = create_classifier("test_resnet", num_classes=3)
    rng_after_plain = torch.get_rng_state()
    torch.manual_seed(0)
    checked = create_classifier("test_resnet", num_classes=3, image_size=[32, 32])
    assert checked.training and torch.equal(torch.get_rng_state(), rng_after_plain)
    for (name, a), b in zip(plain.state_dict().items(), checked.state_dict().values()):
        assert torch.equal(a, b), name  # BatchNorm running statistics included


def test_classifier_checks_the_data_image_size():
    with pytest.raises(ModelConfigError, match=r"^data\.image_size=\[4, 4\] does not fit model\.name='test_convnext'"):
        Classifier("test_convnext", {**SPEC, "image_size": [4, 4]})


# ---- splits that cannot be stratified ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,key",
    [({"val_fraction": 0.1}, "data.val_fraction=0.1"), ({"val_fraction": 0.1, "n_folds": 5}, "data.n_folds=5")],
)
def test_too_few_images_per_class_for_the_split_names_the_key(kwargs, key):
    table = pd.DataFrame({"label": np.repeat([0, 1, 2], 4)})  # 12 images: 10% is fewer than one per class
    with pytest.raises(DataConfigError, match=f"^{re.escape(key)} "):
        assign_splits(table, **kwargs)


# ---- checkpoints: tampered, truncated, foreign, mismatched ------------------------------------------------
class RunsCode:
    """Unpickling this runs a shell command: what a tampered file does under torch.load(weights_only=False)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def save_checkpoint(
    path: Path, spec: dict = SPEC, name: str = "test_resnet", state_dict: dict | None = None, **hparams
) -> Path:
    """The parts of a train.py checkpoint that predict reads: weights and hyper-parameters."""
    model = Classifier(name, spec)
    torch.save(
        {
            "state_dict": model.state_dict() if state_dict is None else state_dict,
            "hyper_parameters": {**model.hparams, **hparams},
            "epoch": 0,
        },
        path,
    )
    return path


def tampered(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.ckpt"
    if kind == "runs_code":
        torch.save({"state_dict": {}, "hyper_parameters": {"data_spec": RunsCode(tmp_path / "pwned")}}, path)
    elif kind == "truncated":
        data = save_checkpoint(tmp_path / "whole.ckpt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    else:  # e.g. a Git LFS pointer or an HTML error page saved under the checkpoint's name
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 42\n")
    return path


@pytest.mark.parametrize(
    "kind,expected",
    [
        (
            "runs_code",
            r"holds pickled code \((posix|nt)\.system\), not just tensors: refused without running it "
            r"\(weights_only=True\); use a \.ckpt written by train\.py",
        ),
        ("truncated", r"is truncated or corrupted \(PytorchStreamReader failed reading zip archive.*\): copy it again"),
        ("empty", r"is truncated or corrupted \(EOFError\): copy it again"),
        (
            "foreign",
            r"is not a PyTorch weights file or holds objects weights_only=True refuses \(.+\): use a "
            r"\.ckpt written by train\.py",
        ),
    ],
)
def test_unloadable_checkpoint_is_refused_naming_the_file(tmp_path, kind, expected):
    path = tampered(tmp_path, kind)
    with pytest.raises(ModelConfigError) as caught:
        read_checkpoint(path)
    message = str(caught.value)
    assert re.match(f"ckpt_path='{re.escape(str(path))}' {expected}", message), message
    assert "\n" not in message and "weights_only=False" not in message  # one line; never suggest the unsafe load
    assert not (tmp_path / "pwned").exists()


def test_pretrained_weights_that_run_code_are_refused(tmp_path):
    path = tampered(tmp_path, "runs_code")
    with pytest.raises(ModelConfigError, match=rf"^model\.pretrained_path='{re.escape(str(path))}' holds pickled code"):
        create_classifier("test_resnet", num_classes=3, pretrained_path=str(path))
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_whose_weights_do_not_fit_its_model(tmp_path):
    other = Classifier("test_resnet", {**SPEC, "class_names": [str(i) for i in range(10)]})
    path = save_checkpoint(tmp_path / "mixed.ckpt", state_dict=other.state_dict())
    with pytest.raises(ModelConfigError) as caught:
        load_classifier(path)
    assert str(caught.value).startswith(
        f"ckpt_path='{path}': its weights do not fit the model it names "
        "('test_resnet', 3 classes; 2 of another shape, first model.fc.weight "
        "[10, 96] in the file vs [3, 96]): the file was edited"
    )


def test_checkpoint_of_a_model_this_timm_lacks(tmp_path):
    path = save_checkpoint(tmp_path / "future.ckpt", name="test_resnet")
    ckpt = torch.load(path, weights_only=False)
    ckpt["hyper_parameters"]["name"] = "resnet_from_the_future"
    torch.save(ckpt, path)
    with pytest.raises(
        ModelConfigError,
        match=rf"^ckpt_path='{re.escape(str(path))}' cannot be rebuilt here "
        r"\(model.name='resnet_from_the_future' is not a timm model",
    ):
        load_classifier(path)


def test_an_ensemble_must_share_its_classes(tmp_path):
    shapes = save_checkpoint(tmp_path / "shapes.ckpt")
    digits = save_checkpoint(tmp_path / "digits.ckpt", {**SPEC, "class_names": [str(i) for i in range(10)]})
    assert [m.hparams.data_spec["class_names"] for m in load_ensemble([str(shapes)] * 2)] == [list(CLASSES)] * 2
    with pytest.raises(ModelConfigError) as caught:
        load_ensemble([str(shapes), str(digits)])
    assert str(caught.value) == (
        f"ckpt_path='{digits}' has 10 classes ['0', '1', '2', '...'], '{shapes}' 3 classes ['circle', 'square', "
        "'bar']: an ensemble must share its classes; list only checkpoints trained on the same data"
    )


def test_checkpoint_globs_and_lists(tmp_path):
    for fold in (1, 0):
        save_checkpoint(tmp_path / f"fold{fold}.ckpt")
    both = [str(tmp_path / "fold0.ckpt"), str(tmp_path / "fold1.ckpt")]
    assert checkpoint_paths(str(tmp_path / "fold*.ckpt")) == both  # sorted
    assert checkpoint_paths(OmegaConf.create([both[1], str(tmp_path / "*.ckpt")])) == both[::-1]  # de-duplicated
    with pytest.raises(ModelConfigError, match=r"ckpt_path='.*/nope\*.ckpt' matches no file: check the run dir"):
        checkpoint_paths(str(tmp_path / "nope*.ckpt"))


# ---- through the command line ------------------------------------------------------------------------------
def options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "configs" / group).glob("[!_]*.yaml"))  # _common: a base, not a choice


# What Hydra cannot compose (it printed several lines and its HYDRA_FULL_ERROR advice, exit status 1), and new
# top-level keys (it accepted them silently): one line, before any task starts (cli/preflight.py).
@pytest.mark.parametrize(
    "override,expected",
    [
        ("augment=extreme", f"augment=extreme is not an option: use one of {', '.join(options('augment'))}"),
        (
            "model=resnet1000",
            f"model=resnet1000 is not an option: did you mean resnet10t? use one of {', '.join(options('model'))}",
        ),
        ("hydra/launcher=bsic", "hydra/launcher=bsic is not an option: did you mean basic? use one of basic, local, "),
        ("+local=mine", "local=mine is not an option: the group has none (add configs/local/mine.yaml)"),
        (
            "loader.num_worker=2",
            "loader.num_worker is not in the config (nothing reads it): did you mean loader.num_workers?",
        ),
        ("augmnet=strong", "augmnet is not in the config (nothing reads it): did you mean augment?"),
        (
            "model.optimizer.amsgrad=true",
            "model.optimizer.amsgrad is not in the config: model.optimizer builds torch.optim.AdamW, and "
            "model.optimizer.* are its arguments; to pass it amsgrad, add it: +model.optimizer.amsgrad=true",
        ),
        ("+foo=1", "foo is not a setting of train.py (nothing reads it): the top-level settings are augment, "),
        ("++foo.bar=1", "foo is not a setting of train.py (nothing reads it): the top-level settings are augment, "),
        ("+experiment=mask", "+experiment=mask: experiment already has a place in the defaults; pick its option "),
        ("augment=basic,strong", "augment=basic,strong gives several values (a sweep): add -m (--multirun) to run "),
        ("data.image_size=[10", "'data.image_size=[10' cannot be read as an override (no viable alternative at "),
        ("~no_such_key", "Could not delete from config. 'no_such_key' does not exist. (the command line: "),
    ],
)
def test_a_command_line_hydra_cannot_compose_is_one_line(override, expected, tmp_path):
    proc = run_main("train.py", override, f"hydra.run.dir={tmp_path}")
    message = error_line(proc)
    assert message.startswith(expected) and (expected.endswith(" ") or message == expected), message
    assert not (tmp_path / "train.log").exists()  # stopped before Hydra made the run dir


@pytest.mark.parametrize(
    "args",
    [
        ["++seed=3"],
        ["+callbacks.boom._target_=boom.Boom"],
        ["+model.optimizer.amsgrad=true"],
        ["experiment=mask"],
        ["hydra/launcher=local"],
        ["ckpt_path=null", "--cfg", "job"],
        ["hparams_search=optuna", "loader.batch_size=choice(16,32)"],  # hparams_search sets hydra.mode: MULTIRUN
        ["hydra.mode=MULTIRUN", "augment=basic,strong"],
        ["-sc", "install=bash"],
    ],
)
def test_what_hydra_can_compose_passes_the_preflight(args):
    check_command_line(str(ROOT / "configs"), "train", [*args, "hydra.run.dir=/unused"])


def test_hydras_full_error_is_left_to_hydra(monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    check_command_line(str(ROOT / "configs"), "train", ["augment=extreme"])


def test_multiruns_are_left_to_hydra():
    check_command_line(str(ROOT / "configs"), "train", ["-m", "augment=extreme,none"])


@pytest.mark.slow
def test_fold_out_of_range(image_tree, tmp_path):
    proc = run_main(
        "train.py",
        "data=folder",
        f"data.root={image_tree}",
        "data.n_folds=3",
        "data.fold=3",
        *FAST,
        f"hydra.run.dir={tmp_path}",
    )
    assert error_line(proc) == "data.fold=3 must be in 0..2 (data.n_folds=3)"


@pytest.mark.slow
def test_class_with_one_image(image_tree, tmp_path):
    root = shutil.copytree(image_tree, tmp_path / "tree")
    for extra in sorted((root / CLASSES[2]).glob("[!.]*"))[1:]:
        extra.unlink()
    proc = run_main("train.py", "data=folder", f"data.root={root}", *FAST, f"hydra.run.dir={tmp_path / 'run'}")
    message = error_line(proc)
    assert "fewer than 2 images" in message and "data.val_fraction" in message, message


@pytest.mark.slow
def test_predict_competition_data_with_a_checkpoint_of_other_classes(mask_root, tmp_path):
    ckpt = save_checkpoint(tmp_path / "shapes.ckpt")
    proc = run_main(
        "predict.py",
        f"ckpt_path={ckpt}",
        "data=mask",
        f"data.root={mask_root}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert error_line(proc) == (
        f"ckpt_path='{ckpt}' was trained on 3 classes ['circle', 'square', 'bar'], but data.root='{mask_root}' has "
        "18 classes ['wear/male/<30', 'wear/male/30-59', 'wear/male/>=60', '...']: predict this data with a "
        "checkpoint trained on it, or pass input= instead of data="
    )


@pytest.mark.slow
def test_predict_refuses_a_checkpoint_that_would_run_code(image_tree, tmp_path):
    ckpt = tampered(tmp_path, "runs_code")
    proc = run_main("predict.py", f"ckpt_path={ckpt}", f"input={image_tree}", f"hydra.run.dir={tmp_path / 'run'}")
    assert error_line(proc).startswith(f"ckpt_path='{ckpt}' holds pickled code")
    assert not (tmp_path / "pwned").exists()


# ---- every mistake is one line, exit status 2 (the list, and more) --------------------------------
TESTS_ON_PATH = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))}


@pytest.mark.slow
@pytest.mark.parametrize(
    "override,expected",
    [
        ("model.name=not_a_timm_model", "model.name='not_a_timm_model' is not a timm model; "),
        ("data.image_size=[10]", "data.image_size=[10] is not a size: use an int (square, e.g. 224) or [height,"),
        ("data.sampler=weighed", "data.sampler='weighed' is not an option: use random or weighted"),
        ("+loader.num_worker=2", "loader.num_worker is not a loader setting (nothing reads it): did you mean "),
        ("+trainer.max_epoch=2", "trainer.max_epoch is not a setting of lightning.pytorch.Trainer: did you mean "),
        ("model.optimizer.lr=-1", "model.optimizer.lr=-1 is refused by torch.optim.AdamW (Invalid learning rate"),
        ("loader.batch_size=0", "loader.batch_size=0 is refused by torch's DataLoader (batch_size should be a "),
        pytest.param(
            "trainer=gpu",
            "trainer.accelerator='gpu' needs a GPU and torch finds none on this machine: use trainer=cpu",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU"),
        ),
    ],
    ids=lambda value: value if "=" in value and " " not in value else "",
)
def test_a_wrong_setting_ends_in_one_line_naming_the_key(image_tree, tmp_path, override, expected):
    proc = run_main("train.py", *FAST, "data=folder", f"data.root={image_tree}", override, f"hydra.run.dir={tmp_path}")
    assert error_line(proc).startswith(expected)
    log = (tmp_path / "train.log").read_text()
    assert "Traceback (most recent call last)" in log and expected in log  # the details stay in the run's log


@pytest.mark.slow
def test_folder_data_without_its_root(tmp_path):
    proc = run_main("train.py", *FAST, "print_config=true", "data=folder", f"hydra.run.dir={tmp_path}")
    assert error_line(proc) == (
        "data.root must be set (it is ??? in the config, needed by data.source.root): add data.root=<value> to the "
        "command line"
    )


@pytest.mark.slow
def test_predict_without_a_checkpoint(tmp_path):
    proc = run_main("predict.py", f"hydra.run.dir={tmp_path}")
    assert (
        error_line(proc) == "ckpt_path must be set (it is ??? in the config): add ckpt_path=<value> to the command line"
    )


@pytest.mark.slow
@pytest.mark.parametrize("when", ["init", "fit"])
def test_a_bug_still_shows_its_traceback(image_tree, tmp_path, when):
    """Raised while building the callback (in-process) and when training starts (a real `python train.py`)."""
    run = run_cli if when == "fit" else run_main
    proc = run(
        "train.py",
        *FAST,
        "data=folder",
        f"data.root={image_tree}",
        "+callbacks.boom._target_=boom.Boom",
        f"+callbacks.boom.when={when}",
        f"hydra.run.dir={tmp_path}",
        env=TESTS_ON_PATH,
        **({"check": False} if run is run_cli else {}),
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode not in (0, 2) and "Traceback (most recent call last)" in out, out[-3000:]
    assert re.search(r"RuntimeError: boom (while building the callback|when training starts)", out), out[-3000:]
    assert "ConfigError" not in out


@pytest.mark.slow
def test_the_shell_sees_one_line_and_exit_status_2(image_tree, tmp_path):
    """The contract above from a real process: the exit status the shell gets, nothing else on the console, the
    traceback in the run's log. The mistake is raised by torch inside Hydra's instantiate (the path that used to
    print two tracebacks and exit 1)."""
    override, expected = "model.optimizer.lr=-1", "model.optimizer.lr=-1 is refused by torch.optim.AdamW"
    proc = run_cli(
        "train.py", *FAST, "data=folder", f"data.root={image_tree}", override, f"hydra.run.dir={tmp_path}", check=False
    )
    assert error_line(proc).startswith(expected)
    assert "Traceback (most recent call last)" in (tmp_path / "train.log").read_text()
