"""One job an output: a second job on it is refused at once; a killed job's lock is taken
over. Real processes run ``fake_batch_cli.py`` (a model that sleeps 0.3 s a row)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctxasr.batch import BatchInterrupted, run_batch
from ctxasr.batch import job as job_module
from ctxasr.batch import output as output_module
from ctxasr.batch.output import OutputLock
from ctxasr.batch.rows import transcribe_row
from ctxasr.errors import CtxasrError
from ctxasr.results import Transcript

FAKE_CLI = Path(__file__).with_name("fake_batch_cli.py")
REFUSED = re.compile(
    r"ctxasr: error: (?P<output>\S+): another batch job \(pid (?P<pid>\d+) on host (?P<host>\S+), "
    r"started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\) is writing it; wait for it or stop it"
)


def write_manifest(tmp_path: Path, rows: int) -> Path:
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"audio": f"a{i}.wav"}) + "\n" for i in range(rows)))
    return path


def fake_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CTXASR_DEBUG"}
    return subprocess.run([sys.executable, str(FAKE_CLI), *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)  # fmt: skip


def start(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    """The fake CLI in the background, in its own session (to reach its workers)."""
    env = {k: v for k, v in os.environ.items() if k != "CTXASR_DEBUG"}
    return subprocess.Popen([sys.executable, str(FAKE_CLI), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                            start_new_session=True)  # fmt: skip


def wait_for(proc: subprocess.Popen[str], ready, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the job ended too soon: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "the job did not get there in time"
        time.sleep(0.02)


def lines_in(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def rows_by_line(path: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    by_line = {r["manifest_line"]: r for r in rows}
    assert len(by_line) == len(rows), "a manifest line was written twice"
    return by_line


def stop_group(proc: subprocess.Popen[str]) -> None:
    """Kill what is left of the job's session (workers that outlive a killed driver)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


# --- two processes -------------------------------------------------------------------


def test_a_second_job_on_the_same_output_is_refused_at_once(tmp_path):
    rows = 24
    manifest = write_manifest(tmp_path, rows)
    out = tmp_path / "out.jsonl"
    (tmp_path / "link.jsonl").symlink_to(out)  # to a file that does not exist yet
    (tmp_path / "sub").mkdir()
    first = start(str(manifest), "-o", str(out), "--workers", "1")
    try:
        wait_for(first, lambda: lines_in(out) >= 1)
        # Two more jobs at once: by a symlink, and by a relative path from another folder.
        spellings = {str(tmp_path / "link.jsonl"): tmp_path, "../out.jsonl": tmp_path / "sub"}
        others = {s: start(str(manifest), "-o", s, "--workers", "1", cwd=cwd)
                  for s, cwd in spellings.items()}  # fmt: skip
        for spelling, other in others.items():
            _, refused = other.communicate(timeout=60)
            assert other.returncode == 1, refused
            lines = refused.strip().splitlines()
            assert len(lines) == 1, refused
            found = REFUSED.fullmatch(lines[0])
            assert found is not None, lines[0]
            assert found["output"] == spelling
            assert int(found["pid"]) == first.pid and found["host"] == socket.gethostname()
        # Refused without waiting for the first job, which still runs.
        assert first.poll() is None, "the first job ended before the others were refused"
        _, stderr = first.communicate(timeout=120)
    finally:
        stop_group(first)
    assert first.returncode == 0, stderr
    assert sorted(rows_by_line(out)) == list(range(1, rows + 1))
    assert not (tmp_path / "out.jsonl.lock").exists()


def test_a_killed_jobs_lock_is_taken_over_and_the_job_resumes(tmp_path):
    rows = 8
    manifest = write_manifest(tmp_path, rows)
    out = tmp_path / "out.jsonl"
    lock = tmp_path / "out.jsonl.lock"
    killed = start(str(manifest), "-o", str(out), "--workers", "1")
    try:
        wait_for(killed, lambda: lines_in(out) >= 2)
        os.kill(killed.pid, signal.SIGKILL)  # the driver only: its worker may linger
        killed.wait(timeout=30)
        assert json.loads(lock.read_text())["pid"] == killed.pid  # left behind, stale
        done_before = lines_in(out)
        assert done_before < rows, "the kill came too late to test anything"
        resumed = fake_cli(str(manifest), "-o", str(out), "--workers", "1")
    finally:
        stop_group(killed)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{done_before} already there" in resumed.stderr
    assert sorted(rows_by_line(out)) == list(range(1, rows + 1))
    assert not lock.exists()


# --- the lock ------------------------------------------------------------------------


def test_the_lock_names_its_holder_and_goes_with_release(tmp_path):
    out = tmp_path / "out.jsonl"
    lock = OutputLock(out)
    assert lock.path == tmp_path.resolve() / "out.jsonl.lock"
    with lock:
        holder = json.loads(lock.path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert time.strptime(holder["started"], "%Y-%m-%d %H:%M:%S")
        assert not out.exists()  # the lock writes nothing to the output
    assert not lock.path.exists()
    lock.release()  # again: nothing to do
    with OutputLock(out):  # free again
        pass


def test_every_spelling_of_the_output_shares_one_lock(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.jsonl").symlink_to(out)
    with OutputLock(out):
        for other in (tmp_path / "sub" / ".." / "out.jsonl", tmp_path / "link.jsonl"):
            with pytest.raises(CtxasrError) as refused:
                OutputLock(other).acquire()
            assert REFUSED.fullmatch(f"ctxasr: error: {refused.value}"), refused.value
            assert str(refused.value).startswith(f"{other}: ")
            assert f"(pid {os.getpid()} " in str(refused.value)
    assert out.read_text() == ""


def test_a_stale_lock_file_is_taken_over(tmp_path):
    out = tmp_path / "out.jsonl"
    stale = tmp_path / "out.jsonl.lock"
    stale.write_text(json.dumps({"pid": 999999, "host": "gone", "started": "x"}) + "\n")
    lock = OutputLock(out)
    with lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not stale.exists()


def test_a_holder_line_that_does_not_read_still_refuses(tmp_path):
    out = tmp_path / "out.jsonl"
    lock = OutputLock(out)
    with lock:
        lock.path.write_bytes(b"\xff garbage")
        with pytest.raises(CtxasrError) as refused:
            OutputLock(out).acquire()
    assert str(refused.value) == (f"{out}: another batch job is writing it; wait for it or stop it")


def test_a_lock_on_a_released_file_is_no_lock(tmp_path, monkeypatch):
    """A job that opened the lock file just before its holder removed it and let go
    would lock a file no one else sees: it opens the path again."""
    out = tmp_path / "out.jsonl"
    first = OutputLock(out)
    first.acquire()
    old = os.open(first.path, os.O_RDWR)  # opened while held...
    first.release()  # ...then removed and let go
    opens = [old]
    real_open = OutputLock._open
    monkeypatch.setattr(OutputLock, "_open", lambda self: opens.pop() if opens else real_open(self))
    second = OutputLock(out)
    second.acquire()
    try:
        assert second.path.exists() and not opens
        with pytest.raises(CtxasrError, match="another batch job"):
            OutputLock(out).acquire()
    finally:
        second.release()


def test_a_lock_file_that_cannot_be_made_is_one_error(tmp_path):
    (tmp_path / "out.jsonl.lock").mkdir()
    with pytest.raises(CtxasrError, match=r"out\.jsonl\.lock: cannot create the lock file"):
        OutputLock(tmp_path / "out.jsonl").acquire()


# --- in a job ------------------------------------------------------------------------


class Fake:
    def transcribe(self, audio, context=(), document=None):
        return Transcript(text="x", segments=(), duration=1.0, model="fake", language="en")


def test_a_locked_output_stops_the_job_before_it_reads_or_writes(tmp_path, monkeypatch):
    manifest = write_manifest(tmp_path, 2)
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"audio": "a0.wav", "pred_text": "x", "manifest_line": 1}\n{"aud')
    before = out.read_bytes()

    def engine(tasks, setup, workers):
        raise AssertionError("the engine must not start")

    def read_finished(*args):
        raise AssertionError("the output must not be read (nor its torn end cut)")

    monkeypatch.setattr(job_module, "_engine", lambda options: engine)
    monkeypatch.setattr(job_module, "read_finished", read_finished)
    with OutputLock(out), pytest.raises(CtxasrError, match="another batch job"):
        run_batch(manifest, out)
    assert out.read_bytes() == before


def test_the_lock_goes_when_a_job_ends_or_is_interrupted(tmp_path, monkeypatch):
    manifest = write_manifest(tmp_path, 3)
    out = tmp_path / "out.jsonl"
    held, interrupt = [], [True]

    def engine(tasks, setup, workers):
        for i, task in enumerate(tasks):
            held.append(output_module.OutputLock(out).path.exists())
            if i == 1 and interrupt:
                interrupt.pop()
                raise KeyboardInterrupt
            yield transcribe_row(Fake(), task)

    monkeypatch.setattr(job_module, "_engine", lambda options: engine)
    with pytest.raises(BatchInterrupted):
        run_batch(manifest, out)
    assert not (tmp_path / "out.jsonl.lock").exists()
    assert run_batch(manifest, out).done == 2
    assert not (tmp_path / "out.jsonl.lock").exists()
    assert all(held) and sorted(rows_by_line(out)) == [1, 2, 3]
