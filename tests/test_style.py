"""Style is enforced where it is cheap: ``ruff check`` and ``ruff format --check`` over
the package, the tests and the benchmarks, with the version pinned in the test extra
(rules and formatting change between ruff releases)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("src", "tests", "bench")


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if exe is None:
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    return subprocess.run([exe, *args, *PATHS], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip


def test_ruff_check():
    found = ruff("check", "--no-cache", "--output-format", "concise")
    assert found.returncode == 0, found.stdout + found.stderr


def test_ruff_format():
    found = ruff("format", "--check", "--no-cache")
    assert found.returncode == 0, found.stdout + found.stderr
