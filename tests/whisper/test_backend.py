"""The torch backend inside the whole pipeline: transcripts, fusion, word timings."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from ctxasr.transcribe import ModelOptions, TranscribeOptions, Transcriber

pytestmark = pytest.mark.model

EXAMPLE = Path(__file__).parents[2] / "examples"
JFK = Path(__file__).parents[1] / "fixtures" / "audio" / "jfk.flac"
TERMS = ["Linnell's", "idylls", "Birket", "Carker", "John Collier", "shampooer"]


@pytest.fixture(scope="module")
def torch_transcriber() -> Transcriber:
    return Transcriber(model_options=ModelOptions(backend="torch"))


@pytest.fixture(scope="module")
def ct2_float32() -> Transcriber:
    return Transcriber(model_options=ModelOptions(compute_type="float32"))


def test_beam_search_transcript_matches_ctranslate2(torch_transcriber, ct2_float32):
    assert torch_transcriber.transcribe(JFK).text == ct2_float32.transcribe(JFK).text


def test_fusion_alone_spells_the_terms_the_plain_search_misses(torch_transcriber):
    audio = EXAMPLE / "linnell-8k.wav"
    plain = torch_transcriber.transcribe(audio).text
    assert "Birket " not in plain and "idylls" not in plain  # tiny.en: "Burkett", "idles"
    # Weight 3: at 2 the search still ends "Birk|ett" (with nothing respelled afterwards:
    # fusion-only terms are not respelled into).
    fused = torch_transcriber.transcribe(audio, TERMS, options=TranscribeOptions(
        retriever="all", fusion_weight=3.0, context_prompt=False))  # fmt: skip
    assert "Birket Foster" in fused.text and "idylls" in fused.text
    # Everything else unchanged: fusion rewards terms, it does not rewrite the rest.
    assert fused.text.split()[-6:] == plain.split()[-6:]
    assert set(fused.context_used) == set(TERMS)


def test_fusion_with_speech_aware_pruning_uses_only_what_was_heard(torch_transcriber):
    distractors = ["Quetzalcoatl", "Brzezinski", "Kubernetes", "Zanzibar", "etcd"]
    # Neither prompt nor respelling: only pass 2's graph can spell the picked terms.
    only_graph = TranscribeOptions(fusion_weight=3.0, context_prompt=False, respell_terms=False)
    result = torch_transcriber.transcribe(
        EXAMPLE / "linnell-8k.wav", TERMS + distractors, options=only_graph)  # fmt: skip
    assert "Birket Foster" in result.text and "idylls" in result.text
    assert not set(distractors) & set(result.context_used)
    # Without fusion the same passes keep tiny.en's spellings.
    faint = dataclasses.replace(only_graph, fusion_weight=1e-4)
    plain = torch_transcriber.transcribe(EXAMPLE / "linnell-8k.wav", TERMS + distractors,
                                         options=faint)  # fmt: skip
    assert "Burkett Foster" in plain.text and "idles" in plain.text


def test_word_timestamps_come_from_the_alignment_heads(torch_transcriber, ct2_float32):
    options = dataclasses.replace(TranscribeOptions(), word_timestamps=True)
    ours = [w for s in torch_transcriber.transcribe(JFK, options=options).segments for w in s.words]
    theirs = [w for s in ct2_float32.transcribe(JFK, options=options).segments for w in s.words]
    assert [w.word for w in ours] == [w.word for w in theirs]
    assert all(a.start <= a.end <= b.start + 1e-6 for a, b in itertools.pairwise(ours))
    # The same heads, filter and time warping as CTranslate2's aligner: timings agree to
    # within a frame or two of 20 ms.
    worst = max(max(abs(a.start - b.start), abs(a.end - b.end))
                for a, b in zip(ours, theirs, strict=True))  # fmt: skip
    assert worst <= 0.1
    assert all(0 < w.probability <= 1 for w in ours)


def test_fusion_needs_a_backend_whose_search_ctxasr_owns():
    with pytest.raises(ValueError, match="backend torch, speechllm or madeon"):
        Transcriber().transcribe(JFK, ["Kennedy"], options=TranscribeOptions(fusion_weight=1.0))


def test_backend_options_are_checked():
    with pytest.raises(ValueError, match="backend"):
        ModelOptions(backend="onnx")
    with pytest.raises(ValueError, match="torch_dtype"):
        ModelOptions(backend="torch", torch_dtype="int4")
    with pytest.raises(ValueError, match="fusion_weight"):
        TranscribeOptions(context_prompt=False)
