"""The real command on a small archive: a whole run, a SIGKILL and resume, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.model


def test_every_row_once_with_errors_in_place(reference_run, manifest_lines):
    rows, stderr = reference_run
    assert sorted(rows) == manifest_lines
    assert {line for line, r in rows.items() if "error" in r} == {3, 4}
    assert "is not JSON" in rows[3]["error"] and "archive.jsonl:3" in rows[3]["error"]
    assert rows[4]["error"].endswith("missing.wav: no such file")
    assert rows[4]["id"] == "missing" and "pred_text" not in rows[4]
    assert "country" in rows[1]["pred_text"] and "country" in rows[7]["pred_text"]
    assert "Quilter" in rows[2]["pred_text"] and rows[2]["context_used"] == ["Quilter"]
    assert "thereunder" in rows[6]["pred_text"]
    assert rows[2]["duration"] == 5.855 and rows[6]["speaker"] == "LJ"  # fields are kept
    assert rows[2]["audio_filepath"] == "audio/1272-128104-0000.wav"  # as written
    assert all("error" in r or isinstance(r["pred_text"], str) for r in rows.values())
    summary = stderr.strip().splitlines()[-1]
    assert "8 rows: 8 done (2 with errors)" in summary and "h of audio" in summary
    assert "RTF" in summary


def start(manifest: Path, out: Path) -> subprocess.Popen:
    # A test run started in the background of a non-interactive shell (as CI may be)
    # has SIGINT ignored, and a child would inherit that: while it starts, handle
    # SIGINT here, which an exec resets to the default a terminal's job has.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        # Its own session, so that killpg reaches the worker processes too.
        return subprocess.Popen(
            [sys.executable, "-m", "ctxasr.cli", "batch", str(manifest), "-o", str(out),
             "--workers", "1", "--threads", "1"],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)


def wait_for_rows(proc: subprocess.Popen, out: Path, n: int, timeout: float = 120) -> bytes:
    """The output once it holds ``n`` complete lines, while the job still runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = out.read_bytes() if out.exists() else b""
        if data.count(b"\n") >= n:
            return data
        assert proc.poll() is None, (
            f"the job ended before it could be stopped: {proc.stderr.read()}"
        )
        time.sleep(0.02)
    raise AssertionError("no row was written in time")


def group_alive(session: int) -> list[psutil.Process]:
    alive = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == session and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
    return alive


def test_sigkill_then_resume_loses_and_repeats_nothing(batch_manifest, reference_run,
                                                       manifest_lines, tmp_path, cli, rows_of):  # fmt: skip
    out = tmp_path / "out.jsonl"
    proc = start(batch_manifest, out)
    wait_for_rows(proc, out, 1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    killed = out.read_bytes()
    done_before = killed.count(b"\n")
    assert 1 <= done_before < len(manifest_lines), "the kill came too late to test anything"
    complete = killed[: killed.rfind(b"\n") + 1]
    with out.open("ab") as f:
        f.write(b'{"audio_filepath": "audio/jfk.flac", "id": "jf')  # a torn write

    resumed = cli(str(batch_manifest), "-o", str(out), "--workers", "1", "--threads", "1")
    assert resumed.returncode == 0, resumed.stderr
    data = out.read_bytes()
    assert data.startswith(complete)  # complete lines untouched, the fragment gone
    rows = rows_of(out)  # every line parses, none twice
    assert sorted(rows) == manifest_lines
    assert rows == reference_run[0]  # as if never interrupted (other workers, too)
    assert f"{len(manifest_lines) - done_before} done" in resumed.stderr
    assert f"{done_before} already there" in resumed.stderr


def test_ctrl_c_stops_writes_and_says_how_to_resume(batch_manifest, tmp_path, rows_of):
    out = tmp_path / "out.jsonl"
    proc = start(batch_manifest, out)
    wait_for_rows(proc, out, 1)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground group
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.strip().endswith("run the same command again to resume"), stderr
    assert "Traceback" not in stderr
    assert 1 <= len(rows_of(out)) < 8
    time.sleep(0.5)
    assert group_alive(proc.pid) == []  # no worker left behind
