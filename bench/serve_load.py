"""Load on ``ctxasr serve`` over loopback: throughput, latency, errors, server memory.

For each scenario a fresh server process starts (``ctxasr serve`` on 127.0.0.1), then
C client threads send M requests in all (each client sends its next request as soon
as its last one is answered), every request the same recording with a context. It
reports, per scenario: requests answered 200 and the other statuses, wall time,
requests per second, seconds of audio transcribed per second, p50/p95 latency as the
client saw it (upload to full answer), and the server process's RSS: once the model
is loaded, after one warm-up request (which loads the pronunciation models), and at
its peak during the load (sampled every 20 ms).

The overload scenario (8 clients, a one-place queue) is there on purpose: its 503s,
each with Retry-After, are the backpressure working, not failures.

The ``100k`` scenarios send a 100,000-term context (dictionary words from the
``cmudict`` package, every 1.17th in sorted order: deterministic, no data set needed)
in the ``context`` field, one term a line, one request per client, to a server with
four slots and an empty index cache (``CTXASR_CACHE`` in a fresh folder), so each
request is the first use of its context. One client alone measures one index build;
four clients with the same context should cost about the same, since concurrent
requests share one build (``ctxasr.recent.Recent`` is single-flight); four clients
with four contexts (each list with its own last term) build four indexes, which is
also what the same context cost before the builds were shared.

Bounded in count (M per scenario) and in time (``--max-seconds`` per scenario: no
new request starts after it). Loopback only; nothing leaves the machine.

Usage::

    python bench/serve_load.py [--requests 16] [--max-seconds 120] [--scenarios NAME ...]

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
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
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


BIG_CONTEXT = 100_000


@dataclass(frozen=True)
class Scenario:
    clients: int  # C: requests in flight from the client side
    concurrency: int  # transcriptions the server runs at once
    max_queue: int  # requests the server lets wait
    big: bool = False  # a 100,000-term context instead of TERMS, one request per client
    distinct: bool = False  # with ``big``: each client its own context

    @property
    def name(self) -> str:
        big = "-100k" + ("-distinct" if self.distinct else "") if self.big else ""
        return f"{self.clients}x{self.concurrency}q{self.max_queue}{big}"

    @property
    def context_label(self) -> str:
        if not self.big:
            return f"{len(TERMS)} terms"
        return f"{BIG_CONTEXT:,} ({'one each' if self.distinct else 'the same'})"

    def context(self, client: int) -> str:
        if not self.big:
            return "\n".join(TERMS)
        return big_context(client if self.distinct else 0)


SCENARIOS = (
    Scenario(1, 1, 8),
    Scenario(2, 1, 8),
    Scenario(4, 1, 8),
    Scenario(1, 2, 8),
    Scenario(2, 2, 8),
    Scenario(4, 2, 8),
    Scenario(8, 2, 8),
    Scenario(8, 1, 1),  # overload: most requests find the queue full
    Scenario(1, 4, 8, big=True),  # one index build, alone
    Scenario(4, 4, 8, big=True),  # four requests share one build
    Scenario(4, 4, 8, big=True, distinct=True),  # four builds at once
)


@lru_cache(maxsize=1)
def _dictionary_words() -> tuple[str, ...]:
    from ctxasr.context.phonetic.lexicon import cmudict

    return tuple(sorted(w for w in cmudict() if w.isalpha()))


@lru_cache(maxsize=8)
def big_context(variant: int) -> str:
    """``BIG_CONTEXT`` terms, one a line: dictionary words spread over the alphabet,
    the last one ``variant``'s own (variant 0: the same list every time)."""
    words = _dictionary_words()
    step = len(words) / BIG_CONTEXT
    terms = [words[int(i * step)].capitalize() for i in range(BIG_CONTEXT - 1)]
    terms.append(f"Quiltervariant{variant}" if variant else words[-1].capitalize())
    return "\n".join(terms)


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
        # An empty index cache: every context is built here, not loaded from an earlier run.
        self.cache = tempfile.TemporaryDirectory(prefix="serve-load-cache-")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ctxasr.cli", "serve", "--port", str(self.port),
             "--concurrency", str(s.concurrency), "--max-queue", str(s.max_queue),
             "--threads", str(threads), "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "CTXASR_CACHE": self.cache.name},
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
        warm_up = load(self.url, 1, 1, 60, lambda _: "\n".join(TERMS))[0]
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
        self.cache.cleanup()


def load(url: str, clients: int, requests: int, max_seconds: float,
         context: Callable[[int], str]) -> tuple[list[Outcome], float]:  # fmt: skip
    """``requests`` requests from ``clients`` threads; client i sends ``context(i)``."""
    audio = AUDIO.read_bytes()
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    issued = 0
    began = time.monotonic()

    def client(i: int) -> None:
        nonlocal issued
        terms = context(i)
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
                                  data={"model": "whisper-1", "context": terms})  # fmt: skip
                    seconds = r.json()["usage"]["seconds"] if r.status_code == 200 else 0.0
                    outcome = Outcome(r.status_code, time.monotonic() - start, seconds)
                except httpx.HTTPError:
                    outcome = Outcome(0, time.monotonic() - start)
                with lock:
                    outcomes.append(outcome)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
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
    return (f"| {s.clients} | {s.concurrency} | {s.max_queue} | {s.context_label} "
            f"| {len(outcomes)} | {len(ok)} "
            f"| {errors} | {wall:.1f} | {len(ok) / wall:.2f} | {audio / wall:.1f} "
            f"| {percentile(latencies, 50):.2f} | {percentile(latencies, 95):.2f} "
            f"| {server.loaded / mib:.0f} | {server.warm / mib:.0f} "
            f"| {server.peak / mib:.0f} |")  # fmt: skip


HEADER = (
    "| clients C | server concurrency | queue | context terms | requests | 200 | other statuses "
    "| wall s | req/s | audio s/s | p50 s | p95 s | RSS loaded MiB | RSS warm MiB "
    "| peak RSS MiB |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=16, help="M: requests per scenario")
    parser.add_argument("--max-seconds", type=float, default=120.0,
                        help="no new request starts after this long in a scenario")  # fmt: skip
    parser.add_argument("--scenarios", nargs="+", metavar="NAME",
                        choices=[s.name for s in SCENARIOS],
                        help="run only these (C x concurrency q queue): "
                        f"{', '.join(s.name for s in SCENARIOS)}")  # fmt: skip
    parser.add_argument("--out", type=Path, default=HERE / "results" / "serve_load.md")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    lines = [HEADER]
    print(HEADER, flush=True)
    for s in SCENARIOS:
        if args.scenarios and s.name not in args.scenarios:
            continue
        requests = s.clients if s.big else args.requests
        with Server(s) as server:
            outcomes, wall = load(server.url, s.clients, requests, args.max_seconds, s.context)
            line = row(s, outcomes, wall, server)
        lines.append(line)
        print(line, flush=True)

    report = "\n".join([
        "# ctxasr serve under load (loopback)",
        "",
        (f"`python bench/serve_load.py --requests {args.requests}"
         f"{' --scenarios ' + ' '.join(args.scenarios) if args.scenarios else ''}` at "
         f"{git_state()}; {platform.machine()}, {CORES} CPU cores, Python "
         f"{platform.python_version()}; load average {load_before:.2f} at the start and "
         f"{os.getloadavg()[0]:.2f} at the end (other work on the cores slows every row)."),
        "",
        (f"Every request: `{AUDIO.name}` ({AUDIO.stat().st_size // 1024} KiB WAV, 5.9 s of "
         f"speech, billed as 6 s) with {len(TERMS)} context terms, response_format json; "
         "model tiny.en (CTranslate2 int8); CPU threads per transcription = cores / "
         "server concurrency. Latency is the client's: upload to full answer."),
        "",
        (f"The {BIG_CONTEXT:,}-term rows: one request per client, each the first use of "
         "its context on a server with an empty index cache (see the script's docstring). "
         "'the same': every client sends one list, whose index concurrent requests build "
         "once and share; 'one each': four lists (the last term differs), four builds."),
        "",
        *lines,
        "",
    ])  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
