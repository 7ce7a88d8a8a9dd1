"""Every error a live server can answer: its status, OpenAI's shape, never a 500."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.model

AUDIO = Path(__file__).resolve().parents[1] / "fixtures" / "audio"
QUILTER = AUDIO / "1272-128104-0000.wav"  # 5.9 s
LINNELL = Path(__file__).resolve().parents[2] / "examples" / "linnell-8k.wav"  # 29 s
PATH = "/v1/audio/transcriptions"


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and "\n" not in error["message"]
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    return error


def post(url: str, *, audio: bytes | None = None, name: str = "a.wav",
         media: str = "audio/wav", data=None, **kwargs) -> httpx.Response:  # fmt: skip
    if audio is not None:
        kwargs["files"] = {"file": (name, audio, media)}
    kwargs.setdefault("timeout", 120)
    return httpx.post(url + PATH, data=data, **kwargs)


@pytest.fixture(scope="module")
def url(live_server) -> str:
    return live_server.url


def test_health(url):
    body = httpx.get(url + "/health").json()
    assert body["status"] == "ok" and body["model"] == "tiny.en"


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"audio": b"garbage" * 100, "media": "application/octet-stream"}, 400, "invalid_audio"),
        ({"audio": b"", "name": "empty.wav"}, 400, "invalid_audio"),
        ({"audio": QUILTER.read_bytes()[:44]}, 400, "invalid_audio"),  # a header, no samples
        ({"audio": (AUDIO / "jfk.flac").read_bytes()[:3000], "name": "cut.flac",
          "media": "audio/flac"}, 400, "invalid_audio"),  # cut off after the header
        ({"audio": b"%PDF-1.4", "name": "a.pdf", "media": "application/pdf"}, 415,
         "unsupported_media_type"),
        ({"files": {"model": (None, "whisper-1")}}, 400, "missing_file"),
        ({"audio": QUILTER.read_bytes(), "name": ""}, 400, "missing_file"),  # no filename: text
        ({"audio": b"x", "data": {"response_format": "docx"}}, 400, "invalid_value"),
        ({"audio": b"x", "data": {"temperature": "2"}}, 400, "invalid_value"),
        ({"audio": QUILTER.read_bytes(), "data": {"model": "whisper-2"}}, 400, "model_not_found"),
        ({"audio": QUILTER.read_bytes(), "data": {"language": "de"}}, 400, "unsupported_language"),
        ({"audio": b"x", "data": {"context": "#"}}, 400, "invalid_context"),
    ],
)  # fmt: skip
def test_bad_requests(url, kwargs, status, code):
    assert error_of(post(url, **kwargs), status)["code"] == code


@pytest.mark.parametrize("name", ["../../etc/x.wav", "a.\x00", "a./b", "a." + "w" * 300])
def test_odd_file_names_are_harmless(url, name):
    r = post(url, audio=QUILTER.read_bytes(), name=name)
    assert r.status_code == 200 and "Quilter" in r.json()["text"]


def test_not_multipart_is_415(url):
    r = httpx.post(url + PATH, json={"file": "a.wav", "model": "whisper-1"})
    assert error_of(r, 415)["code"] == "unsupported_media_type"
    r = httpx.post(url + PATH, content=QUILTER.read_bytes(), headers={"content-type": "audio/wav"})
    assert error_of(r, 415)["code"] == "unsupported_media_type"


def test_malformed_multipart_is_400(url):
    r = httpx.post(url + PATH, content=b"--x\r\nnonsense",
                   headers={"content-type": "multipart/form-data; boundary=x"})  # fmt: skip
    assert error_of(r, 400)["code"] in ("invalid_body", "missing_file")


def test_unknown_route_and_method(url):
    assert error_of(httpx.get(url + "/v1/nothing"), 404)["code"] == "not_found"
    assert error_of(httpx.get(url + PATH), 405)["code"] == "method_not_allowed"
    assert error_of(httpx.get(url + "/v1/models/gpt-9"), 404)["code"] == "model_not_found"


def test_upload_limit_413_declared_and_streamed(start_server):
    small = start_server(max_upload_bytes=50_000)
    r = post(small.url, audio=QUILTER.read_bytes())  # 190 kB, Content-Length says so
    assert error_of(r, 413)["code"] == "request_too_large"
    body = QUILTER.read_bytes()

    def chunked():  # no Content-Length: the server counts as it reads
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        yield b"Content-Type: audio/wav\r\n\r\n"
        for i in range(0, len(body), 16_384):
            yield body[i : i + 16_384]
        yield b"\r\n--b--\r\n"

    r = httpx.post(small.url + PATH, content=chunked(),
                   headers={"content-type": "multipart/form-data; boundary=b"})  # fmt: skip
    assert error_of(r, 413)["code"] == "request_too_large"
    assert post(small.url, audio=b"x" * 1000).status_code == 400  # under the limit: judged


def _wait_for(url: str, key: str, value: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(url + "/health").json()[key] != value:
        assert time.monotonic() < deadline, f"{key} never reached {value}"
        time.sleep(0.02)


def test_full_queue_answers_503_with_retry_after(start_server):
    server = start_server(concurrency=1, max_queue=0)
    first: list[httpx.Response] = []
    worker = threading.Thread(
        target=lambda: first.append(post(server.url, audio=LINNELL.read_bytes()))
    )
    worker.start()
    _wait_for(server.url, "running", 1)
    busy = post(server.url, audio=QUILTER.read_bytes())
    assert error_of(busy, 503)["code"] == "server_busy"
    assert int(busy.headers["retry-after"]) >= 1
    worker.join()
    assert first[0].status_code == 200 and "Birket" not in first[0].json()["text"]
    assert post(server.url, audio=QUILTER.read_bytes()).status_code == 200  # free again


def test_timeout_answers_504_and_stops_the_work(start_server, long_recording):
    server = start_server(request_timeout=1.0)
    began = time.monotonic()
    r = post(server.url, audio=long_recording.read_bytes())
    assert error_of(r, 504)["code"] == "timeout"
    assert time.monotonic() - began < 5
    _wait_for(server.url, "cancelled", 1, timeout=20)  # stopped at its next segment
    _wait_for(server.url, "running", 0, timeout=5)


def test_a_client_that_leaves_frees_its_place(start_server, long_recording):
    server = start_server(concurrency=1, max_queue=1)
    audio = long_recording.read_bytes()

    def leave_after(seconds: float) -> None:
        with pytest.raises(httpx.ReadTimeout):
            post(server.url, audio=audio, timeout=seconds)

    running = threading.Thread(target=leave_after, args=(1.0,))
    running.start()
    _wait_for(server.url, "running", 1)
    leave_after(0.5)  # gives up while queued behind the first
    _wait_for(server.url, "waiting", 0, timeout=5)
    running.join()
    _wait_for(server.url, "cancelled", 1, timeout=20)  # the first one's work stops too
    _wait_for(server.url, "running", 0, timeout=5)
    assert post(server.url, audio=QUILTER.read_bytes()).status_code == 200


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    audio=st.binary(max_size=2_000),
    media=st.sampled_from(["audio/wav", "application/octet-stream", "text/plain", "video/mp4", ""]),
    fields=st.dictionaries(
        st.sampled_from(["model", "language", "response_format", "temperature", "context",
                         "context_text", "prompt", "timestamp_granularities[]", "stream"]),
        st.text(max_size=40),
    ),
)  # fmt: skip
def test_no_input_makes_a_500(url, audio, media, fields):
    r = post(url, audio=audio, media=media, data=fields)
    if r.status_code != 200:
        error_of(r, r.status_code)
        assert r.status_code in (400, 415)
