"""The append-only output and resume: torn lines, foreign files, one write per row."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ctxasr.batch.output import (
    AppendLog,
    check_output,
    drop_error_rows,
    encode_row,
    read_finished,
)
from ctxasr.batch.rows import Task
from ctxasr.errors import CtxasrError


def tasks(n: int = 4) -> list[Task]:
    return [Task(i, (("audio", f"a{i}.wav"),), f"/d/a{i}.wav") for i in range(1, n + 1)]


def row(line: int, error: bool = False, **extra) -> dict:
    out = {"audio": f"a{line}.wav", **extra}
    out.update({"error": "bad"} if error else {"pred_text": f"text {line}", "context_used": []})
    return {**out, "manifest_line": line}


def lines(*rows: dict) -> bytes:
    return b"".join(encode_row(r) for r in rows)


def test_no_output_yet(tmp_path):
    finished = read_finished(tmp_path / "out.jsonl", tasks())
    assert finished.lines == frozenset() and not finished.repaired
    assert not (tmp_path / "out.jsonl").exists()


def test_finished_rows_and_errors(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_bytes(lines(row(3), row(1, error=True)))
    finished = read_finished(out, tasks())
    assert finished.lines == {1, 3} and finished.errors == {1} and not finished.repaired


@pytest.mark.parametrize(
    "tail",
    [
        b'{"audio": "a4.wav", "pred_te',  # a torn write
        b'{"audio": "a4.wav", "pred_text": "x", "context_used": [], "manifest_line": 4}',  # no newline
        b"\x00\x00\x00\x00",  # what a crash can leave at the end of a file
        b'{"audio": "a4.wav", "pred\n',  # broken but complete: still only the last line
    ],
)
def test_a_torn_last_line_is_cut_and_complete_lines_are_untouched(tmp_path, tail):
    out = tmp_path / "out.jsonl"
    complete = lines(row(2), row(1, error=True))
    out.write_bytes(complete + tail)
    finished = read_finished(out, tasks())
    assert finished.lines == {1, 2} and finished.repaired
    assert out.read_bytes() == complete


def test_a_torn_first_row(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"audio": "a1.wa')
    assert read_finished(out, tasks()).lines == frozenset()
    assert out.read_bytes() == b""


def test_a_broken_line_before_others_is_refused_and_nothing_changes(tmp_path):
    out = tmp_path / "out.jsonl"
    data = lines(row(1)) + b"garbage\n" + lines(row(2))
    out.write_bytes(data)
    with pytest.raises(CtxasrError, match=r"out.jsonl:2: is not a batch result row"):
        read_finished(out, tasks())
    assert out.read_bytes() == data


@pytest.mark.parametrize(
    "data",
    [
        b'{"audio_filepath": "x.wav", "text": "a manifest"}\n',
        b'{"audio_filepath": "x.wav", "text": "a manifest"}',  # even without its newline
        b'{"a": 1}\n{"b": 2}\n',
    ],
)
def test_another_jsonl_file_is_never_cut(tmp_path, data):
    out = tmp_path / "other.jsonl"
    out.write_bytes(data)
    with pytest.raises(CtxasrError, match="not a ctxasr batch output"):
        read_finished(out, tasks())
    assert out.read_bytes() == data


def test_rows_of_another_manifest_are_refused(tmp_path):
    out = tmp_path / "out.jsonl"
    data = lines(row(1), {**row(2), "audio": "other.wav"})
    out.write_bytes(data)
    with pytest.raises(CtxasrError) as err:
        read_finished(out, tasks())
    message = str(err.value)
    assert "manifest line 2 with audio 'other.wav'" in message and "'a2.wav'" in message
    assert "another manifest" in message and "\n" not in message
    out.write_bytes(lines(row(9)))
    with pytest.raises(CtxasrError, match="manifest line 9, which the manifest does not have"):
        read_finished(out, tasks())
    assert out.read_bytes() == lines(row(9))


def test_error_rows_match_by_line_alone(tmp_path):
    # The user may fix a line that was not JSON, or a wrong audio path, and retry it.
    out = tmp_path / "out.jsonl"
    out.write_bytes(lines({"error": "m.jsonl:2: is not JSON", "manifest_line": 2},
                          row(3, error=True, audio="typo.wav")))  # fmt: skip
    assert read_finished(out, tasks()).errors == {2, 3}
    out.write_bytes(lines({"error": "m.jsonl:9: is not JSON", "manifest_line": 9}))
    with pytest.raises(CtxasrError, match="manifest does not have"):
        read_finished(out, tasks())


def test_drop_error_rows_keeps_the_rest_byte_for_byte(tmp_path):
    out = tmp_path / "out.jsonl"
    keep = [row(1, text="é"), row(3)]
    out.write_bytes(lines(keep[0], row(2, error=True), keep[1], row(4, error=True)))
    assert drop_error_rows(out) == 2
    assert out.read_bytes() == lines(*keep)
    assert not [p for p in tmp_path.iterdir() if p.name != "out.jsonl"]  # no temp file left


def test_each_row_is_one_write_of_one_line(tmp_path, monkeypatch):
    out = tmp_path / "out.jsonl"
    out.write_bytes(lines(row(1)))
    writes: list[bytes] = []
    real = os.write

    def spy(fd, data):
        writes.append(bytes(data))
        return real(fd, data)

    monkeypatch.setattr(os, "write", spy)
    log = AppendLog(out)
    log.write(row(2, text="naïve \u2028 ok"))
    log.write(row(3))
    log.close()
    assert writes == [encode_row(row(2, text="naïve \u2028 ok")), encode_row(row(3))]
    assert all(w.endswith(b"\n") and w.count(b"\n") == 1 for w in writes)
    assert [json.loads(x)["manifest_line"] for x in out.read_bytes().splitlines()] == [1, 2, 3]


def test_appends_even_when_the_file_grows_behind_its_back(tmp_path):
    out = tmp_path / "out.jsonl"
    log = AppendLog(out)
    log.write(row(1))
    with out.open("ab") as other:  # O_APPEND: each write lands at the current end
        other.write(lines(row(2)))
    log.write(row(3))
    log.close()
    assert out.read_bytes() == lines(row(1), row(2), row(3))


def test_appendlog_creates_nothing_until_a_row(tmp_path):
    AppendLog(tmp_path / "out.jsonl").close()
    assert not (tmp_path / "out.jsonl").exists()


def test_lone_surrogates_still_make_a_line():
    data = encode_row({"text": "\ud800", "manifest_line": 1})
    assert data.endswith(b"\n") and json.loads(data) == {"text": "\ud800", "manifest_line": 1}


def test_check_output(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("{}\n")
    with pytest.raises(CtxasrError, match="is the manifest"):
        check_output(tmp_path / "." / "m.jsonl", manifest)
    with pytest.raises(CtxasrError, match="is a directory"):
        check_output(tmp_path, manifest)
    with pytest.raises(CtxasrError, match="does not exist"):
        check_output(tmp_path / "no" / "out.jsonl", manifest)
    check_output(Path(tmp_path / "out.jsonl"), manifest)
