"""``backend="speechllm"`` in the pipeline: Whisper cuts and picks, the speech LLM
transcribes; the CLI takes the backend and its checkpoint, and refuses what it cannot do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("accelerate")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from typer.testing import CliRunner

from ctxasr.cli import app
from ctxasr.options import ModelOptions, OptionError, TranscribeOptions
from ctxasr.transcribe import Transcriber, _clips

ROOT = Path(__file__).resolve().parents[2]
CLIP = ROOT / "tests" / "fixtures" / "audio" / "1272-128104-0000.wav"
TEXT = "mister quilter is the apostle of the middle classes and we are glad to welcome his gospel"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """The tiny recipe, trained on the clip until it transcribes it."""
    root = tmp_path_factory.mktemp("speechllm-pipeline")
    row = {"audio_filepath": str(CLIP), "text": TEXT, "rare_words": ["quilter", "gospel"]}
    (root / "train.jsonl").write_text((json.dumps(row) + "\n") * 2)
    shutil.copy(ROOT / "configs" / "speechllm" / "tiny.toml", root / "tiny.toml")
    result = CliRunner().invoke(app, ["train", "speechllm", str(root / "tiny.toml"), "-q"])
    assert result.exit_code == 0, result.output
    return root / "run"


@pytest.fixture(scope="module")
def transcriber(run: Path) -> Transcriber:
    return Transcriber(model_options=ModelOptions(backend="speechllm", checkpoint=str(run)))


@pytest.mark.parametrize("retriever", ["phonetic", "all", "none"])
def test_the_speech_llm_transcribes_with_the_picked_terms(transcriber, retriever: str) -> None:
    opts = TranscribeOptions(retriever=retriever)
    result = transcriber.transcribe(CLIP, ["Quilter", "zanzibar"], options=opts)
    assert result.text.lower() == TEXT
    assert result.model == "speechllm:run"
    assert result.segments and 0.0 <= result.segments[0].start < result.segments[-1].end
    assert result.segments[-1].end <= result.duration + 1e-6
    if retriever == "phonetic":  # pass 1 heard the term and the plan recorded the pick
        assert any(e.term == "Quilter" for p in result.picks for e in p.selected)
        assert "Quilter" in result.text
    if retriever == "none":
        assert result.context_used == () and result.picks == ()


def test_fusion_runs_in_the_speech_llms_search(transcriber) -> None:
    opts = TranscribeOptions(fusion_weight=1.0, beam_size=2)
    result = transcriber.transcribe(CLIP, ["Quilter"], options=opts)
    assert result.text.lower() == TEXT


def test_what_the_speech_llm_cannot_do_is_refused(transcriber) -> None:
    with pytest.raises(OptionError, match="word timestamps"):
        transcriber.transcribe(CLIP, options=TranscribeOptions(word_timestamps=True))
    with pytest.raises(OptionError, match="checkpoint needs backend"):
        ModelOptions(checkpoint="somewhere")


def test_the_cli_takes_the_backend_and_a_bad_checkpoint_is_one_line(run: Path, tmp_path) -> None:
    terms = tmp_path / "terms.txt"
    terms.write_text("Quilter\n")
    ok = CliRunner().invoke(app, ["transcribe", str(CLIP), "--backend", "speechllm",
                                  "--checkpoint", str(run), "--context", str(terms)])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert "Quilter" in ok.output
    bad = tmp_path / "empty"
    bad.mkdir()
    out = CliRunner().invoke(app, ["transcribe", str(CLIP), "--backend", "speechllm",
                                   "--checkpoint", str(bad)])  # fmt: skip
    assert out.exit_code != 0
    assert "config.json" in out.output and len(out.output.strip().splitlines()) == 1, out.output


def test_pass_one_segments_become_clips_cut_in_the_pauses() -> None:
    spans = [(0.5, 4.0, ("a",)), (4.6, 9.0, ("b",)), (10.0, 20.0, ()), (20.4, 21.0, ("c",))]
    clips = _clips(spans, 22.0)
    assert clips == [(0.0, 9.5, ("a", "b")), (9.5, 22.0, ("c",))]
    assert _clips([], 5.0) == []
    long = _clips([(0.0, 29.0, ()), (29.5, 50.0, ())], 70.0)
    assert all(b - a <= 30.0 for a, b, _ in long) and long[0][0] == 0.0 and long[-1][1] == 70.0
