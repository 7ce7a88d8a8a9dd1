"""OpenAI's own Python client against a live server: the API is what it expects."""

from __future__ import annotations

from pathlib import Path

import pytest

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LINNELL = EXAMPLES / "linnell-8k.wav"  # 29 s, LibriSpeech at 8 kHz
QUILTER = Path(__file__).resolve().parents[1] / "fixtures" / "audio" / "1272-128104-0000.wav"


@pytest.fixture(scope="module")
def client(live_server):
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0)


def test_models_lists_the_loaded_model_and_whisper_1(client):
    names = {m.id for m in client.models.list()}
    assert names == {"tiny.en", "whisper-1"}
    assert client.models.retrieve("whisper-1").owned_by == "ctxasr"


def test_context_through_the_client_fixes_the_terms(client):
    with LINNELL.open("rb") as f:
        plain = client.audio.transcriptions.create(model="whisper-1", file=f)
    terms = (EXAMPLES / "linnell.terms.txt").read_text()
    with LINNELL.open("rb") as f:
        # A list in extra_body arrives as repeated ``context[]`` fields.
        biased = client.audio.transcriptions.create(
            model="whisper-1", file=f, extra_body={"context": terms.splitlines()}
        )
    assert "Birket" not in plain.text and "Birket" in biased.text
    assert "Birket" in biased.context_used
    assert biased.usage.seconds == 30  # 29.6 s of audio, whole seconds rounded up


def test_verbose_json_with_words_and_context_text(client):
    with LINNELL.open("rb") as f:
        result = client.audio.transcriptions.create(
            model="tiny.en", file=f, response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
            extra_body={"context_text": "Victorian painters and their idylls: landscapes by Birket Foster, "
                                         "portraits by John Collier."},
        )  # fmt: skip
    assert "Birket" in result.text and result.language == "en"
    assert 29 < result.duration < 30
    assert result.segments and result.segments[0].start < 1.0
    assert all(s.end <= result.duration for s in result.segments)
    assert any(w.word == "Birket" for w in result.words)
    starts = [w.start for w in result.words]
    assert starts == sorted(starts)
    assert any(p["selected"] for p in result.context_picks)
    assert result.domain_lm["words"] == 13  # context_text is the domain LM's document too


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt"])
def test_text_formats(client, fmt):
    with QUILTER.open("rb") as f:
        body = client.audio.transcriptions.create(model="whisper-1", file=f, response_format=fmt,
                                                  prompt="Mr. Quilter")  # fmt: skip
    assert isinstance(body, str) and "Quilter" in body and body.endswith("\n")
    if fmt == "srt":
        assert body.startswith("1\n00:00:00,000 --> ")
    if fmt == "vtt":
        assert body.startswith("WEBVTT\n")


def test_errors_surface_as_openai_exceptions(client, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not audio")
    with pytest.raises(openai.APIStatusError) as caught, bad.open("rb") as f:
        client.audio.transcriptions.create(model="whisper-1", file=f)
    assert caught.value.status_code == 415
    assert caught.value.body["code"] == "unsupported_media_type"
    with pytest.raises(openai.BadRequestError) as caught, QUILTER.open("rb") as f:
        client.audio.transcriptions.create(model="gpt-4o-transcribe", file=f)
    assert caught.value.body["code"] == "model_not_found"
