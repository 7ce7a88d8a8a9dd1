"""``backend="speechllm"`` in the pipeline: Whisper cuts and picks, the speech LLM
transcribes; the CLI takes the backend and its checkpoint, and refuses what it cannot do."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def transcriber(tiny_run: Path) -> Transcriber:
    """The pipeline over the tiny recipe's checkpoint, which transcribes ``clip`` exactly."""
    return Transcriber(model_options=ModelOptions(backend="speechllm", checkpoint=str(tiny_run)))


@pytest.mark.parametrize("retriever", ["phonetic", "all", "none"])
def test_the_speech_llm_transcribes_with_the_picked_terms(transcriber, clip: Path, clip_text: str,
                                                           retriever: str) -> None:  # fmt: skip
    opts = TranscribeOptions(retriever=retriever)
    result = transcriber.transcribe(clip, ["Quilter", "zanzibar"], options=opts)
    assert result.text.lower() == clip_text
    assert result.model == "speechllm:run"
    assert result.segments and 0.0 <= result.segments[0].start < result.segments[-1].end
    assert result.segments[-1].end <= result.duration + 1e-6
    if retriever == "phonetic":  # pass 1 heard the term and the plan recorded the pick
        assert any(e.term == "Quilter" for p in result.picks for e in p.selected)
        assert "Quilter" in result.text
    if retriever == "all":  # the whole (short) list in the LLM's prompt
        assert result.context_used == ("Quilter", "zanzibar") and result.picks == ()
    if retriever == "none":
        assert result.context_used == () and result.picks == ()


@pytest.mark.parametrize("retriever", ["phonetic", "all"])
def test_fusion_runs_in_the_speech_llms_search(transcriber, clip: Path, clip_text: str,
                                               retriever: str, monkeypatch) -> None:  # fmt: skip
    from ctxasr.speechllm.fusion import GraphHook

    fused: list[int] = []  # the hypothesis lengths the graph was walked for
    adjust = GraphHook.adjust
    monkeypatch.setattr(GraphHook, "adjust",
                        lambda self, tokens, logp: fused.append(len(tokens)) or
                        adjust(self, tokens, logp))  # fmt: skip
    opts = TranscribeOptions(fusion_weight=1.0, beam_size=2, retriever=retriever)
    result = transcriber.transcribe(clip, ["Quilter"], options=opts)
    assert result.text.lower() == clip_text
    assert 0 in fused and max(fused) >= 10  # every step of the search, from the first


def test_what_the_speech_llm_cannot_do_is_refused(transcriber, clip: Path) -> None:
    with pytest.raises(OptionError, match="word timestamps"):
        transcriber.transcribe(clip, options=TranscribeOptions(word_timestamps=True))
    with pytest.raises(OptionError, match="checkpoint needs backend"):
        ModelOptions(checkpoint="somewhere")


def test_the_cli_takes_the_backend_and_a_bad_checkpoint_is_one_line(tiny_run: Path, clip: Path,
                                                                   tmp_path: Path) -> None:  # fmt: skip
    terms = tmp_path / "terms.txt"
    terms.write_text("Quilter\n")
    ok = CliRunner().invoke(app, ["transcribe", str(clip), "--backend", "speechllm",
                                  "--checkpoint", str(tiny_run), "--context", str(terms)])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert "Quilter" in ok.output
    bad = tmp_path / "empty"
    bad.mkdir()
    out = CliRunner().invoke(app, ["transcribe", str(clip), "--backend", "speechllm",
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
