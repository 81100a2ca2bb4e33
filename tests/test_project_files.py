"""The habits a cloner inherits: CI files that parse and run the same checks as `.ci/run`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml
from helpers import ROOT


def test_github_workflow_runs_lint_and_tests():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as a boolean
    assert "push" in triggers and "pull_request" in triggers
    commands = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert any(c.startswith("make lint") for c in commands)
    assert any(c.startswith("make test") for c in commands)


def test_ci_script_lints_before_testing():
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("make ")]
    assert lines == ["make lint", "make test"]


def test_pre_commit_runs_the_ruff_that_the_project_pins():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    ruff = next(repo for repo in config["repos"] if repo["repo"].endswith("/ruff-pre-commit"))
    assert {hook["id"] for hook in ruff["hooks"]} == {"ruff", "ruff-format"}
    pin = re.search(r'"(ruff[^"]*)"', (ROOT / "pyproject.toml").read_text()).group(1)
    minor = ".".join(ruff["rev"].lstrip("v").split(".")[:2])
    assert f">={minor}" in pin, f"pre-commit's ruff {ruff['rev']} and pyproject's {pin} differ"


def test_the_suite_removes_its_scratch_folder_at_exit():
    # CI runs on the developer's own machine: what a test process leaves in /tmp accumulates run after run.
    script = "import helpers; print(helpers._scratch())"
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT / "tests", capture_output=True, text=True, check=True)
    scratch = Path(out.stdout.strip())
    assert scratch.name.startswith("imgcls-tests-") and not scratch.exists()
