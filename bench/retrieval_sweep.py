"""The phonetic retriever's pick over a grid of its thresholds: recall against picks.

``PhoneticOptions`` decides which of the terms the phonetic index heard are picked: the
score ``threshold`` (and ``short_threshold`` for terms of under ``short_phones`` phones),
``per_span`` (terms kept per stretch of first-pass words) and ``max_terms`` (unspelled
picks per 30 s stretch). A lower bar finds more of the true rare words and lets more
distractors into the second pass's prompt. This measures that trade on the development
sets without any second pass: for each grid point, the pick's recall of the true rare
words, picks per stretch and precision, exactly as ``bench/retrieval_recall.py`` counts
them (and on its cached first passes, ``bench/work/retrieval_recall/``).

One index per utterance's context is built once and every grid point re-selects from
the same scored candidates, so a grid costs little more than one retrieval per point.

With ``--hybrid`` it sweeps the hybrid retriever's pick instead (``HybridOptions``: the
audio scorer's ``veto`` of a phonetic pick, the blend ``threshold`` a shortlisted term
needs to join, and the blend's ``audio_weight``), the phonetic options as they are.

Usage::

    python bench/retrieval_sweep.py [--sets synth-hard real real2] [--size 1000]
        [--thresholds 0.7 0.75 0.8] [--per-span 2 3] [--max-terms 8 16]
    python bench/retrieval_sweep.py --hybrid [--scorer DIR] [--veto 0 0.1 0.2]
        [--join 0.5 0.6] [--audio-weight 0.6]

Writes ``retrieval_sweep.md`` (``retrieval_sweep-N<size>.md`` for other sizes;
``retrieval_sweep-hybrid*.md`` with ``--hybrid``).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import platform
import shlex
import sys
import time
from pathlib import Path

from biasing_report import DATA, real2_items, real_items, synth_hard_items, with_lists
from context_scaling import git_state
from retrieval_recall import WORK, EvidenceCache

from ctxasr import ContextTerm, TranscribeOptions, Transcriber
from ctxasr.context.terms import dedupe_terms
from ctxasr.data.biasing import WordPool, read_word_pool
from ctxasr.eval.run import rare_words

HERE = Path(__file__).resolve().parent
SETS = {"synth-hard": "synth-hard", "real": "real-speech", "real2": "real-speech-2"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--thresholds", nargs="+", type=float, default=[0.7, 0.75, 0.8])
    parser.add_argument("--short-thresholds", nargs="+", type=float, default=[0.95])
    parser.add_argument("--per-span", nargs="+", type=int, default=[2, 3])
    parser.add_argument("--max-terms", nargs="+", type=int, default=[8, 16])
    parser.add_argument(
        "--shortlist",
        nargs="+",
        type=int,
        default=[400],
        help="terms aligned exactly after the trigram shortlist",
    )
    parser.add_argument(
        "--min-coverage",
        nargs="+",
        type=float,
        default=[0.25],
        help="share of a term's trigrams the first pass must hold",
    )
    parser.add_argument(
        "--homophone-context",
        nargs="+",
        type=int,
        default=[1000],
        help="context size from which homophones of common words are dropped",
    )
    parser.add_argument("--hybrid", action="store_true", help="sweep the hybrid pick")
    parser.add_argument(
        "--scorer",
        type=Path,
        default=None,
        help="audio scorer weights (default: the packaged ones)",
    )
    parser.add_argument("--veto", nargs="+", type=float, default=[0.0, 0.1, 0.2])
    parser.add_argument("--join", nargs="+", type=float, default=[0.5, 0.6])
    parser.add_argument("--audio-weight", nargs="+", type=float, default=[0.6])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--synth-hard", type=Path,
                        default=HERE / "work" / "synth-hard" / "manifest.jsonl")  # fmt: skip
    args = parser.parse_args()
    started = time.perf_counter()
    transcriber = Transcriber(None, TranscribeOptions(
        scorer=str(args.scorer) if args.scorer else None))  # fmt: skip
    base = dataclasses.replace(transcriber.options, cache_index=False,
                               retriever="hybrid" if args.hybrid else "phonetic")  # fmt: skip
    cache = EvidenceCache(WORK / "pass1", transcriber, fresh=False)  # retrieval_recall's
    pool = WordPool(read_word_pool(DATA / "librispeech-biasing" / "words" / "all_rare_words.txt"))
    grid = [
        dataclasses.replace(
            base.retrieval,
            threshold=t,
            short_threshold=max(s, t),
            per_span=p,
            max_terms=m,
            shortlist=k,
            min_coverage=c,
            homophone_context=h,
        )
        for t, s, p, m, k, c, h in itertools.product(
            args.thresholds,
            args.short_thresholds,
            args.per_span,
            args.max_terms,
            args.shortlist,
            args.min_coverage,
            args.homophone_context,
        )
    ]
    if args.hybrid:
        grid = [
            dataclasses.replace(base.hybrid, veto=v, threshold=j, audio_weight=w)
            for v, j, w in itertools.product(args.veto, args.join, args.audio_weight)
        ]
    loaders = {"synth-hard": lambda: synth_hard_items(args.synth_hard),
               "real": lambda: real_items(DATA / "real-speech"),
               "real2": lambda: real2_items(DATA / "real-speech-2")}  # fmt: skip
    sections = []
    for key in args.sets:
        items = loaders[key]()[: args.limit]
        counts = {o: [0, 0, 0, 0] for o in grid}  # hits, distinct picked, picks, stretches
        truth = 0
        for item in with_lists(items, pool, args.size):
            evidence = cache.get(key, item)
            context = dedupe_terms(ContextTerm(t) for t in item.context)
            retriever = transcriber.retriever_for(context, base)
            true = {w.casefold() for w in rare_words(item)}
            truth += len(true)
            for o in grid:
                # Selection reads its options at retrieval time: one index, every point.
                retriever.options = o
                picked: set[str] = set()
                for _, _, e in evidence:
                    got = retriever.retrieve(e)
                    picked |= {t.term.casefold() for t in got.selected}
                    counts[o][2] += len(got.selected)
                    counts[o][3] += 1
                counts[o][0] += len(picked & true)
                counts[o][1] += len(picked)
            retriever.options = base.hybrid if args.hybrid else base.retrieval  # cached
        if args.hybrid:
            rows = ["| veto | join | audio weight | pick recall | picks / stretch | precision |",
                    "|---|---|---|---|---|---|"]  # fmt: skip
        else:
            rows = [
                (
                    "| threshold | short | per span | max terms | shortlist | coverage | homophones "
                    "from | pick recall | picks / stretch | precision |"
                ),
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
        for o, (hits, distinct, picks, stretches) in counts.items():
            if args.hybrid:
                first = f"| {o.veto:g} | {o.threshold:g} | {o.audio_weight:g} "
            else:
                first = (f"| {o.threshold:.2f} | {o.short_threshold:.2f} | {o.per_span} "
                         f"| {o.max_terms} | {o.shortlist} | {o.min_coverage:g} "
                         f"| {o.homophone_context:,} ")  # fmt: skip
            rows.append(
                first + f"| {100 * hits / max(truth, 1):.1f}% ({hits}/{truth}) "
                f"| {picks / max(stretches, 1):.2f} | {100 * hits / max(distinct, 1):.1f}% |"
            )
        sections.append(f"## {SETS[key]}: {len(items)} utterances, N = {args.size:,}\n\n"
                        + "\n".join(rows))  # fmt: skip
        print(sections[-1], flush=True)
    name = "retrieval_sweep" + ("-hybrid" if args.hybrid else "") + (
        "" if args.size == 1000 else f"-N{args.size}") + ".md"  # fmt: skip
    text = (
        f"# The {'hybrid' if args.hybrid else 'phonetic'} retriever's pick over a grid of "
        "its thresholds\n\n"
        f"Machine: {platform.machine()}, Python {platform.python_version()}. Code: "
        f"{git_state()}. Command: `python bench/retrieval_sweep.py "
        f"{shlex.join(sys.argv[1:])}` ({(time.perf_counter() - started) / 60:.1f} min).\n\n"
        "Pick recall: share of the true rare words among the terms picked in any stretch "
        "of the utterance (spelled by the first pass or not); picks / stretch: terms "
        "picked per 30 s stretch, spelled ones included; precision: share of an "
        "utterance's distinct picked terms that are true rare words. No second pass.\n\n"
        + "\n\n".join(sections)
        + "\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
