"""`python train.py --help` answers fast (no torch, no Lightning) and lists only options a user can pick."""

from __future__ import annotations

import re

import pytest
from helpers import ROOT, run_cli, run_main


def groups(out: str) -> dict[str, list[str]]:
    """`group: a, b, c  (now: b)` lines of the help page -> {group: [a, b, c]}."""
    block = out.split("== Configuration groups ==")[1].split("== Config ==")[0]
    found = re.findall(r"^([\w/]+): ([^\n(]+?)(?:  \(now: \w+\))?$", block, flags=re.M)
    return {group: options.split(", ") for group, options in found}


@pytest.mark.parametrize("script", ["train.py", "predict.py", "imgcls.eda", "imgcls.bench"])
def test_help_lists_real_choices_and_the_launcher_without_importing_torch(script):
    proc = run_cli(script, "--help", env={"PYTHONPROFILEIMPORTTIME": "1"})
    imported = set(re.findall(r"^import time:.*\|\s+([\w.]+)$", proc.stderr, flags=re.M))
    assert imported and not {"torch", "lightning", "timm"} & imported, sorted(imported)
    listed = groups(proc.stdout)
    assert listed["hydra/launcher"] == ["basic", "local", "slurm", "submitit_local", "submitit_slurm"], proc.stdout
    assert "hydra" not in listed and "data/corrections" not in listed, listed  # not something to pick
    for group, options in listed.items():
        assert not any(o.startswith("_") for o in options), (group, options)  # bases, not choices
        ours = ROOT / "configs" / group
        if ours.is_dir() and group != "hydra/launcher":
            assert options == sorted(p.stem for p in ours.glob("[!_]*.yaml")), (group, options)


def test_help_shows_the_config_the_overrides_compose():
    out = run_main("train.py", "model=resnet18", "--help").stdout  # in-process: what it imports is checked above
    assert "model: convnext_atto, efficientnet_b0, resnet10t, resnet18, vit_tiny  (now: resnet18)" in out
    assert "\n  name: resnet18\n" in out.split("== Config ==")[1]
