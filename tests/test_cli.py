"""The command line: exit codes, one-line errors, outputs. Runs the real console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def ctxasr(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CTXASR_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "ctxasr.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ctxasr: error: ")
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]
    assert proc.stdout == ""


@pytest.fixture
def silent_wav(tmp_path: Path) -> Path:
    path = tmp_path / "silence.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(b"\0\0" * 16000 * 3)
    return path


def test_missing_audio_file(tmp_path):
    missing = tmp_path / "nope.wav"
    assert_one_line_error(ctxasr("transcribe", str(missing)), str(missing), "no such file")


def test_corrupt_audio_file(tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(os.urandom(4096))
    assert_one_line_error(ctxasr("transcribe", str(bad)), str(bad), "cannot be decoded")


def test_file_without_audio_stream(tmp_path):
    import av
    import numpy as np

    video = tmp_path / "video.mp4"
    with av.open(str(video), "w") as out:
        stream = out.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    assert_one_line_error(ctxasr("transcribe", str(video)), str(video), "no audio stream")


def test_zero_length_audio(tmp_path):
    empty = tmp_path / "empty.wav"
    with wave.open(str(empty), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
    assert_one_line_error(ctxasr("transcribe", str(empty)), str(empty), "no audio samples")


def test_context_file_not_utf8(tmp_path, silent_wav):
    terms = tmp_path / "terms.txt"
    terms.write_bytes("Müller\n".encode("latin-1"))
    proc = ctxasr("transcribe", str(silent_wav), "--context", str(terms))
    assert_one_line_error(proc, str(terms), "not UTF-8")


def test_context_file_without_terms(tmp_path, silent_wav):
    terms = tmp_path / "terms.txt"
    terms.write_text("# only a comment\n\n   \n", encoding="utf-8")
    proc = ctxasr("transcribe", str(silent_wav), "--context", str(terms))
    assert_one_line_error(proc, str(terms), "no usable term")


def test_unknown_model(silent_wav):
    proc = ctxasr("transcribe", str(silent_wav), "--model", "no-such-model")
    assert_one_line_error(proc, "no-such-model", "unknown model")


def test_usage_errors_exit_2(silent_wav):
    assert ctxasr("transcribe").returncode == 2
    assert ctxasr("transcribe", str(silent_wav), "--format", "docx").returncode == 2
    assert ctxasr("transcribe", str(silent_wav), "--retriever", "magic").returncode == 2
    assert ctxasr("transcribe", str(silent_wav), "--backend", "onnx").returncode == 2
    fusion_on_ct2 = ctxasr("transcribe", str(silent_wav), "-k", "Birket", "--fusion-weight", "2")
    assert fusion_on_ct2.returncode == 2 and "--backend torch" in fusion_on_ct2.stderr
    assert ctxasr("transcribe", str(silent_wav), "--backend", "torch",
                  "--fusion-weight", "-1").returncode == 2  # fmt: skip
    assert ctxasr("no-such-command").returncode == 2


def test_output_never_overwrites_the_input(silent_wav):
    before = silent_wav.read_bytes()
    proc = ctxasr("transcribe", str(silent_wav), "-o", str(silent_wav))
    assert_one_line_error(proc, "input recording")
    assert silent_wav.read_bytes() == before


@pytest.mark.model
def test_silence_with_a_thousand_terms_gives_an_empty_transcript(tmp_path, silent_wav):
    terms = tmp_path / "terms.txt"
    terms.write_text("".join(f"Xylophorax{i}\n" for i in range(1000)), encoding="utf-8")
    proc = ctxasr("transcribe", str(silent_wav), "-c", str(terms), "-f", "json", "-q")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["text"] == "" and out["segments"] == []
    assert out["duration"] == pytest.approx(3.0)
    assert out["context_used"] == []  # nothing heard, nothing picked
    proc = ctxasr(
        "transcribe", str(silent_wav), "-c", str(terms), "-f", "json", "-q", "--retriever", "all"
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["text"] == "" and out["segments"] == []
    assert len(out["context_used"]) > 10  # the whole-list prompt, as far as it fits


@pytest.mark.model
def test_json_output_with_context_and_word_timestamps(tmp_path):
    audio = FIXTURES / "audio" / "LJ050-0131.wav"
    terms = tmp_path / "terms.txt"
    terms.write_text("# legal words\nthereunder\t2\nregard\n", encoding="utf-8")
    out_file = tmp_path / "out.json"
    proc = ctxasr(
        "transcribe",
        str(audio),
        "-c",
        str(terms),
        "-k",
        "system, frequent",
        "-f",
        "json",
        "--word-timestamps",
        "-o",
        str(out_file),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    out = json.loads(out_file.read_text(encoding="utf-8"))
    assert set(out) >= {"text", "segments", "words", "duration", "model", "context_used"}
    assert set(out["context_used"]) == {"thereunder", "regard", "system", "frequent"}
    assert "thereunder" in out["text"]
    assert out["model"] == "tiny.en"
    assert out["words"] and all(w["start"] <= w["end"] for w in out["words"])


@pytest.mark.model
@pytest.mark.parametrize(
    "fmt,marker", [("srt", " --> "), ("vtt", "WEBVTT"), ("tsv", "start\tend\ttext")]
)
def test_subtitle_formats(fmt, marker):
    proc = ctxasr("transcribe", str(FIXTURES / "audio" / "jfk.flac"), "-f", fmt)
    assert proc.returncode == 0, proc.stderr
    assert marker in proc.stdout and "country" in proc.stdout


@pytest.mark.model
def test_context_text_extracts_terms(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text(
        "Slide 3 — Review of activities\n\nThe Commission reviews activities thereunder.\n"
        "Thereunder, the Commission must report.\n",
        encoding="utf-8",
    )
    proc = ctxasr(
        "transcribe",
        str(FIXTURES / "audio" / "LJ050-0131.wav"),
        "--context-text",
        str(notes),
        "-f",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert any(t.casefold() == "thereunder" for t in out["context_used"])
    assert "thereunder" in out["text"].casefold()


def test_score_reproduces_a_published_result():
    bias = FIXTURES / "biasing"
    name = "test-clean.s1.b1+db-rnnt.biasing_1000.tsv"
    proc = ctxasr(
        "score",
        "--refs",
        str(bias / "ref" / "test-clean.biasing_100.rare.tsv.gz"),
        "--hyps",
        str(bias / "hyp" / f"{name}.gz"),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (bias / "results" / f"{name}.result").read_text()


@pytest.mark.model
def test_output_file_gets_normal_permissions_and_replaces_atomically(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("earlier result\n")
    proc = ctxasr("transcribe", str(FIXTURES / "audio" / "1272-128104-0000.wav"), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "apostle" in out.read_text()
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary file left
