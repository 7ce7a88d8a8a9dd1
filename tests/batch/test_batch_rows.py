"""Manifest rows in, result rows out: lenient parsing, the per-row function, sizing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ctxasr.batch.ray_engine import _import_ray
from ctxasr.batch.rows import (
    Task,
    read_tasks,
    task_from_json,
    task_to_json,
    transcribe_row,
)
from ctxasr.batch.workers import default_workers, plan
from ctxasr.context.terms import ContextTerm
from ctxasr.errors import AudioError, CtxasrError
from ctxasr.results import Transcript


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_good_rows_keep_their_fields_and_resolve_paths(tmp_path):
    (tmp_path / "terms.txt").write_text("Quilter\nthereunder\n")
    manifest = write(
        tmp_path / "m.jsonl",
        json.dumps({"audio_filepath": "a/one.wav", "text": "x", "duration": 1.5, "speaker": 7}),
        "",  # blank lines are skipped but still counted
        json.dumps({"audio": "/abs/two.flac", "id": "two", "context": ["Birket", " Linnell's "]}),
        json.dumps({"audio_filepath": "three.wav", "context_file": "terms.txt"}),
    )
    one, two, three = read_tasks(manifest)
    assert (one.line, two.line, three.line) == (1, 3, 4)
    assert one.audio == str(tmp_path / "a" / "one.wav")
    assert dict(one.fields) == {"audio_filepath": "a/one.wav", "text": "x", "duration": 1.5,
                                "speaker": 7}  # fmt: skip
    assert one.key == "a/one.wav" and one.terms == () and one.error is None
    assert two.audio == "/abs/two.flac" and two.key == "/abs/two.flac"
    assert [t.text for t in two.terms] == ["Birket", "Linnell's"]
    assert [t.text for t in three.terms] == ["Quilter", "thereunder"]


def test_job_terms_merge_after_the_rows_own(tmp_path):
    manifest = write(tmp_path / "m.jsonl",
                     json.dumps({"audio": "a.wav", "context": ["Quilter", "Birket"]}),
                     json.dumps({"audio": "b.wav"}))  # fmt: skip
    job = [ContextTerm("quilter", 2.0), ContextTerm("Kubernetes")]
    a, b = read_tasks(manifest, job)
    assert a.terms == (
        ContextTerm("Quilter", 2.0),
        ContextTerm("Birket"),
        ContextTerm("Kubernetes"),
    )
    assert b.terms == tuple(job)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("not json", "is not JSON"),
        ("[1, 2]", "is not a JSON object"),
        ('{"text": "no audio"}', "needs a string field 'audio_filepath'"),
        ('{"audio_filepath": 3}', "needs a string field 'audio_filepath'"),
        ('{"audio": "a.wav", "context": "one, two"}', "'context' must be a list of strings"),
        ('{"audio": "a.wav", "context": [1]}', "'context' must be a list of strings"),
        ('{"audio": "a.wav", "context_file": "missing.txt"}', "missing.txt: no such file"),
        ('{"audio": "a.wav", "context_file": 5}', "'context_file' must be a path"),
    ],
)
def test_a_malformed_row_is_an_error_row_not_a_fatal_error(tmp_path, line, problem):
    manifest = write(tmp_path / "m.jsonl", json.dumps({"audio": "ok.wav"}), line)
    ok, bad = read_tasks(manifest)
    assert ok.error is None
    assert bad.line == 2 and bad.audio is None
    assert problem in bad.error and "\n" not in bad.error
    result = transcribe_row(FakeTranscriber(), bad)  # never reaches the transcriber
    assert result.row["error"] == bad.error and result.row["manifest_line"] == 2
    assert "pred_text" not in result.row


def test_invalid_utf8_and_a_bom(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(b'\xef\xbb\xbf{"audio": "a.wav"}\n{"audio": "\xff.wav"}\n')
    good, bad = read_tasks(manifest)
    assert good.error is None
    assert "is not UTF-8" in bad.error


def test_line_numbers_ignore_unicode_line_separators(tmp_path):
    # JSON allows a raw U+2028 inside a string; str.splitlines() would split there.
    manifest = write(tmp_path / "m.jsonl", json.dumps({"audio": "a.wav", "text": "a\u2028b"},
                                                      ensure_ascii=False),
                     json.dumps({"audio": "b.wav"}))  # fmt: skip
    assert [t.line for t in read_tasks(manifest)] == [1, 2]
    assert [t.error for t in read_tasks(manifest)] == [None, None]


def test_result_keys_of_an_earlier_run_are_dropped(tmp_path):
    row = {"audio": "a.wav", "pred_text": "old", "error": "old", "manifest_line": 9, "x": 1}
    (task,) = read_tasks(write(tmp_path / "m.jsonl", json.dumps(row)))
    assert dict(task.fields) == {"audio": "a.wav", "x": 1}


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: p / "missing.jsonl", "no such file"),
        (lambda p: p, "is not a file"),
        (lambda p: write(p / "empty.jsonl", "", "  "), "has no rows"),
    ],
)
def test_unusable_manifest_is_fatal(tmp_path, make, problem):
    with pytest.raises(CtxasrError, match=problem):
        read_tasks(make(tmp_path))


class FakeTranscriber:
    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail

    def transcribe(self, audio, context=(), document=None):
        if self.fail is not None:
            raise self.fail
        return Transcript(text=f"heard {Path(audio).name}", segments=(), duration=2.5,
                          model="fake", language="en",
                          context_used=tuple(t.text for t in context))  # fmt: skip


def task(**kw) -> Task:
    fields = (("audio", "a.wav"), ("id", "a"))
    return Task(kw.pop("line", 4), fields, "/data/a.wav", (ContextTerm("Quilter"),), **kw)


def test_transcribe_row_adds_pred_text_context_and_line():
    result = transcribe_row(FakeTranscriber(), task())
    assert result.row == {"audio": "a.wav", "id": "a", "pred_text": "heard a.wav",
                          "context_used": ["Quilter"], "manifest_line": 4}  # fmt: skip
    assert list(result.row) == ["audio", "id", "pred_text", "context_used", "manifest_line"]
    assert result.audio_seconds == 2.5 and not result.failed


@pytest.mark.parametrize(
    ("fail", "message"),
    [
        (
            AudioError("/data/a.wav", "cannot be decoded\nas audio"),
            "/data/a.wav: cannot be decoded as audio",
        ),
        (RuntimeError("boom"), "unexpected RuntimeError: boom"),
    ],
)
def test_any_failure_becomes_a_one_line_error(fail, message):
    result = transcribe_row(FakeTranscriber(fail), task())
    assert result.row == {"audio": "a.wav", "id": "a", "error": message, "manifest_line": 4}
    assert result.failed and result.audio_seconds == 0.0


def test_a_rows_document_goes_to_the_transcriber_with_its_terms(tmp_path):
    (tmp_path / "slides.txt").write_text("Quilter on Kubernetes\n\nBirket and etcd\n")
    manifest = write(
        tmp_path / "m.jsonl",
        json.dumps({"audio": "a.wav", "context": ["zebra"], "context_text_file": "slides.txt"}),
        json.dumps({"audio": "b.wav", "context": ["zebra"]}),
    )
    with_doc, without = read_tasks(manifest, [ContextTerm("Kubernetes", 2.0), ContextTerm("job")])
    assert with_doc.document == "Quilter on Kubernetes\n\nBirket and etcd\n"
    texts = [t.text for t in with_doc.terms]
    # The row's own terms, the document's, then the job's; a repeat keeps the top weight.
    assert texts[0] == "zebra" and texts[-1] == "job" and {"Quilter", "etcd"} <= set(texts)
    assert {t.text: t.weight for t in with_doc.terms}["Kubernetes"] == 2.0
    assert without.document is None
    assert [t.text for t in without.terms] == ["zebra", "Kubernetes", "job"]

    seen = []

    class Recording(FakeTranscriber):
        def transcribe(self, audio, context=(), document=None):
            seen.append(document)
            return super().transcribe(audio, context)

    assert not transcribe_row(Recording(), with_doc).failed
    assert not transcribe_row(Recording(), without).failed
    assert seen == [with_doc.document, None]
    assert task_from_json(task_to_json(with_doc)) == with_doc


def test_tasks_survive_json_for_ray():
    t = Task(3, (("audio", "a.wav"), ("n", [1, {"x": None}]), ("s", "\ud800")), "/a.wav",
             (ContextTerm("Quilter", 2.0),), None)  # fmt: skip
    assert task_from_json(task_to_json(t)) == t
    failed = Task(5, (), None, (), "m.jsonl:5: is not JSON")
    assert task_from_json(task_to_json(failed)) == failed


def test_worker_plan():
    assert [default_workers(c) for c in (1, 2, 8, 64)] == [1, 2, 8, 8]
    assert plan(0, 0, cpus=2, rows=100) == (2, 1)
    assert plan(1, 0, cpus=2, rows=100) == (1, 2)
    assert plan(4, 3, cpus=2, rows=100) == (4, 3)  # what was asked for
    # Fewer rows than workers: fewer workers, but the same threads each.
    assert plan(0, 0, cpus=8, rows=2) == (2, 1)


def test_ray_missing_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(CtxasrError) as err:
        _import_ray()
    assert str(err.value) == "--engine ray needs Ray: pip install 'ctxasr[ray]'"
