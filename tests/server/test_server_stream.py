"""``stream=true``: Server-Sent Events a segment at a time, as OpenAI streams.

A fake model that hands its segments over when the test says so shows the order of
events and what each failure answers, before the stream starts and after; the real
tiny.en model, through OpenAI's own client, shows the streamed text is the text.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from starlette.datastructures import FormData, Headers, UploadFile

from ctxasr.errors import CtxasrError
from ctxasr.results import Segment, Transcript
from ctxasr.server import ServerSettings, create_app
from ctxasr.server.errors import ApiError
from ctxasr.server.forms import parse_transcription
from ctxasr.transcribe import TranscribeOptions

openai = pytest.importorskip("openai")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LINNELL = EXAMPLES / "linnell-8k.wav"  # 29 s, LibriSpeech at 8 kHz
QUILTER = Path(__file__).resolve().parents[1] / "fixtures" / "audio" / "1272-128104-0000.wav"
PATH = "/v1/audio/transcriptions"
WAIT = 20  # seconds a step may take before the test fails instead of hanging

SEGMENTS = (
    Segment(0.0, 2.0, " Mister Quilter is the apostle"),
    Segment(2.0, 2.5, " "),  # no text: no event
    Segment(2.5, 4.0, " of the middle classes."),
    Segment(4.0, 5.9, " We are glad to welcome his gospel."),
)


@dataclass
class FakeTranscriber:
    """Hands over ``segments`` one at a time, each when ``go`` is released; ``fail``
    raises after ``fail_after`` of them. Honours cancelling like the real one: the
    progress callback raises once the server no longer wants the result."""

    segments: tuple[Segment, ...] = SEGMENTS
    fail: Exception | None = None
    fail_after: int = 0
    go: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    resolved: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(name="fake"))
    multilingual: bool = False
    options: TranscribeOptions = field(default_factory=TranscribeOptions)
    ended: threading.Event = field(default_factory=threading.Event)

    def encode(self, text: str) -> list[int]:
        return [len(w) for w in text.split()]

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self.go.release()

    def transcribe(self, audio, context, *, document, options, progress, on_segment) -> Transcript:
        try:
            for i, segment in enumerate(self.segments):
                if self.fail is not None and i == self.fail_after:
                    raise self.fail
                while not self.go.acquire(timeout=0.05):
                    progress(segment.start, 5.9)  # raises when cancelled
                on_segment(segment)
                progress(segment.end, 5.9)
            if self.fail is not None:
                raise self.fail
            text = " ".join(s.text.strip() for s in self.segments if s.text.strip())
            return Transcript(text=text, segments=self.segments, duration=5.9, model="fake",
                              language="en", context_used=tuple(t.text for t in context))  # fmt: skip
        finally:
            self.ended.set()


def parse(*fields: tuple[str, str]):
    audio = UploadFile(io.BytesIO(b"RIFF"), filename="a.wav",
                       headers=Headers({"content-type": "audio/wav"}))  # fmt: skip
    return parse_transcription(FormData([*fields, ("file", audio)]))


def events_of(lines: Iterator[str]) -> Iterator[dict]:
    """The JSON of each ``data:`` line of a Server-Sent Events stream."""
    for line in lines:
        if line.startswith("data: "):
            yield json.loads(line[len("data: ") :])


@pytest.fixture
def fake_server(serve_app):
    """``fake_server(fake, **settings)``: a live server whose model is ``fake``."""

    def start(fake: FakeTranscriber, **settings):
        return serve_app(create_app(ServerSettings(**settings), transcriber=fake))

    return start


def stream(url: str, **data):
    files = {"file": ("q.wav", QUILTER.read_bytes(), "audio/wav")}
    return httpx.stream("POST", url + PATH, files=files, data={"stream": "true", **data},
                        timeout=WAIT)  # fmt: skip


def health(url: str) -> dict:
    return httpx.get(url + "/health").json()


def wait_for(url: str, key: str, value: int) -> None:
    deadline = time.monotonic() + WAIT
    while health(url)[key] != value:
        assert time.monotonic() < deadline, f"{key} never reached {value}"
        time.sleep(0.02)


# --- the form field -------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("False", False), ("1", True),
                                                 ("0", False), (None, False)])  # fmt: skip
def test_stream_field_values(value, expected):
    fields = [("stream", value)] if value is not None else []
    assert parse(*fields).stream is expected


@pytest.mark.parametrize(
    "fields",
    [(("stream", "yes"),), (("stream", "true"), ("response_format", "srt")),
     (("stream", "true"), ("response_format", "verbose_json")), (("stream", "true"), ("stream", "true"))],
)  # fmt: skip
def test_bad_stream_answers_400_naming_stream(fields):
    with pytest.raises(ApiError) as caught:
        parse(*fields)
    err = caught.value
    assert err.status == 400 and err.param == "stream" and "stream" in err.message


def test_text_format_streams_too():
    req = parse(("stream", "true"), ("response_format", "text"))
    assert req.stream and req.response_format == "text"


# --- a fake model: order and failures -------------------------------------------------


def test_a_delta_per_segment_as_it_is_decoded_then_done(fake_server):
    fake = FakeTranscriber()
    server = fake_server(fake)
    fake.release()  # only the first segment is decoded yet; the answer starts with it
    with stream(server.url, context="Quilter") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = events_of(r.iter_lines())
        first = next(events)
        assert first == {"type": "transcript.text.delta", "delta": "Mister Quilter is the apostle",
                         "start": 0.0, "end": 2.0}  # fmt: skip
        assert not fake.ended.is_set()  # it came while the model was still working
        fake.release(3)
        rest = list(events)
    assert [e["type"] for e in rest] == ["transcript.text.delta"] * 2 + ["transcript.text.done"]
    assert [e["delta"] for e in rest[:2]] == [
        " of the middle classes.",
        " We are glad to welcome his gospel.",
    ]
    done = rest[-1]
    assert done["text"] == first["delta"] + "".join(e["delta"] for e in rest[:2])
    assert done["context_used"] == ["Quilter"] and done["language"] == "en"
    assert done["duration"] == 5.9
    wait_for(server.url, "running", 0)


def test_failures_before_the_first_event_answer_json(fake_server):
    fake = FakeTranscriber(fail=CtxasrError("context", "no usable terms"))
    server = fake_server(fake)
    with stream(server.url) as r:
        r.read()
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    assert r.json()["error"] == {"message": "context: no usable terms", "type": "invalid_request_error",
                                 "param": None, "code": "invalid_request"}  # fmt: skip
    with stream(server.url, response_format="vtt") as r:
        r.read()
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream"


def test_a_failure_after_the_first_event_ends_with_an_error_event(fake_server):
    fake = FakeTranscriber(fail=CtxasrError("file", "decoding broke"), fail_after=1)
    fake.release(4)
    server = fake_server(fake)
    with stream(server.url) as r:
        assert r.status_code == 200
        events = list(events_of(r.iter_lines()))
    assert [e["type"] for e in events] == ["transcript.text.delta", "error"]
    assert events[-1]["error"] == {"message": "file: decoding broke", "type": "invalid_request_error",
                                   "param": None, "code": "invalid_request"}  # fmt: skip


def test_openai_client_raises_the_error_event(fake_server):
    fake = FakeTranscriber(fail=CtxasrError("file", "decoding broke"), fail_after=3)
    fake.release(4)
    server = fake_server(fake)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    seen: list[str] = []
    with pytest.raises(openai.APIError, match="decoding broke"), QUILTER.open("rb") as f:
        for event in client.audio.transcriptions.create(model="fake", file=f, stream=True):
            seen.append(event.delta)
    assert seen == ["Mister Quilter is the apostle", " of the middle classes."]


def test_the_timeout_ends_a_stream_and_stops_the_work(fake_server):
    fake = FakeTranscriber()
    fake.release()  # the first segment, then nothing more
    server = fake_server(fake, request_timeout=1.0)
    with stream(server.url) as r:
        events = list(events_of(r.iter_lines()))
    assert [e["type"] for e in events] == ["transcript.text.delta", "error"]
    assert events[-1]["error"]["code"] == "timeout"
    assert fake.ended.wait(WAIT)
    wait_for(server.url, "cancelled", 1)
    wait_for(server.url, "running", 0)


def test_a_client_that_leaves_mid_stream_stops_the_work(fake_server):
    fake = FakeTranscriber()
    fake.release()
    server = fake_server(fake)
    with stream(server.url) as r:
        assert next(events_of(r.iter_lines()))["type"] == "transcript.text.delta"
    # Closing the response closes the connection, with the model still waiting.
    assert fake.ended.wait(WAIT)
    wait_for(server.url, "cancelled", 1)
    wait_for(server.url, "running", 0)


def test_a_stream_holds_its_slot_and_a_full_queue_answers_503_json(fake_server):
    fake = FakeTranscriber()
    fake.release()
    server = fake_server(fake, concurrency=1, max_queue=0)
    with stream(server.url) as first:
        assert health(server.url)["running"] == 1  # until its last segment
        with stream(server.url) as second:
            second.read()
        assert second.status_code == 503 and second.json()["error"]["code"] == "server_busy"
        assert int(second.headers["retry-after"]) >= 1
        fake.release(3)
        assert [e["type"] for e in events_of(first.iter_lines())][-1] == "transcript.text.done"
    wait_for(server.url, "running", 0)


# --- the real model, through OpenAI's client ------------------------------------------


@pytest.fixture(scope="module")
def client(request):
    live_server = request.getfixturevalue("live_server")
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0)


@pytest.mark.model
def test_openai_client_streams_the_same_text(client):
    terms = (EXAMPLES / "linnell.terms.txt").read_text().splitlines()
    with LINNELL.open("rb") as f:
        plain = client.audio.transcriptions.create(model="whisper-1", file=f,
                                                   extra_body={"context": terms})  # fmt: skip
    with LINNELL.open("rb") as f:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=f, stream=True,
                                                         extra_body={"context": terms}))  # fmt: skip
    kinds = [e.type for e in events]
    assert kinds[-1] == "transcript.text.done" and set(kinds[:-1]) == {"transcript.text.delta"}
    assert len(kinds) > 2  # a 29 s recording has several segments
    done = events[-1]
    assert done.text == plain.text == "".join(e.delta for e in events[:-1])
    assert "Birket" in done.text and "Birket" in done.context_used


@pytest.mark.model
def test_text_format_streams_the_same_events(client):
    with QUILTER.open("rb") as f:
        events = list(client.audio.transcriptions.create(model="tiny.en", file=f, stream=True,
                                                         response_format="text"))  # fmt: skip
    assert events[-1].type == "transcript.text.done" and "Quilter" in events[-1].text


@pytest.mark.model
def test_bad_stream_value_is_400_from_a_live_server(live_server):
    files = {"file": ("q.wav", QUILTER.read_bytes(), "audio/wav")}
    r = httpx.post(live_server.url + PATH, files=files, data={"stream": "maybe"}, timeout=WAIT)
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream"
