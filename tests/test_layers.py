"""The layer rule (pyproject.toml [tool.importlinter], docs/architecture.md) holds, and it bites.

`lint-imports` reads every import, those inside functions included. The second test plants an
upward import in a copy of the package and checks that the same contracts refuse it, so a rule
that silently stopped checking (a renamed package, a contract that matches nothing) fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (.[test])")


def lint(where: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(where)}  # the copy's `harness` before the installed one
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=where, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_layer_contracts_hold():
    r = lint(ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "Contracts: 4 kept, 0 broken." in r.stdout


@pytest.mark.parametrize(
    "module, planted, refusal",
    [
        # config reaching up into a stage, the fault the rule exists for (inside a function)
        (
            "config/text.py",
            "from harness.bundle import verify",
            "harness.config is not allowed to import harness.bundle",
        ),
        # a stage reaching up into the one above it
        (
            "render/contact.py",
            "from harness.score import api",
            "harness.render is not allowed to import harness.score",
        ),
        # a foundation importing a layer
        (
            "safeio.py",
            "from harness.config import story",
            "harness.safeio is not allowed to import harness.config",
        ),
    ],
)
def test_an_upward_import_breaks_the_contract(tmp_path, module, planted, refusal):
    shutil.copytree(ROOT / "harness", tmp_path / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "harness" / module
    target.write_text(target.read_text() + f"\n\ndef _planted():\n    {planted}  # noqa: F401\n")
    r = lint(tmp_path)
    assert r.returncode != 0
    assert refusal in " ".join(r.stdout.split()), r.stdout[-4000:]
