"""The steps of a job around a fake engine: resume, --retry-errors, interrupts, counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctxasr.batch import BatchInterrupted, BatchOptions, run_batch
from ctxasr.batch import job as job_module
from ctxasr.batch.rows import transcribe_row
from ctxasr.context.terms import ContextTerm
from ctxasr.errors import AudioError, CtxasrError
from ctxasr.results import Transcript


class Fake:
    """Transcribes without a model; a file named ``bad*`` is unreadable."""

    def transcribe(self, audio, context=(), document=None):
        name = Path(audio).name
        if name.startswith("bad"):
            raise AudioError(str(audio), "cannot be decoded as audio")
        return Transcript(text=f"heard {name}", segments=(), duration=10.0, model="fake",
                          language="en", context_used=tuple(t.text for t in context))  # fmt: skip


@pytest.fixture
def engine(monkeypatch):
    """Replaces the engines; records the rows each run was given."""
    runs: list[list[int]] = []
    stop_after: list[int] = []

    def run(tasks, setup, workers):
        runs.append([t.line for t in tasks])
        for i, task in enumerate(tasks):
            if stop_after and i == stop_after[0]:
                raise KeyboardInterrupt
            yield transcribe_row(Fake(), task)

    monkeypatch.setattr(job_module, "_engine", lambda options: run)
    run.runs, run.stop_after = runs, stop_after
    return run


@pytest.fixture
def manifest(tmp_path) -> Path:
    rows = [{"audio": "a.wav", "id": "a"}, {"audio": "bad.wav"}, "not json",
            {"audio": "c.wav", "context": ["Quilter"]}]  # fmt: skip
    path = tmp_path / "m.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read(path: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    by_line = {r["manifest_line"]: r for r in rows}
    assert len(by_line) == len(rows), "a manifest line appears twice"
    return by_line


def test_a_job_writes_every_row_once(engine, manifest, tmp_path):
    out = tmp_path / "out.jsonl"
    seen = []
    summary = run_batch(manifest, out, terms=[ContextTerm("Birket")],
                        progress=lambda *a: seen.append(a))  # fmt: skip
    rows = read(out)
    assert sorted(rows) == [1, 2, 3, 4]
    assert rows[1] == {"audio": "a.wav", "id": "a", "pred_text": "heard a.wav",
                       "context_used": ["Birket"], "manifest_line": 1}  # fmt: skip
    assert rows[2]["error"].endswith("bad.wav: cannot be decoded as audio")
    assert rows[3] == {"error": f"{manifest}:3: is not JSON (Expecting value)", "manifest_line": 3}
    assert rows[4]["context_used"] == ["Quilter", "Birket"]
    assert (summary.total, summary.done, summary.skipped, summary.errors) == (4, 4, 0, 2)
    assert summary.audio_seconds == 20.0 and summary.real_time_factor > 0
    assert seen[0] == (0, 4, 0) and seen[-1] == (4, 4, 2)


def test_resume_runs_only_what_is_missing(engine, manifest, tmp_path):
    out = tmp_path / "out.jsonl"
    engine.stop_after.append(2)
    with pytest.raises(BatchInterrupted) as stop:
        run_batch(manifest, out)
    assert stop.value.summary.done == 2 and sorted(read(out)) == [1, 2]
    assert isinstance(stop.value, KeyboardInterrupt)
    engine.stop_after.clear()
    with out.open("ab") as f:
        f.write(b'{"audio": "c.wav", "pre')  # a torn write
    summary = run_batch(manifest, out)
    assert engine.runs[-1] == [3, 4]
    assert (summary.done, summary.skipped, summary.earlier_errors) == (2, 2, 1)
    assert sorted(read(out)) == [1, 2, 3, 4]
    summary = run_batch(manifest, out)  # all done: the engine is not even started
    assert len(engine.runs) == 2 and summary.done == 0 and summary.skipped == 4


def test_retry_errors_reruns_only_error_rows(engine, manifest, tmp_path):
    out = tmp_path / "out.jsonl"
    run_batch(manifest, out)
    first = read(out)
    summary = run_batch(manifest, out, BatchOptions(retry_errors=True))
    assert engine.runs[-1] == [2, 3]
    assert (summary.done, summary.skipped, summary.errors) == (2, 2, 2)
    assert read(out) == first
    good = [json.loads(x) for x in out.read_text().splitlines()[:2]]
    assert [r["manifest_line"] for r in good] == [1, 4]  # kept as they were, in front
    # Fix the line that was not JSON: without --retry-errors it stays done...
    lines = manifest.read_text().splitlines()
    lines[2] = json.dumps({"audio": "fixed.wav"})
    manifest.write_text("\n".join(lines) + "\n")
    assert run_batch(manifest, out).done == 0
    # ...with it, it runs again.
    run_batch(manifest, out, BatchOptions(retry_errors=True))
    assert read(out)[3]["pred_text"] == "heard fixed.wav"


def test_fatal_errors_write_nothing(engine, manifest, tmp_path):
    with pytest.raises(CtxasrError, match="is the manifest"):
        run_batch(manifest, manifest)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(CtxasrError, match="has no rows"):
        run_batch(empty, tmp_path / "out.jsonl")
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"audio": "zzz.wav", "pred_text": "", "manifest_line": 1}) + "\n")
    before = other.read_bytes()
    with pytest.raises(CtxasrError, match="another manifest"):
        run_batch(manifest, other)
    assert other.read_bytes() == before
    with pytest.raises(CtxasrError, match="nonexistent-model"):
        run_batch(
            manifest,
            tmp_path / "out.jsonl",
            BatchOptions(model=str(tmp_path / "nonexistent-model")),
        )
    assert not (tmp_path / "out.jsonl").exists() and engine.runs == []


def test_options_are_checked():
    with pytest.raises(ValueError, match="engine must be one of local, ray"):
        BatchOptions(engine="spark")
    with pytest.raises(ValueError, match="workers and threads"):
        BatchOptions(workers=-1)
