"""``ctxasr serve`` as a process: SIGTERM lets in-flight work finish, or cancels it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.model

LINNELL = Path(__file__).resolve().parents[2] / "examples" / "linnell-8k.wav"  # 29 s


def start(port: int, *flags: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ctxasr.cli", "serve", "--port", str(port), "--log-level", "info",
         *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url + "/health", timeout=1)
            return proc, url
        except httpx.TransportError:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.1)


def transcribe_in_background(url: str) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def go() -> None:
        try:
            with LINNELL.open("rb") as f:
                outcome.append(httpx.post(url + "/v1/audio/transcriptions",
                                          files={"file": f}, timeout=60))  # fmt: skip
        except httpx.TransportError as err:
            outcome.append(err)

    thread = threading.Thread(target=go)
    thread.start()
    deadline = time.monotonic() + 30
    while httpx.get(url + "/health").json()["running"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return thread, outcome


def stopped_cleanly(proc: subprocess.Popen) -> str:
    """The server's log, after checking it shut down in order.

    uvicorn re-raises the signal once it has shut down, so a clean stop by SIGTERM
    exits with -SIGTERM, as supervisors expect.
    """
    assert proc.wait(60) == -signal.SIGTERM
    log = proc.stdout.read()
    assert "Application shutdown complete" in log and "Traceback" not in log, log
    return log


def test_sigterm_finishes_in_flight_work_then_exits_cleanly(unused_port):
    proc, url = start(unused_port, "--shutdown-grace", "60")
    thread, outcome = transcribe_in_background(url)
    os.kill(proc.pid, signal.SIGTERM)
    thread.join(60)
    stopped_cleanly(proc)
    response = outcome[0]
    assert isinstance(response, httpx.Response) and response.status_code == 200
    assert "John Collier" in response.json()["text"]  # the whole recording, not a part
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=1)


def test_sigterm_cancels_work_that_outlasts_the_grace(unused_port):
    proc, url = start(unused_port, "--shutdown-grace", "0", "--threads", "1")
    thread, outcome = transcribe_in_background(url)
    began = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    log = stopped_cleanly(proc)
    stopped = time.monotonic() - began
    thread.join(30)
    response = outcome[0]  # no half transcript: an error to retry elsewhere
    assert isinstance(response, httpx.Response), response
    assert response.status_code == 503 and response.json()["error"]["code"] == "shutting_down"
    assert "Cancel 1 running task" in log, log
    assert stopped < 10, f"shutdown took {stopped:.1f} s"
