"""The document benchmark: each utterance's context is the rest of its chapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ctxasr.cli.data import data_app
from ctxasr.data.documents import (
    Audio,
    DocumentSetSummary,
    audio_from_manifest,
    chapter_of,
    group_by_chapter,
    make_document_set,
    read_ref_files,
    rest_of_chapter,
)
from ctxasr.errors import CtxasrError
from ctxasr.eval.manifest import read_manifest

REFS = Path(__file__).parent.parent / "fixtures" / "documents" / "refs.tsv"

# The fixture's texts: chapter A is 1089-134686, chapter B 121-121726.
A0 = (
    "he hoped there would be stew for dinner turnips and carrots and bruised potatoes and fat "
    "mutton pieces to be ladled out in thick peppered flour fattened sauce"
)
A1 = "stuff it into you his belly counselled him"
A2 = (
    "after early nightfall the yellow lamps would light up here and there the squalid quarter "
    "of the brothels"
)
B0 = (
    "also a popular contrivance whereby love making may be suspended but not stopped during "
    "the picnic season"
)
B1 = "harangue the tiresome product of a tireless tongue"


def test_rest_of_chapter_golden():
    refs = read_ref_files([REFS])
    documents = rest_of_chapter({uid: ref.text for uid, ref in refs.items()})
    assert documents == {
        "1089-134686-0002": f"{A0}\n{A1}",
        "121-121726-0001": B0,
        "1089-134686-0000": f"{A1}\n{A2}",
        "121-121726-0000": B1,
        "1089-134686-0001": f"{A0}\n{A2}",
    }
    assert list(documents) == list(refs)  # the reference file's order
    for uid, document in documents.items():
        assert refs[uid].text not in document.split("\n")


def test_chapters_in_index_order():
    ids = ["7-1-10", "7-1-2", "8-3-0", "7-1-0001"]
    assert group_by_chapter(ids) == {"7-1": ("7-1-0001", "7-1-2", "7-1-10"), "8-3": ("8-3-0",)}
    assert chapter_of("1089-134686-0000") == ("1089-134686", 0)
    for bad in ("1089-134686", "a-b-c", "1-2-3-4", "1-2-٣"):
        with pytest.raises(CtxasrError, match="is not a LibriSpeech utterance id"):
            chapter_of(bad)


def test_an_utterance_alone_in_its_chapter_gets_no_document():
    assert rest_of_chapter({"1-1-0": "a", "1-1-1": "b", "2-5-0": "alone"}) == {
        "1-1-0": "b",
        "1-1-1": "a",
    }


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # only the name is matched; nothing decodes it
    return path


@pytest.fixture
def audio_dir(tmp_path) -> Path:
    """Audio for three of the five: LibriSpeech's tree for chapter A, flat for B."""
    folder = tmp_path / "audio"
    touch(folder / "1089" / "134686" / "1089-134686-0000.flac")
    touch(folder / "1089" / "134686" / "1089-134686-0002.flac")
    touch(folder / "121-121726-0001.wav")
    return folder


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_set_written_from_an_audio_folder(audio_dir, tmp_path):
    out = tmp_path / "out"
    summary = make_document_set([REFS], out, audio_dir=audio_dir)

    tree = "../audio/1089/134686"
    assert read_rows(out / "manifest.jsonl") == [
        {"audio_filepath": f"{tree}/1089-134686-0002.flac", "text": A2, "id": "1089-134686-0002",
         "rare_words": ["brothels", "nightfall", "squalid"],
         "context_text_file": "documents/1089-134686-0002.txt"},
        {"audio_filepath": "../audio/121-121726-0001.wav", "text": B1, "id": "121-121726-0001",
         "rare_words": ["harangue", "tireless", "tiresome"],
         "context_text_file": "documents/121-121726-0001.txt"},
        {"audio_filepath": f"{tree}/1089-134686-0000.flac", "text": A0, "id": "1089-134686-0000",
         "rare_words": ["bruised", "carrots", "fattened", "ladled", "mutton", "peppered", "stew",
                        "turnips"],
         "context_text_file": "documents/1089-134686-0000.txt"},
    ]  # fmt: skip
    documents = out / "documents"
    assert sorted(p.name for p in documents.iterdir()) == [
        "1089-134686-0000.txt",
        "1089-134686-0002.txt",
        "121-121726-0001.txt",
    ]
    # B0 has no audio, yet is 121-121726-0001's document: a chapter's text is all of it.
    assert (documents / "121-121726-0001.txt").read_bytes() == f"{B0}\n".encode()
    assert (documents / "1089-134686-0000.txt").read_text() == f"{A1}\n{A2}\n"
    a0, a1, a2, b0 = (len(t.split()) for t in (A0, A1, A2, B0))
    assert summary == DocumentSetSummary(
        written=3, chapters=2, words=(a0 + a1, b0, a1 + a2), no_audio=2, alone=0
    )
    assert str(summary) == (
        f"3 utterances from 2 chapters, words per document min {b0}, median {a1 + a2}, "
        f"max {a0 + a1}; skipped 2 without audio, 0 alone in their chapter (no document)"
    )

    def contents() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in [out / "manifest.jsonl", *documents.iterdir()]}

    before = contents()
    make_document_set([REFS], out, audio_dir=audio_dir)  # deterministic: the same bytes
    assert contents() == before


def test_the_set_reads_back_as_an_evaluation_manifest(audio_dir, tmp_path):
    make_document_set([REFS], tmp_path / "out", audio_dir=audio_dir)
    items = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert [i.audio.resolve() for i in items] == [
        audio_dir.resolve() / "1089/134686/1089-134686-0002.flac",
        audio_dir.resolve() / "121-121726-0001.wav",
        audio_dir.resolve() / "1089/134686/1089-134686-0000.flac",
    ]
    first = items[0]
    assert first.context_text == f"{A0}\n{A1}\n"
    assert first.rare_words == {"brothels", "nightfall", "squalid"}
    # Its terms come from the document alone: the rest of the chapter's rare words.
    assert {"mutton", "turnips", "counselled"} <= set(first.context)
    assert not {"brothels", "squalid"} & set(first.context)


def test_alone_and_without_audio_are_counted(audio_dir, tmp_path):
    extra = tmp_path / "extra.tsv"
    extra.write_text("2961-960-0000\tone utterance of its chapter\t[]\n")
    touch(audio_dir / "2961-960-0000.wav")
    summary = make_document_set([REFS, extra], tmp_path / "out", audio_dir=audio_dir)
    assert (summary.written, summary.no_audio, summary.alone) == (3, 2, 1)
    ids = [r["id"] for r in read_rows(tmp_path / "out" / "manifest.jsonl")]
    assert "2961-960-0000" not in ids


def test_audio_from_a_manifest(tmp_path):
    source = tmp_path / "synth"
    rows = [
        {"audio_filepath": "wav/a.wav", "id": "1089-134686-0001", "duration": 2.5, "text": "x"},
        {"audio": str(tmp_path / "abs" / "121-121726-0000.wav")},  # no id: the file's name
    ]
    source.mkdir()
    manifest = source / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert audio_from_manifest(manifest) == {
        "1089-134686-0001": Audio(source / "wav/a.wav", 2.5),
        "121-121726-0000": Audio(tmp_path / "abs" / "121-121726-0000.wav"),
    }
    out = tmp_path / "out"
    summary = make_document_set([REFS], out, audio_manifest=manifest)
    assert (summary.written, summary.no_audio) == (2, 3)
    b0, a1 = read_rows(out / "manifest.jsonl")  # the reference file's order
    assert a1["audio_filepath"] == "../synth/wav/a.wav" and a1["duration"] == 2.5
    assert a1["text"] == A1  # the reference's text, not the audio manifest's
    assert list(a1) == ["audio_filepath", "text", "duration", "id", "rare_words",
                        "context_text_file"]  # fmt: skip
    assert b0["audio_filepath"] == "../abs/121-121726-0000.wav" and "duration" not in b0


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (['{"audio": "a.wav", "id": "1-1-0"}', '{"audio": "b.wav", "id": "1-1-0"}'],
         "m.jsonl:2: utterance id '1-1-0' appears twice"),
        (['{"id": "1-1-0"}'], "m.jsonl:1: needs a string field 'audio_filepath'"),
    ],
)  # fmt: skip
def test_a_bad_audio_manifest_is_an_error(tmp_path, lines, problem):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(line + "\n" for line in lines))
    with pytest.raises(CtxasrError) as err:
        audio_from_manifest(manifest)
    assert problem in str(err.value)


def test_cli_writes_the_set_and_says_so(audio_dir, tmp_path):
    out = tmp_path / "out"
    args = ["documents", "--refs", str(REFS), "--audio", str(audio_dir), "-o", str(out)]
    result = CliRunner().invoke(data_app, args)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"{out}: 3 utterances from 2 chapters, words per document min 17, median 26, max 36; "
        "skipped 2 without audio, 0 alone in their chapter (no document)"
    ]
    assert len(read_rows(out / "manifest.jsonl")) == 3


def test_cli_errors_are_one_line(audio_dir, tmp_path):
    bad_ids = tmp_path / "bad.tsv"
    bad_ids.write_text("utt1\ta text\t[]\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    out = str(tmp_path / "out")
    cases = {
        ("--refs", str(REFS), "-o", out): "give the audio as one of --audio or --audio-manifest",
        ("--refs", str(REFS), "--audio", str(audio_dir), "--audio-manifest", "m.jsonl", "-o", out):
            "give the audio as one of --audio or --audio-manifest",
        ("--refs", str(bad_ids), "--audio", str(audio_dir), "-o", out):
            "utt1: is not a LibriSpeech utterance id",
        ("--refs", str(REFS), "--refs", str(REFS), "--audio", str(audio_dir), "-o", out):
            "is also in an earlier --refs",
        ("--refs", str(REFS), "--audio", str(empty), "-o", out):
            "nothing to write: of 5 utterances, 5 have no audio and 0 are alone",
        ("--refs", str(REFS), "--audio", str(tmp_path / "nope"), "-o", out): "is not a folder",
    }  # fmt: skip
    for args, problem in cases.items():
        result = CliRunner().invoke(data_app, ["documents", *args])
        assert result.exit_code == 1, (args, result.output)
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("ctxasr: error: ") and problem in line, (args, line)
    assert not (tmp_path / "out").exists()
