"""Concurrent requests with one new context build its retrieval index once and share it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

import ctxasr.transcribe
from ctxasr.context.retrieval import PhoneticRetriever

pytestmark = pytest.mark.model

QUILTER = Path(__file__).resolve().parents[1] / "fixtures" / "audio" / "1272-128104-0000.wav"
WAIT = 30  # seconds before a step fails instead of hanging


def test_four_requests_with_one_new_context_build_one_index(start_server, monkeypatch):
    builds: list[int] = []
    release = threading.Event()

    class CountedIndex(PhoneticRetriever):
        """Counts its builds, and holds each until all four requests are running."""

        def __init__(self, *args, **kwargs) -> None:
            builds.append(len(builds))
            release.wait(WAIT)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(ctxasr.transcribe, "PhoneticRetriever", CountedIndex)
    server = start_server(concurrency=4, max_queue=4)
    # Terms no other test sends, so the shared model has no index of them yet.
    context = "Quilter\nShared Context Probe\nGospel Of Wealth"
    answers: list[httpx.Response] = []

    def ask() -> None:
        files = {"file": ("q.wav", QUILTER.read_bytes(), "audio/wav")}
        answers.append(httpx.post(server.url + "/v1/audio/transcriptions", files=files,
                                  data={"context": context}, timeout=120))  # fmt: skip

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + WAIT
    while httpx.get(server.url + "/health").json()["running"] < 4:
        assert time.monotonic() < deadline, "the four requests never ran at once"
        time.sleep(0.02)
    time.sleep(0.2)  # all four are in the transcriber, asking for the index
    release.set()
    for t in threads:
        t.join(120)
    assert [a.status_code for a in answers] == [200] * 4
    assert builds == [0]  # built once, by the first; the three others waited for it
    assert all("Quilter" in a.json()["text"] for a in answers)
