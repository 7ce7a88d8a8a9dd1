"""``context_text`` over HTTP: its text reaches the transcriber as the document (the
domain LM's), ``prompt`` does not, ``verbose_json`` reports the domain LM, and an upload
that is not text answers 400. A fake model records what it was given."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from ctxasr.results import DomainLM, Transcript
from ctxasr.server import ServerSettings, create_app
from ctxasr.transcribe import TranscribeOptions

QUILTER = Path(__file__).resolve().parents[1] / "fixtures" / "audio" / "1272-128104-0000.wav"
PATH = "/v1/audio/transcriptions"


@dataclass
class RecordingTranscriber:
    """Records each call's terms, document and options; builds a "domain LM" of the
    document's words, as the real one reports it."""

    calls: list[dict] = field(default_factory=list)
    resolved: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(name="fake"))
    multilingual: bool = False
    backend: str = "ct2"
    options: TranscribeOptions = field(default_factory=TranscribeOptions)

    def encode(self, text: str) -> list[int]:
        return [len(w) for w in text.split()]

    def transcribe(self, audio, context, *, document, options, progress, on_segment):
        self.calls.append({"terms": [t.text for t in context], "document": document,
                           "options": options})  # fmt: skip
        lm = None
        if document and options.domain_lm:
            lm = DomainLM(len(document.split()), 0, options.lm_order, 0, 0, 0.0, "",
                          options.lm_weight, options.ilm_weight)  # fmt: skip
        return Transcript(text="Mister Quilter", segments=(), duration=5.9, model="fake",
                          language="en", context_used=tuple(t.text for t in context),
                          domain_lm=lm)  # fmt: skip


@pytest.fixture
def fake():
    return RecordingTranscriber()


def post(fake: RecordingTranscriber, data: dict | None = None, files: dict | None = None,
         **settings) -> httpx.Response:  # fmt: skip
    """One request to an app whose model is ``fake``, in process."""
    import asyncio

    app = create_app(ServerSettings(**settings), transcriber=fake)

    async def go() -> httpx.Response:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                audio = {"file": ("q.wav", QUILTER.read_bytes(), "audio/wav")}
                return await client.post(PATH, data=data, files={**audio, **(files or {})})

    return asyncio.run(go())


def test_context_text_fields_and_files_are_the_document_and_prompt_is_not(fake):
    r = post(fake, data={"context_text": "Slide 1: Kubernetes and etcd.", "prompt": "Dalziel",
                         "response_format": "verbose_json"},
             files={"context_text[]": ("paper.txt", b"Raft, by Ongaro.\n", "text/plain")})  # fmt: skip
    assert r.status_code == 200, r.text
    (call,) = fake.calls
    assert call["document"] == "Slide 1: Kubernetes and etcd.\n\nRaft, by Ongaro."
    assert {"Kubernetes", "Ongaro", "Dalziel"} <= set(call["terms"])
    assert r.json()["domain_lm"]["words"] == 8


def test_no_context_text_no_document_and_no_domain_lm_in_the_answer(fake):
    r = post(fake, data={"prompt": "Mister Quilter", "response_format": "verbose_json"})
    assert r.status_code == 200, r.text
    assert fake.calls[0]["document"] is None and "domain_lm" not in r.json()


def test_the_servers_domain_lm_settings_reach_each_request(fake):
    r = post(fake, data={"context_text": "Kubernetes and etcd.", "response_format": "verbose_json"},
             lm_weight=0.5, ilm_weight=0.0)  # fmt: skip
    assert r.status_code == 200, r.text
    assert (r.json()["domain_lm"]["lm_weight"], r.json()["domain_lm"]["ilm_weight"]) == (0.5, 0.0)
    r = post(fake, data={"context_text": "Kubernetes and etcd.", "response_format": "verbose_json"},
             domain_lm=False)  # fmt: skip
    assert fake.calls[-1]["options"].domain_lm is False and "domain_lm" not in r.json()


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"%PDF-1.7\n\0\0\x01binary", "is a binary file, not text"),
     ("Zürich".encode("latin-1"), "is not UTF-8 text (invalid byte at offset 1)")],
)  # fmt: skip
def test_a_context_text_upload_that_is_not_text_answers_400(fake, content, problem):
    r = post(fake, files={"context_text": ("slides.pdf", content, "application/pdf")})
    assert r.status_code == 400 and not fake.calls
    assert r.json()["error"] == {"message": f"field 'context_text': file 'slides.pdf' {problem}",
                                 "type": "invalid_request_error", "param": "context_text",
                                 "code": "invalid_context"}  # fmt: skip
