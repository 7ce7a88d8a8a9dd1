"""Worker processes that die: the job goes on, and only the row that kills is an error.

A fake model (``fake_batch_cli.py``) keeps these fast; the processes are real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FAKE_CLI = Path(__file__).with_name("fake_batch_cli.py")


def fake_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "CTXASR_DEBUG"} | env
    return subprocess.run([sys.executable, str(FAKE_CLI), *args], capture_output=True,
                          text=True, env=environ, timeout=120, check=False)  # fmt: skip


def manifest(tmp_path: Path, *names: str) -> Path:
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"audio": n}) + "\n" for n in names))
    return path


def test_a_row_that_kills_its_worker_is_an_error_and_the_job_goes_on(tmp_path, rows_of):
    names = ["a.wav", "poison.wav", "b.wav", "c.wav", "d.wav"]
    out = tmp_path / "out.jsonl"
    proc = fake_cli(str(manifest(tmp_path, *names)), "-o", str(out), "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    rows = rows_of(out)
    assert sorted(rows) == [1, 2, 3, 4, 5]
    assert rows[2]["error"].startswith("worker process died while transcribing this row")
    # a.wav was in flight beside the poison: it is run again alone, not marked failed.
    for line in (1, 3, 4, 5):
        assert rows[line]["pred_text"] == f"heard {names[line - 1]}", rows[line]
    assert "5 done (1 with errors)" in proc.stderr and "Traceback" not in proc.stderr
    assert "leaked" not in proc.stderr


def test_a_model_that_does_not_load_stops_the_job_before_any_row(tmp_path):
    out = tmp_path / "out.jsonl"
    proc = fake_cli(str(manifest(tmp_path, "a.wav", "b.wav")), "-o", str(out), "--workers", "1",
                    FAKE_LOAD_ERROR="1")  # fmt: skip
    assert proc.returncode == 1
    assert (
        proc.stderr.strip() == "ctxasr: error: worker: cannot load the model: fake-model: is broken"
    )
    assert not out.exists()
