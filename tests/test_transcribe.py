"""End-to-end transcription with the packaged tiny.en model on real recordings."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from ctxasr import ContextTerm, Transcript
from ctxasr.audio import SAMPLE_RATE, load_audio
from ctxasr.context.prompt import PROMPT_BUDGET

pytestmark = pytest.mark.model


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def test_stereo_44k_recording_is_transcribed(transcriber, audio_dir):
    result = transcriber.transcribe(audio_dir / "jfk.flac")
    assert isinstance(result, Transcript)
    assert " ".join(words(result.text)).endswith("ask what you can do for your country")
    assert "fellow americans" in " ".join(words(result.text))
    assert result.duration == pytest.approx(11.0, abs=0.05)
    assert result.model == "tiny.en" and result.language == "en"
    assert result.context_used == ()
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts) and all(0 <= s.start < s.end <= 11.0 for s in result.segments)


def test_context_terms_come_out_spelled_as_listed(transcriber, audio_dir):
    # Without context, tiny.en writes "there under", "idles" and "Burkett"/"Birkett";
    # with the terms listed it must use their spelling.
    plain = transcriber.transcribe(audio_dir / "LJ050-0131.wav").text
    assert "thereunder" not in plain
    biased = transcriber.transcribe(audio_dir / "LJ050-0131.wav", context=["thereunder"])
    assert "thereunder" in words(biased.text)
    assert biased.context_used == ("thereunder",)

    plain8k = words(transcriber.transcribe(audio_dir / "1272-128104-0004_8k.wav").text)
    assert "idylls" not in plain8k and "birket" not in plain8k
    terms = ["Linnell's", "idylls", "Birket", "Carker", "Collier", "shampooer"]
    biased8k = transcriber.transcribe(audio_dir / "1272-128104-0004_8k.wav", context=terms)
    for term in terms:
        assert term in biased8k.text, term


def test_context_reaches_every_window(transcriber, audio_dir):
    # Two utterances 4 s apart become two decoder windows; the term must be used in both.
    clip = load_audio(audio_dir / "LJ050-0131.wav")
    gap = np.zeros(4 * SAMPLE_RATE, dtype=np.float32)
    audio = np.concatenate([clip, gap, clip])
    result = transcriber.transcribe(audio, context=["thereunder"])
    assert words(result.text).count("thereunder") == 2
    second = len(clip) / SAMPLE_RATE + 4.0
    assert any(s.start >= second - 0.5 for s in result.segments)
    assert result.duration == pytest.approx(len(audio) / SAMPLE_RATE)


@pytest.mark.parametrize("kind", ["zeros", "faint-noise"])
def test_silence_with_a_large_context_gives_an_empty_transcript(transcriber, kind):
    rng = np.random.default_rng(0)
    n = 20 * SAMPLE_RATE
    audio = (
        np.zeros(n, np.float32) if kind == "zeros" else rng.normal(0, 1e-3, n).astype(np.float32)
    )
    terms = [f"Zorbulon{i}" for i in range(1000)]
    for context in ((), terms):
        result = transcriber.transcribe(audio, context=context)
        assert result.text == "" and result.segments == ()
        assert result.context_used == ()  # nothing heard, nothing picked
    whole_list = dataclasses.replace(transcriber.options, retriever="all")
    result = transcriber.transcribe(audio, context=terms, options=whole_list)
    assert result.text == "" and result.segments == ()
    assert len(result.context_used) > 0  # the terms were offered, and none came out


def test_large_context_is_cut_to_the_prompt_budget_most_relevant_first(transcriber):
    terms = [ContextTerm(f"term{i}", weight=1.0) for i in range(1000)]
    terms.append(ContextTerm("Quilter", weight=5.0))
    prompt = transcriber.prompt_for(terms)
    assert prompt.terms[0] == "Quilter"
    assert 0 < len(prompt.tokens) <= PROMPT_BUDGET
    assert len(prompt.terms) < 1001


def test_word_timestamps_are_ordered_and_inside_the_recording(transcriber, audio_dir):
    from dataclasses import replace

    opts = replace(transcriber.options, word_timestamps=True)
    result = transcriber.transcribe(audio_dir / "1272-128104-0000.wav", options=opts)
    ws = result.words
    assert len(ws) >= 15
    assert all(0 <= w.start <= w.end <= result.duration + 1e-6 for w in ws)
    assert [w.start for w in ws] == sorted(w.start for w in ws)
    assert "".join(w.word for w in ws).strip() == result.text


def test_progress_reports_audio_time_up_to_the_duration(transcriber, audio_dir):
    calls: list[tuple[float, float | None]] = []
    result = transcriber.transcribe(
        audio_dir / "jfk.flac", progress=lambda d, t: calls.append((d, t))
    )
    done = [d for d, _ in calls]
    assert len(calls) >= 2 and done == sorted(done)
    assert calls[0][1] == pytest.approx(11.0, abs=0.05)  # the container's duration, up front
    assert calls[-1] == (result.duration, result.duration)


def test_empty_sample_array_is_an_error(transcriber):
    from ctxasr import AudioError

    with pytest.raises(AudioError, match="no audio samples"):
        transcriber.transcribe(np.zeros(0, np.float32))


def rare_english_words(n: int) -> list[str]:
    """``n`` real but rare English words (wordfreq's ranks 100,000 on): a long context."""
    from wordfreq import top_n_list

    pool = [w for w in top_n_list("en", 200_000)[100_000:] if w.isalpha() and len(w) > 3]
    return pool[:n]


def test_two_passes_bring_in_misheard_terms_from_a_long_context(transcriber, audio_dir):
    audio = audio_dir / "1272-128104-0004_8k.wav"
    plain = transcriber.transcribe(audio)
    assert "idylls" not in plain.text and "Birket" not in plain.text
    context = ["idylls", "Birket", *rare_english_words(2000)]
    result = transcriber.transcribe(audio, context)
    assert "idylls" in result.text and "Birket" in result.text
    picked = {e.term: e for p in result.picks for e in p.selected}
    assert picked["idylls"].span == "idles" and not picked["idylls"].in_text
    assert any(p.second_pass for p in result.picks)
    assert {"idylls", "Birket"} <= set(result.context_used)

    # In the 29 s stretch that holds the terms, only the terms' own words change. (The
    # recording's last word, "man", alone in a stretch of its own, can come out as a
    # distractor one sound away, "Manz": a known limit of picking by sound alone.)
    def head(t: Transcript) -> set[str]:
        return {w for s in t.segments if s.end <= 29.0 for w in words(s.text)}

    changed = head(plain) ^ head(result)
    assert changed <= {"idles", "idylls", "burkett", "birket", "birkett", "foster's", "fosters"}


def test_unrelated_speech_with_a_ten_thousand_term_context_is_unchanged(transcriber, audio_dir):
    audio = audio_dir / "jfk.flac"
    plain = transcriber.transcribe(audio)
    result = transcriber.transcribe(audio, rare_english_words(10_000))
    assert result.text == plain.text
    assert [s.text for s in result.segments] == [s.text for s in plain.segments]


def test_retriever_none_ignores_the_context(transcriber, audio_dir):
    audio = audio_dir / "LJ050-0131.wav"
    none = dataclasses.replace(transcriber.options, retriever="none")
    result = transcriber.transcribe(audio, ["thereunder"], options=none)
    assert result.text == transcriber.transcribe(audio).text
    assert result.context_used == () and result.picks == ()


def test_verification_is_automatic_by_context_size():
    from ctxasr import TranscribeOptions

    auto = TranscribeOptions()
    assert auto.verify is None
    assert not auto.verifies(auto.verify_from - 1) and auto.verifies(auto.verify_from)
    assert TranscribeOptions(verify=True).verifies(1)
    assert not TranscribeOptions(verify=False).verifies(10**6)
    with pytest.raises(ValueError, match="verify_from"):
        TranscribeOptions(verify_from=0)


def test_second_passes_are_verified_from_verify_from_terms_on(transcriber, audio_dir):
    audio = audio_dir / "1272-128104-0004_8k.wav"
    context = ["idylls", "Birket", *rare_english_words(2000)]

    def deltas(**changes) -> list[float | None]:
        options = dataclasses.replace(transcriber.options, **changes)
        result = transcriber.transcribe(audio, context, options=options)
        return [e.verify for p in result.picks for e in p.selected if not e.in_text]

    assert all(d is None for d in deltas())  # 2,002 terms: under the default 30,000
    assert any(d is not None for d in deltas(verify_from=len(context)))
    assert all(d is None for d in deltas(verify=False, verify_from=1))
