"""Load on ``ctxasr serve`` over loopback: throughput, latency, errors, server memory.

For each scenario a fresh server process starts (``ctxasr serve`` on 127.0.0.1), then
C client threads send M requests in all (each client sends its next request as soon
as its last one is answered), every request the same recording with a context. It
reports, per scenario: requests answered 200 and the other statuses, wall time,
requests per second, seconds of audio transcribed per second, p50/p95 latency as the
client saw it (upload to full answer), and the server process's RSS: once the model
is loaded, after one warm-up request (which loads the pronunciation models), and at
its peak during the load (sampled every 20 ms).

The last scenario overloads a server with a one-place queue on purpose: its 503s,
each with Retry-After, are the backpressure working, not failures.

Bounded in count (M per scenario) and in time (``--max-seconds`` per scenario: no
new request starts after it). Loopback only; nothing leaves the machine.

Usage::

    python bench/serve_load.py [--requests 16] [--max-seconds 120]

Writes the table to stdout and to ``bench/results/serve_load.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from context_scaling import git_state

AUDIO = ROOT / "tests" / "fixtures" / "audio" / "1272-128104-0000.wav"  # 5.9 s LibriSpeech
TERMS = ("Quilter", "apostle", "gospel", "Kubernetes", "etcd")
CORES = os.cpu_count() or 1


@dataclass(frozen=True)
class Scenario:
    clients: int  # C: requests in flight from the client side
    concurrency: int  # transcriptions the server runs at once
    max_queue: int  # requests the server lets wait


SCENARIOS = (
    Scenario(1, 1, 8),
    Scenario(2, 1, 8),
    Scenario(4, 1, 8),
    Scenario(1, 2, 8),
    Scenario(2, 2, 8),
    Scenario(4, 2, 8),
    Scenario(8, 2, 8),
    Scenario(8, 1, 1),  # overload: most requests find the queue full
)


@dataclass
class Outcome:
    status: int  # HTTP status, or 0 for a transport error
    seconds: float  # client-side latency
    audio_seconds: float = 0.0  # usage.seconds of a 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``ctxasr serve`` in a child process, with its RSS sampled in a thread."""

    def __init__(self, s: Scenario) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        threads = max(1, CORES // s.concurrency)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ctxasr.cli", "serve", "--port", str(self.port),
             "--concurrency", str(s.concurrency), "--max-queue", str(s.max_queue),
             "--threads", str(threads), "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> Server:  # noqa: PYI034 - a plain class, never subclassed
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(self.url + "/health", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {self.proc.stderr.read()}") from None
                time.sleep(0.1)
        self.ps = psutil.Process(self.proc.pid)
        self.loaded = self.ps.memory_info().rss
        # The first request with a context loads the pronunciation dictionary and the
        # grapheme-to-phoneme model once; "warm" is the resting size after that.
        warm_up = load(self.url, 1, 1, 60)[0]
        assert warm_up[0].status == 200, warm_up
        self.warm = self.ps.memory_info().rss
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.ps.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.proc.terminate()
        self.proc.wait(60)


def load(url: str, clients: int, requests: int, max_seconds: float) -> tuple[list[Outcome], float]:
    audio = AUDIO.read_bytes()
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    issued = 0
    began = time.monotonic()

    def client() -> None:
        nonlocal issued
        with httpx.Client(timeout=600) as http:
            while True:
                with lock:
                    if issued >= requests or time.monotonic() - began > max_seconds:
                        return
                    issued += 1
                start = time.monotonic()
                try:
                    r = http.post(url + "/v1/audio/transcriptions",
                                  files={"file": ("talk.wav", audio, "audio/wav")},
                                  data={"model": "whisper-1", "context": "\n".join(TERMS)})  # fmt: skip
                    seconds = r.json()["usage"]["seconds"] if r.status_code == 200 else 0.0
                    outcome = Outcome(r.status_code, time.monotonic() - start, seconds)
                except httpx.HTTPError:
                    outcome = Outcome(0, time.monotonic() - start)
                with lock:
                    outcomes.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes, time.monotonic() - began


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def row(s: Scenario, outcomes: list[Outcome], wall: float, server: Server) -> str:
    ok = [o for o in outcomes if o.status == 200]
    others = Counter(o.status for o in outcomes if o.status != 200)
    errors = ", ".join(f"{k or 'conn'}: {v}" for k, v in sorted(others.items())) or "none"
    latencies = [o.seconds for o in ok]
    audio = sum(o.audio_seconds for o in ok)
    mib = 1024 * 1024
    return (f"| {s.clients} | {s.concurrency} | {s.max_queue} | {len(outcomes)} | {len(ok)} "
            f"| {errors} | {wall:.1f} | {len(ok) / wall:.2f} | {audio / wall:.1f} "
            f"| {percentile(latencies, 50):.2f} | {percentile(latencies, 95):.2f} "
            f"| {server.loaded / mib:.0f} | {server.warm / mib:.0f} "
            f"| {server.peak / mib:.0f} |")  # fmt: skip


HEADER = (
    "| clients C | server concurrency | queue | requests | 200 | other statuses | wall s "
    "| req/s | audio s/s | p50 s | p95 s | RSS loaded MiB | RSS warm MiB | peak RSS MiB |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=16, help="M: requests per scenario")
    parser.add_argument("--max-seconds", type=float, default=120.0,
                        help="no new request starts after this long in a scenario")  # fmt: skip
    parser.add_argument("--out", type=Path, default=HERE / "results" / "serve_load.md")
    args = parser.parse_args()

    lines = [HEADER]
    print(HEADER, flush=True)
    for s in SCENARIOS:
        with Server(s) as server:
            outcomes, wall = load(server.url, s.clients, args.requests, args.max_seconds)
            line = row(s, outcomes, wall, server)
        lines.append(line)
        print(line, flush=True)

    report = "\n".join([
        "# ctxasr serve under load (loopback)",
        "",
        (f"`python bench/serve_load.py --requests {args.requests}` at {git_state()}; "
         f"{platform.machine()}, {CORES} CPU cores, Python {platform.python_version()}."),
        "",
        (f"Every request: `{AUDIO.name}` ({AUDIO.stat().st_size // 1024} KiB WAV, 5.9 s of "
         f"speech, billed as 6 s) with {len(TERMS)} context terms, response_format json; "
         "model tiny.en (CTranslate2 int8); CPU threads per transcription = cores / "
         "server concurrency. Latency is the client's: upload to full answer."),
        "",
        *lines,
        "",
    ])  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
