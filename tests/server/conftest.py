"""A live ctxasr server on 127.0.0.1 for the tests that talk HTTP to it.

The server runs uvicorn in a thread of the test process and shares one loaded
tiny.en model across all servers of the session, so each server starts in well
under a second.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
AUDIO = FIXTURES / "audio"


@pytest.fixture(scope="session")
def shared_transcriber():
    from ctxasr.transcribe import ModelOptions, Transcriber

    # Two decode workers, so servers with concurrency 2 can run two at once.
    return Transcriber(None, model_options=ModelOptions(num_workers=2, cpu_threads=1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    return free_port()


class LiveServer:
    """One uvicorn server in a background thread; ``url`` is its base address."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                timeout_graceful_shutdown=5)  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="session")
def start_server(shared_transcriber) -> Iterator[Callable[..., LiveServer]]:
    """``start_server(**settings)``: a started live server with those settings."""
    from ctxasr.server import ServerSettings, create_app

    servers: list[LiveServer] = []

    def start(**settings) -> LiveServer:
        app = create_app(ServerSettings(**settings), transcriber=shared_transcriber)
        server = LiveServer(app)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def serve_app() -> Iterator[Callable[..., LiveServer]]:
    """``serve_app(app)``: a started live server of any app (one with a fake model)."""
    servers: list[LiveServer] = []

    def start(app) -> LiveServer:
        server = LiveServer(app)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def long_recording(tmp_path_factory) -> Path:
    """Two minutes of speech (the Linnell example four times): several 30 s windows,
    so a transcription of it can be stopped part way."""
    import wave

    import numpy as np

    from ctxasr.audio import SAMPLE_RATE, load_audio

    samples = np.tile(
        load_audio(Path(__file__).resolve().parents[2] / "examples" / "linnell-8k.wav"), 4
    )
    path = tmp_path_factory.mktemp("audio") / "long.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="session")
def live_server(start_server) -> LiveServer:
    """A server with the default settings."""
    return start_server()
