"""A small archive to transcribe, and one reference run of it with the local engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

JFK = "And so my fellow Americans, ask not what your country can do for you"


def batch_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m ctxasr.cli batch ARGS``, as a user would run it."""
    env = {k: v for k, v in os.environ.items() if k != "CTXASR_DEBUG"}
    return subprocess.run([sys.executable, "-m", "ctxasr.cli", "batch", *args],
                          capture_output=True, text=True, env=env, timeout=timeout, check=False)  # fmt: skip


def read_rows(path: Path) -> dict[int, dict]:
    """Output rows by manifest line; fails if a line is there twice or does not parse."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    by_line = {r["manifest_line"]: r for r in rows}
    assert len(by_line) == len(rows), "a manifest line was written twice"
    return by_line


@pytest.fixture(scope="session")
def batch_manifest(tmp_path_factory, audio_dir) -> Path:
    """8 rows on 9 lines: six recordings (relative and absolute paths), a line that is
    not JSON, a missing recording, and a blank line."""
    folder = tmp_path_factory.mktemp("archive")
    (folder / "audio").symlink_to(audio_dir)
    lines = [
        json.dumps({"audio_filepath": str(audio_dir / "jfk.flac"), "id": "jfk", "text": JFK}),
        json.dumps({"audio_filepath": "audio/1272-128104-0000.wav", "id": "quilter",
                    "context": ["Quilter"], "duration": 5.855}),
        '{"audio_filepath": "audio/jfk.flac", oops',
        json.dumps({"audio": "audio/missing.wav", "id": "missing"}),
        "",
        json.dumps({"audio_filepath": "audio/LJ050-0131.wav", "id": "lj", "speaker": "LJ",
                    "context": ["thereunder"]}),
        json.dumps({"audio_filepath": "audio/jfk.flac", "id": "jfk-2"}),
        json.dumps({"audio_filepath": "audio/1272-128104-0000.wav", "id": "quilter-2"}),
        json.dumps({"audio_filepath": "audio/LJ050-0131.wav", "id": "lj-2"}),
    ]  # fmt: skip
    path = folder / "archive.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def cli():
    return batch_cli


@pytest.fixture(scope="session")
def rows_of():
    return read_rows


@pytest.fixture(scope="session")
def manifest_lines(batch_manifest) -> list[int]:
    text = batch_manifest.read_text(encoding="utf-8").split("\n")
    return [i for i, line in enumerate(text, start=1) if line.strip()]


@pytest.fixture(scope="session")
def reference_run(batch_manifest, tmp_path_factory) -> tuple[dict[int, dict], str]:
    """An uninterrupted local run: 2 workers of 1 thread. (rows by line, stderr)"""
    out = tmp_path_factory.mktemp("reference") / "out.jsonl"
    proc = batch_cli(str(batch_manifest), "-o", str(out), "--workers", "2", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    return read_rows(out), proc.stderr
