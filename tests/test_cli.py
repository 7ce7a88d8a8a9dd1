"""The command line: exit codes, one-line errors, outputs. Runs the real console script;
what reaches the transcriber (the document, the options) is checked in process, with a
fake model that records its calls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path
from typing import ClassVar

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


# --- what reaches the transcriber, in process, without a model ------------------------


class RecordingTranscriber:
    """Stands in for ``Transcriber``: records its options and each call's context and
    document, and reports a domain LM when given a document (as the real one does)."""

    calls: ClassVar[list[dict]] = []

    def __init__(self, model=None, options=None, model_options=None) -> None:
        from ctxasr.models import ResolvedModel

        self.resolved = ResolvedModel(name="fake", path="fake")
        self.options = options

    def transcribe(self, audio, context=(), *, document=None, progress=None):
        from ctxasr.results import DomainLM, Transcript

        RecordingTranscriber.calls.append({"audio": str(audio), "options": self.options,
                                           "terms": [t.text for t in context],
                                           "document": document})  # fmt: skip
        lm = DomainLM(len(document.split()), 0, 4, 0, 0, 0.0, "", 0.3, 0.3) if document else None
        return Transcript(text="words", segments=(), duration=1.0, model="fake", language="en",
                          context_used=tuple(t.text for t in context), domain_lm=lm)  # fmt: skip


@pytest.fixture
def fake_model(monkeypatch) -> list[dict]:
    """The transcriber's calls; batch rows run in this process."""
    import ctxasr.transcribe
    from ctxasr.batch import job as job_module
    from ctxasr.batch.rows import transcribe_row

    def engine(tasks, setup, workers):
        fake = RecordingTranscriber(options=setup.options)
        for task in tasks:
            yield transcribe_row(fake, task)

    monkeypatch.setattr(RecordingTranscriber, "calls", [])
    monkeypatch.setattr(ctxasr.transcribe, "Transcriber", RecordingTranscriber)
    monkeypatch.setattr(job_module, "_engine", lambda options: engine)
    monkeypatch.delenv("CTXASR_DEBUG", raising=False)
    return RecordingTranscriber.calls


def in_process(*args: str):
    from typer.testing import CliRunner

    from ctxasr.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.fixture
def documents(tmp_path) -> tuple[Path, Path]:
    slides = tmp_path / "slides.txt"
    slides.write_text("Slide 1: Kubernetes and etcd\n\n", encoding="utf-8")
    paper = tmp_path / "paper.txt"
    paper.write_bytes("\ufeffThe Raft consensus of etcd, by Ongaro.\n".encode())  # a BOM
    return slides, paper


def test_transcribe_passes_the_context_texts_as_one_document(fake_model, silent_wav, documents):
    slides, paper = documents
    result = in_process("transcribe", str(silent_wav), "--context-text", str(slides),
                        "--context-text", str(paper), "-k", "Istio", "-f", "json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    (call,) = fake_model
    # A blank line between the files, the BOM dropped.
    assert (
        call["document"] == "Slide 1: Kubernetes and etcd\n\nThe Raft consensus of etcd, by Ongaro."
    )
    assert call["terms"][0] == "Istio" and {"Kubernetes", "Ongaro"} <= set(call["terms"])
    assert json.loads(result.stdout)["domain_lm"]["words"] == 12


def test_transcribe_without_context_text_passes_no_document(fake_model, silent_wav):
    result = in_process("transcribe", str(silent_wav), "-k", "Istio", "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert fake_model[0]["document"] is None
    assert "domain_lm" not in json.loads(result.stdout)


def test_domain_lm_flags_reach_the_options(fake_model, silent_wav):
    result = in_process("transcribe", str(silent_wav), "-q")
    assert result.exit_code == 0, result.stderr
    defaults = fake_model[-1]["options"]
    assert (defaults.domain_lm, defaults.lm_weight, defaults.ilm_weight) == (True, 0.3, 0.3)
    result = in_process("transcribe", str(silent_wav), "--no-domain-lm", "--lm-weight", "0.5",
                        "--ilm-weight", "0", "-q")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    given = fake_model[-1]["options"]
    assert (given.domain_lm, given.lm_weight, given.ilm_weight) == (False, 0.5, 0.0)


@pytest.mark.parametrize("flag", ["--lm-weight", "--ilm-weight"])
def test_weight_out_of_range_is_a_usage_error(fake_model, silent_wav, flag):
    result = in_process("transcribe", str(silent_wav), flag, "5")
    assert result.exit_code == 2 and not fake_model
    # click's usage error (exit 2, as every out-of-range flag): one line naming the flag.
    (line,) = [x for x in result.stderr.splitlines() if "Invalid value" in x]
    assert f"'{flag}'" in line and "less than or equal to 2" in line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["transcribe", "batch", "eval", "serve"])
def test_every_command_offers_the_domain_lm_flags(command):
    result = in_process(command, "--help")
    assert result.exit_code == 0
    for flag in ("--domain-lm", "--no-domain-lm", "--lm-weight", "--ilm-weight"):
        assert flag in result.stdout, (command, flag)


def test_batch_puts_the_job_document_before_each_rows_own(fake_model, tmp_path, silent_wav,
                                                          documents):  # fmt: skip
    slides, _ = documents
    (tmp_path / "own.txt").write_text("Row two's chapter on Paxos.\n", encoding="utf-8")
    rows = [{"audio": silent_wav.name}, {"audio": silent_wav.name, "context_text_file": "own.txt"},
            {"audio": silent_wav.name, "context_text": "Row three: Zookeeper."}]  # fmt: skip
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = in_process("batch", str(manifest), "-o", str(out), "--context-text", str(slides),
                        "--lm-weight", "0.7", "-q")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    job = "Slide 1: Kubernetes and etcd"
    assert [c["document"] for c in fake_model] == [
        slides.read_text(), f"{job}\n\nRow two's chapter on Paxos.", f"{job}\n\nRow three: Zookeeper."
    ]  # fmt: skip
    assert all(c["options"].lm_weight == 0.7 for c in fake_model)
    assert all("Kubernetes" in c["terms"] for c in fake_model)


@pytest.mark.model
def test_json_output_says_what_the_domain_lm_was_built_from(tmp_path):
    """The real tiny.en on 2 s of speech: the document's LM is built and reported."""
    clip = tmp_path / "clip.wav"
    with wave.open(str(FIXTURES / "audio" / "1272-128104-0000.wav"), "rb") as w:
        params, frames = w.getparams(), w.readframes(2 * w.getframerate())
    with wave.open(str(clip), "wb") as w:
        w.setparams(params)
        w.writeframes(frames)
    notes = tmp_path / "notes.txt"
    notes.write_text("Mister Quilter is the apostle of the middle classes.\n", encoding="utf-8")
    base = ["transcribe", str(clip), "--context-text", str(notes), "-f", "json", "-q"]
    proc = ctxasr(*base, "--lm-weight", "0.5")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    lm = out["domain_lm"]
    assert lm["words"] == 9 and lm["tokens"] > 0 and lm["ngrams"] > 0 and lm["order"] == 4
    assert (lm["lm_weight"], lm["ilm_weight"]) == (0.5, 0.3) and len(lm["sha256"]) == 64
    assert "quilter" in out["text"].casefold()
    proc = ctxasr(*base, "--no-domain-lm")
    assert proc.returncode == 0, proc.stderr
    assert "domain_lm" not in json.loads(proc.stdout)
