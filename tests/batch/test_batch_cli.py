"""The ``batch`` command's shell: one-line errors, nothing written, the summary line."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ctxasr.batch import BatchSummary
from ctxasr.cli.batch import _RowProgress, batch, describe

app = typer.Typer()
app.command()(batch)


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctxasr: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture
def manifest(tmp_path) -> Path:
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"audio": "a.wav"}) + "\n")
    return path


def test_bad_manifests(tmp_path):
    out = tmp_path / "out.jsonl"
    assert_one_line_error(invoke(tmp_path / "nope.jsonl", "-o", out), "nope.jsonl: no such file")
    assert_one_line_error(invoke(tmp_path, "-o", out), "is not a file")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert_one_line_error(invoke(tmp_path / "empty.jsonl", "-o", out), "has no rows")
    assert not out.exists()


def test_bad_outputs(manifest, tmp_path):
    assert_one_line_error(invoke(manifest, "-o", manifest), "is the manifest")
    assert_one_line_error(invoke(manifest, "-o", tmp_path), "is a directory")
    assert_one_line_error(invoke(manifest, "-o", tmp_path / "x" / "o.jsonl"), "does not exist")
    assert manifest.read_text() == json.dumps({"audio": "a.wav"}) + "\n"


def test_bad_context(manifest, tmp_path):
    result = invoke(manifest, "-o", tmp_path / "out.jsonl", "-c", tmp_path / "none.txt")
    assert_one_line_error(result, "none.txt: no such file")


def test_engine_ray_without_ray(manifest, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    result = invoke(manifest, "-o", tmp_path / "out.jsonl", "--engine", "ray")
    assert_one_line_error(result, "--engine ray needs Ray: pip install 'ctxasr[ray]'")
    assert not (tmp_path / "out.jsonl").exists()


def test_usage_errors_exit_2(manifest, tmp_path):
    assert invoke(manifest).exit_code == 2  # -o is required
    assert invoke(manifest, "-o", tmp_path / "o.jsonl", "--engine", "spark").exit_code == 2
    assert invoke(manifest, "-o", tmp_path / "o.jsonl", "--workers", "-1").exit_code == 2


def summary(**kw) -> BatchSummary:
    base = BatchSummary(output=Path("out.jsonl"), total=10, done=8, skipped=2, errors=1,
                        audio_seconds=1800.0, elapsed=90.0)  # fmt: skip
    return dataclasses.replace(base, **kw)


def test_summary_line():
    assert describe(summary()) == ("ctxasr: out.jsonl: 10 rows: 8 done (1 with errors), "
                                   "2 already there; 0.500 h of audio in 90.0 s "
                                   "(RTF 0.050, 20.0x real time)")  # fmt: skip
    assert describe(summary(done=0, skipped=10, earlier_errors=3)) == (
        "ctxasr: out.jsonl: 10 rows, all already there; nothing to do; "
        "3 earlier error rows kept (--retry-errors re-runs them)")  # fmt: skip
    line = describe(summary(done=2, skipped=0, errors=2, audio_seconds=0.0))
    assert line.endswith("2 done (2 with errors); 0.000 h of audio in 90.0 s")


def test_progress_bar_counts_rows():
    bar = _RowProgress(enabled=True)
    update = bar.__enter__()
    update(3, 10, 1)  # resumed rows start the bar
    update(4, 10, 1)
    task = bar._bar.tasks[0]
    assert (task.completed, task.total, task.fields["errors"]) == (4, 10, 1)
    bar.__exit__(None, None, None)
    assert _RowProgress(enabled=False).__enter__() is None
