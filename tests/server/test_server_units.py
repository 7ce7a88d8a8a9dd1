"""The server's pieces without a model: forms, responses, limits, errors, settings."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from fastapi import FastAPI
from starlette.datastructures import FormData, Headers, UploadFile

from ctxasr.context.terms import ContextTerm
from ctxasr.results import DomainLM, Segment, Transcript, Word
from ctxasr.server.errors import ApiError, install_handlers
from ctxasr.server.forms import parse_transcription
from ctxasr.server.limits import Admission, BodyLimit
from ctxasr.server.responses import compression_ratio, verbose
from ctxasr.server.settings import ServerSettings, server_decoding


def upload(content_type: str = "audio/wav", name: str = "a.wav") -> UploadFile:
    import io

    return UploadFile(io.BytesIO(b"RIFF"), filename=name,
                      headers=Headers({"content-type": content_type}))  # fmt: skip


def form(*fields: tuple[str, str], file: UploadFile | None = None) -> FormData:
    items = list(fields)
    if file is not None:
        items.append(("file", file))
    return FormData(items)


def api_error(fn, *args) -> ApiError:
    with pytest.raises(ApiError) as caught:
        fn(*args)
    return caught.value


# --- forms ---------------------------------------------------------------------------


def test_defaults_of_a_bare_request():
    req = parse_transcription(form(file=upload()))
    assert (req.model, req.language, req.response_format) == (None, None, "json")
    assert (req.temperature, req.word_timestamps, req.terms) == (0.0, False, ())


def test_context_from_repeated_fields_lines_weights_and_openai_brackets():
    req = parse_transcription(form(
        ("context", "Kubernetes\netcd\t2\n# a comment"), ("context", "kubernetes"),
        ("context[]", "Istio"), file=upload(),
    ))  # fmt: skip
    assert req.terms == (ContextTerm("Kubernetes"), ContextTerm("etcd", 2.0), ContextTerm("Istio"))


def test_context_files_are_read_as_utf8_text():
    import io

    glossary = UploadFile(io.BytesIO("\ufeffKubernetes\nZürich\n".encode()), filename="g.txt")
    req = parse_transcription(form(("context", "etcd"), ("context", glossary), file=upload()))
    assert [t.text for t in req.terms] == ["etcd", "Kubernetes", "Zürich"]
    latin1 = UploadFile(io.BytesIO("Zürich".encode("latin-1")), filename="l.txt")
    err = api_error(parse_transcription, form(("context_text", latin1), file=upload()))
    assert err.status == 400 and "'l.txt' is not UTF-8" in err.message


def test_context_text_and_prompt_give_lower_weighted_terms():
    req = parse_transcription(form(
        ("context", "Birket"),
        ("context_text", "Slides: Myles Birket Foster painted idylls for Dalziel."),
        ("prompt", "Vocabulary: Dalziel, Linnell."),
        file=upload(),
    ))  # fmt: skip
    weights = {t.text: t.weight for t in req.terms}
    assert weights["Birket"] == 1.0
    assert "Linnell" in weights and weights["Linnell"] <= 0.5
    assert any("Dalziel" in t for t in weights) and all(w <= 1.0 for w in weights.values())


def test_context_text_values_and_files_are_the_document_and_the_prompt_is_not():
    import io

    slides = UploadFile(io.BytesIO("\ufeffRaft, by Ongaro.\n\n".encode()), filename="s.txt")
    req = parse_transcription(form(
        ("context", "Kubernetes"), ("context_text", "  Slide 1: etcd and Istio \n"),
        ("context_text[]", slides), ("context_text", "   "), ("prompt", "Vocabulary: Dalziel."),
        file=upload(),
    ))  # fmt: skip
    # Each value stripped, blank ones left out, a blank line between: as --context-text.
    assert req.document == "Slide 1: etcd and Istio\n\nRaft, by Ongaro."
    assert {"Kubernetes", "Istio", "Ongaro", "Dalziel"} <= {t.text for t in req.terms}
    assert parse_transcription(form(("prompt", "Dalziel"), file=upload())).document is None
    assert parse_transcription(form(file=upload())).document is None


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"%PDF-1.7\n\0\0\x01binary", "is a binary file, not text"),
     ("Zürich".encode("latin-1"), "is not UTF-8 text (invalid byte at offset 1)")],
)  # fmt: skip
@pytest.mark.parametrize("name", ["context_text", "context_text[]", "context"])
def test_a_context_upload_that_is_not_text_answers_400(name, content, problem):
    import io

    bad = UploadFile(io.BytesIO(content), filename="slides.pdf")
    err = api_error(parse_transcription, form((name, bad), file=upload()))
    assert (err.status, err.param, err.code) == (400, name, "invalid_context")
    assert err.message == f"field {name!r}: file 'slides.pdf' {problem}"


def test_a_nul_byte_in_a_context_text_field_answers_400():
    # curl -F "context_text=<slides.pdf" sends the file's bytes as a text field.
    err = api_error(parse_transcription, form(("context_text", "Kubernetes\0\x01"), file=upload()))
    assert (err.status, err.param) == (400, "context_text") and "binary" in err.message


def test_plain_prose_prompt_is_no_error():
    assert parse_transcription(form(("prompt", "the and of it"), file=upload())).terms == ()


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ((("response_format", "docx"),), "response_format"),
        ((("temperature", "1.5"),), "temperature"),
        ((("temperature", "warm"),), "temperature"),
        ((("temperature", "nan"),), "temperature"),
        ((("language", "english!"),), "language"),
        ((("timestamp_granularities[]", "word"),), "timestamp_granularities[]"),  # needs verbose_json
        ((("response_format", "verbose_json"), ("timestamp_granularities[]", "char")),
         "timestamp_granularities[]"),
        ((("model", "a"), ("model", "b")), "model"),
        ((("context", "# only a comment"), ("context", " ")), "context"),
        ((("context", "term\tminus"),), "context"),
        ((("context_text", " -- ... "),), "context_text"),
        ((("stream", "yes"),), "stream"),
    ],
)  # fmt: skip
def test_bad_fields_answer_400_naming_the_field(fields, param):
    err = api_error(parse_transcription, form(*fields, file=upload()))
    assert err.status == 400 and err.param == param and param.split("[")[0] in err.message


def test_missing_file_and_file_given_as_text():
    assert api_error(parse_transcription, form(("model", "x"))).param == "file"
    assert api_error(parse_transcription, form(("file", "not a file"))).status == 400


@pytest.mark.parametrize(
    "declared", ["text/plain", "image/png", "application/json", "application/pdf"]
)
def test_non_audio_media_type_is_415(declared):
    err = api_error(parse_transcription, form(file=upload(declared, "x.bin")))
    assert err.status == 415 and err.code == "unsupported_media_type"


@pytest.mark.parametrize("declared", ["audio/mpeg", "video/mp4", "application/octet-stream", ""])
def test_audio_video_and_unknown_media_types_pass(declared):
    assert parse_transcription(form(file=upload(declared))).upload is not None


# --- responses -----------------------------------------------------------------------


def test_verbose_json_has_openai_fields_and_ctxasr_extras():
    words = (Word(0.0, 0.5, " Hello", 0.9), Word(0.5, 1.2345, " Birket", 0.8))
    t = Transcript(text="Hello Birket", duration=2.0006, model="tiny.en", language="en",
                   segments=(Segment(0.0, 1.2345, " Hello Birket", words, -0.2, 0.01, 0.2),),
                   context_used=("Birket",))  # fmt: skip
    body = verbose(t, words=True, encode=lambda s: [len(w) for w in s.split()])
    assert set(body) >= {"task", "language", "duration", "text", "segments", "words", "usage"}
    seg = body["segments"][0]
    assert seg == {"id": 0, "seek": 0, "start": 0.0, "end": 1.235, "text": " Hello Birket",
                   "tokens": [5, 6], "temperature": 0.2, "avg_logprob": -0.2,
                   "compression_ratio": compression_ratio(" Hello Birket"),
                   "no_speech_prob": 0.01}  # fmt: skip
    assert body["words"][1] == {"word": "Birket", "start": 0.5, "end": 1.235}
    assert body["usage"] == {"type": "duration", "seconds": 3}  # whole seconds, rounded up
    assert body["context_used"] == ["Birket"] and body["context_picks"] == []
    assert "words" not in verbose(t, words=False, encode=lambda s: [])
    assert "domain_lm" not in body  # no document, no domain LM


def test_verbose_json_says_what_the_domain_lm_was_built_from():
    lm = DomainLM(words=12, tokens=15, order=4, ngrams=40, classes=11, seconds=0.01,
                  sha256="ab" * 32, lm_weight=0.3, ilm_weight=0.3)  # fmt: skip
    t = Transcript(text="", segments=(), duration=1.0, model="tiny.en", language="en",
                   domain_lm=lm)  # fmt: skip
    body = verbose(t, words=False, encode=lambda s: [])
    assert body["domain_lm"] == {"words": 12, "tokens": 15, "order": 4, "ngrams": 40,
                                 "classes": 11, "seconds": 0.01, "sha256": "ab" * 32,
                                 "lm_weight": 0.3, "ilm_weight": 0.3}  # fmt: skip


def test_compression_ratio_flags_repetition():
    assert compression_ratio("") == 0.0
    assert compression_ratio("la " * 200) > 2.4 > compression_ratio("A short honest sentence.")


# --- limits --------------------------------------------------------------------------


def _limited_app(limit: int) -> FastAPI:
    app = FastAPI()
    install_handlers(app)
    app.add_middleware(BodyLimit, limit=limit)

    @app.post("/echo")
    async def echo(request: __import__("fastapi").Request) -> dict:
        return {"bytes": len(await request.body())}

    return app


def _post(app: FastAPI, **kwargs) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post("/echo", **kwargs)

    return asyncio.run(go())


def test_body_limit_by_content_length_and_by_counting():
    app = _limited_app(100)
    assert _post(app, content=b"x" * 100).json() == {"bytes": 100}
    declared = _post(app, content=b"x" * 101)
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "request_too_large"

    async def chunks():  # streamed: no Content-Length to judge by
        for _ in range(5):
            yield b"x" * 40

    streamed = _post(app, content=chunks())
    assert streamed.status_code == 413
    assert streamed.json()["error"]["message"].startswith("request body is larger")


def test_admission_queues_then_refuses_with_retry_after():
    async def scenario() -> list[object]:
        admission = Admission(concurrency=1, max_queue=1)
        events: list[object] = []
        release = asyncio.Event()

        async def hold(name: str) -> None:
            async with admission.slot(timeout=5):
                events.append(f"{name} runs")
                await release.wait()

        first = asyncio.create_task(hold("first"))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(hold("second"))  # waits in the queue
        await asyncio.sleep(0.01)
        assert (admission.running, admission.waiting) == (1, 1)
        try:
            async with admission.slot(timeout=5):
                events.append("third runs")
        except ApiError as err:
            events.append((err.status, int(err.headers["Retry-After"]) >= 1))
        release.set()
        await asyncio.gather(first, second)
        assert (admission.running, admission.waiting) == (0, 0)
        return events

    assert asyncio.run(scenario()) == ["first runs", (503, True), "second runs"]


def test_admission_times_out_in_the_queue_with_504():
    async def scenario() -> int:
        admission = Admission(concurrency=1, max_queue=4)
        async with admission.slot(timeout=1):
            try:
                async with admission.slot(timeout=0.05):
                    return 200
            except ApiError as err:
                return err.status

    assert asyncio.run(scenario()) == 504


# --- errors and settings -------------------------------------------------------------


def test_unexpected_errors_and_unknown_routes_keep_openai_shape():
    app = FastAPI()
    install_handlers(app)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret detail")

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [await client.get("/boom"), await client.get("/nowhere")]

    boom_r, missing = asyncio.run(go())
    assert boom_r.status_code == 500 and "secret" not in boom_r.text
    assert json.loads(boom_r.text)["error"]["type"] == "server_error"
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_settings_from_environment_and_checked(monkeypatch):
    monkeypatch.setenv("CTXASR_PORT", "9123")
    monkeypatch.setenv("CTXASR_MAX_QUEUE", "3")
    settings = ServerSettings()
    assert (settings.port, settings.max_queue, settings.max_upload_bytes) == (9123, 3, 25 * 2**20)
    assert ServerSettings(port=1).port == 1  # arguments win over the environment
    from ctxasr.cpus import cpu_count

    default = ServerSettings()
    assert default.concurrency == min(8, cpu_count())
    assert default.threads_per_transcription == max(1, cpu_count() // default.concurrency)
    assert ServerSettings(concurrency=1, cpu_threads=3).threads_per_transcription == 3
    for bad in ({"backend": "onnx"}, {"retriever": "magic"}, {"concurrency": 0},
                {"fusion_weight": 1.0}, {"port": 70000}, {"no_such_setting": 1}):  # fmt: skip
        with pytest.raises(ValueError):
            ServerSettings(**bad)


def test_domain_lm_settings_from_environment_and_checked(monkeypatch):
    assert (ServerSettings().decoding.domain_lm, ServerSettings().decoding.lm_weight) == (True, 0.3)
    monkeypatch.setenv("CTXASR_DOMAIN_LM", "false")
    monkeypatch.setenv("CTXASR_LM_WEIGHT", "0.5")
    monkeypatch.setenv("CTXASR_ILM_WEIGHT", "0")
    decoding = ServerSettings().decoding
    assert (decoding.domain_lm, decoding.lm_weight, decoding.ilm_weight) == (False, 0.5, 0.0)
    assert server_decoding(ServerSettings())["lm_weight"] == 0.5  # what each request gets
    monkeypatch.setenv("CTXASR_LM_WEIGHT", "5")
    with pytest.raises(ValueError, match="lm_weight"):
        ServerSettings()
