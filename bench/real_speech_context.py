"""Do the true rare words come out spelled as listed? The real-speech acceptance check.

For every recording of ``../shared/data/real-speech``, the context is the reference's
rare words (words outside the LibriSpeech 5,000 most common, the benchmark's own
definition), spelled as a user would list them (lower case for all-caps references).
Each file is transcribed by the ``ctxasr transcribe AUDIO --context FILE --format json``
command itself, and, in the same run, without context. A rare word counts as spelled as
listed when it appears in the output as a whole word, ignoring case.

Usage::

    python bench/real_speech_context.py [--data ../shared/data/real-speech]

Writes the table to stdout and to ``bench/results/real_speech_context.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ctxasr.eval.manifest import common_words

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
RESULTS = HERE / "results"
_WORD = re.compile(r"[A-Za-z0-9']+")


def rare_words(text: str, common: frozenset[str]) -> list[str]:
    shout = text.isupper()
    out: list[str] = []
    for word in _WORD.findall(text):
        listed = word.lower() if shout else word
        if word.lower().strip("'") not in common and listed.lower() not in {w.lower() for w in out}:
            out.append(listed)
    return out


def found(term: str, text: str) -> bool:
    return term.lower() in {w.lower() for w in _WORD.findall(text)}


def transcribe(audio: Path, terms_file: Path | None) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "ctxasr.cli", "transcribe", str(audio), "-f", "json", "-q"]
    if terms_file is not None:
        cmd += ["--context", str(terms_file)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{audio}: ctxasr failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA / "real-speech")
    args = parser.parse_args()
    common = common_words()  # the benchmark's 5k list, packaged with ctxasr
    rows = [json.loads(line) for line in (args.data / "manifest.jsonl").read_text().splitlines()]
    lines = [
        "| recording | rare words | spelled as listed: no context | with context | missed with context |",
        "|---|---|---|---|---|",
    ]
    totals = [0, 0, 0, 0]
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            terms = rare_words(row["text"], common)
            audio = args.data / row["audio"]
            plain, _ = transcribe(audio, None)
            files_ok = 1
            if not terms:
                totals[3] += files_ok
                continue
            terms_file = Path(tmp) / "terms.txt"
            terms_file.write_text("\n".join(terms) + "\n", encoding="utf-8")
            biased, _ = transcribe(audio, terms_file)
            hit_plain = sum(found(t, plain["text"]) for t in terms)
            hit_biased = sum(found(t, biased["text"]) for t in terms)
            missed = [t for t in terms if not found(t, biased["text"])]
            totals[0] += len(terms)
            totals[1] += hit_plain
            totals[2] += hit_biased
            totals[3] += files_ok
            lines.append(
                f"| {row['id']} | {len(terms)} | {hit_plain} | {hit_biased} | {', '.join(missed) or '–'} |"
            )
    n, p, b, ok = totals
    lines.append(
        f"| **all ({ok} of {len(rows)} files transcribed)** | **{n}** | **{p} ({100 * p / n:.0f}%)** "
        f"| **{b} ({100 * b / n:.0f}%)** | |"
    )
    table = "\n".join(
        [
            "# Real speech: rare words as context (packaged tiny.en, CLI, JSON output)",
            "",
            "Context = each reference's words outside the LibriSpeech 5k common list. "
            "Files with no rare word are transcribed without context only.",
            "",
            *lines,
            "",
        ]
    )
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "real_speech_context.md").write_text(table)


if __name__ == "__main__":
    main()
