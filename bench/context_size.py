"""Very long contexts: time and memory of 100,000 and 1,000,000 terms against none.

The issue's targets: a 100,000-term context costs at most 500 MiB more memory than no
context, and a context of a million terms either works or stops with a clear message,
never a crash. Each (retriever, N) runs in a fresh process so its peak RSS is its own.
Each process loads the packaged tiny.en and transcribes ``--audio`` twice with the same
context: the first call includes building the context's phonetic index, the second
reuses it (as a server or batch worker does with one context for many recordings).

Terms: the benchmark's rare-word pool (209,291 words), then seeded two-word phrases of
pool words until N: names and jargon are often two words, and a million single words
does not exist. The clip's own words are not added: this measures cost, not accuracy.

Usage::

    python bench/context_size.py [--sizes 100000 1000000] [--retrievers phonetic hybrid]
        [--audio tests/fixtures/audio/jfk.flac]

Writes the table to stdout and to ``bench/results/context_size.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
POOL = ROOT.parent / "shared" / "data" / "librispeech-biasing" / "words" / "all_rare_words.txt"
RESULTS = HERE / "results"
SEED = 0
MIB = 1024 * 1024


def terms(pool: Path, n: int, seed: int = SEED) -> list[str]:
    """``n`` distinct terms: the pool's words first, then seeded two-word phrases."""
    words = [w.strip() for w in pool.read_text(encoding="utf-8").splitlines() if w.strip()]
    out = list(dict.fromkeys(words))[:n]
    seen = set(out)
    rng = random.Random(seed)
    while len(out) < n:
        phrase = f"{rng.choice(words)} {rng.choice(words)}"
        if phrase not in seen:
            seen.add(phrase)
            out.append(phrase)
    return out


def one(retriever: str, n: int, audio: str, pool: Path) -> dict:
    """Run in a child process: two transcriptions with the same context; RSS in MiB."""
    from ctxasr import TranscribeOptions, Transcriber
    from ctxasr.errors import CtxasrError

    context = terms(pool, n) if n else []
    transcriber = Transcriber(options=TranscribeOptions(retriever=retriever if n else "none"))
    transcriber.transcribe(audio)  # model warm; what none costs is the base
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row: dict = {"retriever": retriever if n else "none", "n": n, "base_mib": base}
    try:
        for call in ("first", "second"):
            started = time.perf_counter()
            result = transcriber.transcribe(audio, context)
            row[f"{call}_s"] = time.perf_counter() - started
        row["text"] = result.text
        row["used"] = list(result.context_used)
    except CtxasrError as err:  # the clear message the issue asks for, if any
        row["error"] = str(err)
    row["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def run_child(retriever: str, n: int, audio: str, pool: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", retriever, str(n), "--audio", audio,
           "--pool", str(pool)]  # fmt: skip
    started = time.perf_counter()
    # Each process gets an empty index cache: its first call builds the index itself
    # rather than loading one an earlier row stored ($CTXASR_CACHE).
    with tempfile.TemporaryDirectory(prefix="ctxasr-bench-cache-") as cache:
        env = {**os.environ, "CTXASR_CACHE": cache}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"retriever": retriever, "n": n, "crash": f"exit {proc.returncode}: {tail}",
                "wall_s": wall}  # fmt: skip
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["wall_s"] = wall
    return row


def table(rows: list[dict]) -> str:
    none = next(r for r in rows if r["n"] == 0)
    lines = [
        "| retriever | N | first call s (x none) | second call s (x none) | peak RSS MiB "
        "| + over none MiB | outcome |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "crash" in r:
            dashes = "| — " * 4
            lines.append(f"| {r['retriever']} | {r['n']:,} {dashes}| **crash**: {r['crash']} |")
            continue
        if "error" in r:
            outcome = f"stopped: {r['error']}"
        else:
            outcome = f"ok: {r['text'][:60]}…" if len(r["text"]) > 60 else f"ok: {r['text']}"
        first = second = "—"
        if "first_s" in r:
            first = f"{r['first_s']:.2f} ({r['first_s'] / none['second_s']:.2f}x)"
        if "second_s" in r:
            second = f"{r['second_s']:.2f} ({r['second_s'] / none['second_s']:.2f}x)"
        lines.append(
            f"| {r['retriever']} | {r['n']:,} | {first} | {second} | {r['peak_mib']:.0f} "
            f"| {r['peak_mib'] - none['peak_mib']:+.0f} | {outcome} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--retrievers", nargs="+", default=["phonetic", "hybrid"])
    parser.add_argument("--audio", default=str(ROOT / "tests" / "fixtures" / "audio" / "jfk.flac"))
    parser.add_argument("--pool", type=Path, default=POOL)
    parser.add_argument("--child", nargs=2, metavar=("RETRIEVER", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one(args.child[0], int(args.child[1]), args.audio, args.pool)))
        return
    started = time.perf_counter()
    rows = [run_child("none", 0, args.audio, args.pool)]
    for n in args.sizes:
        for retriever in args.retrievers:
            rows.append(run_child(retriever, n, args.audio, args.pool))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()  # fmt: skip
    text = (
        "# Very long contexts: time and memory\n\n"
        f"Machine: {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}. Code: {commit}. Audio: `{Path(args.audio).name}`. "
        f"Command: `python bench/context_size.py {' '.join(sys.argv[1:])}` "
        f"({(time.perf_counter() - started) / 60:.1f} min).\n\n"
        "Each row is a fresh process: packaged tiny.en, one warm-up call without context, "
        "then two calls with the context. First call: includes pronouncing the terms and "
        "building the phonetic index (each process starts with an empty index cache); "
        "second call: the index reused, as for the next recording with the same context. "
        "Ratios are to none's second call. Peak RSS is the process's maximum resident "
        "set; + over none is its difference from the no-context process.\n\n" + table(rows) + "\n"
    )
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "context_size.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
