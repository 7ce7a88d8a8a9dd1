"""Retrieval recall: how many true rare words each retriever finds, from 100 to 100,000 terms.

The retriever is the bottleneck of speech-aware pruning: a word it does not pick, the
second pass cannot get right. This measures the retrievers alone, on one first pass per
utterance, without the second pass:

* every utterance's list is its true rare words plus N distractors from
  ``all_rare_words.txt``, exactly as ``bench/context_scaling.py`` builds them
  (``with_lists``, seeded);
* pass 1 (``Transcriber.listen``) runs once per utterance; its evidence (n-best texts as
  JSON, encoder frames as float16 .npy) is kept under ``bench/work/retrieval_recall/``,
  so a rerun skips the decoding;
* per retriever (phonetic; hybrid = phonetic shortlist + audio scorer; a2p = audio scorer
  over the whole list, only for N <= ``--a2p-max``) and N:

  - recall@k, k = 1..30: share of the true rare words among the terms the first pass
    spelled plus the k best other terms (``ranked``), over the utterance's 30 s
    stretches, case-insensitive;
  - the actual pick (``retrieve``): its recall, picks per stretch, precision (share of
    the distinct picked terms of an utterance that are true rare words), retrieval ms
    per stretch (``Retrieval.seconds``; the index and term table are built beforehand
    and timed apart as "build s");

* memory: the RSS increase of building a 100,000-term retriever (phonetic index; audio
  scorer; hybrid term table), measured in a fresh process that first loads only the model.

Development sets as in context_scaling.py: ``synth-hard`` (several TTS voices, augmented;
``bench/work/synth-hard/manifest.jsonl``), ``real`` (``../shared/data/real-speech``),
``real2`` (``../shared/data/real-speech-2``, markup stripped). Rare words = the manifest's,
else the words outside the LibriSpeech 5k common list.

Per-utterance results are appended to ``bench/work/retrieval_recall/<set>/`` as they come;
a rerun keeps those made with the same package code, options, model and word pool
(``--fresh`` starts over).

Usage::

    python bench/retrieval_recall.py [--sets synth-hard real real2]
        [--sizes 100 1000 10000 100000] [--retrievers phonetic hybrid a2p]
        [--a2p-max 1000] [--limit K] [--out bench/results] [--fresh]

Writes ``retrieval_recall.md``, ``.json`` and ``.png`` (``retrieval_recall-limitK.*``
with ``--limit``: a partial run, not the benchmark's result).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from biasing_report import DATA, SEED, real2_items, real_items, synth_hard_items, with_lists
from context_scaling import fingerprint, git_state

from ctxasr import ContextTerm, TranscribeOptions, Transcriber
from ctxasr.context.retrieval import Evidence
from ctxasr.context.terms import dedupe_terms
from ctxasr.data.biasing import WordPool, read_word_pool
from ctxasr.errors import ModelError
from ctxasr.eval.manifest import EvalItem
from ctxasr.eval.run import rare_words

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "retrieval_recall"
SETS = {
    "synth-hard": "synth-hard (TTS voices, augmented)",
    "real": "real-speech",
    "real2": "real-speech-2",
}
SIZES = (100, 1000, 10_000, 100_000)
RETRIEVERS = ("phonetic", "hybrid", "a2p")
LISTENING = ("hybrid", "a2p")
K_MAX = 30
SHOWN_K = (1, 5, 10, 15, 30)
A2P_MAX = 1000  # the audio scorer alone scores every term: slow on long lists
MEMORY_N = 100_000
PASS1_FIELDS = (  # the options the first pass (and so the cached evidence) depends on
    "language", "beam_size", "temperatures", "compression_ratio_threshold",
    "log_prob_threshold", "no_speech_threshold", "nbest", "vad",
)  # fmt: skip


# --- pass 1, once per utterance --------------------------------------------------------


class EvidenceCache:
    """Each utterance's first-pass evidence on disk: ``<id>.json`` (stretch windows and
    n-best texts) and ``<id>.npy`` (its stretches' encoder frames, (S, T, D) float16).
    Emptied when the model or the first pass's options change, or on ``fresh``."""

    def __init__(self, folder: Path, transcriber: Transcriber, fresh: bool) -> None:
        self.folder = folder
        self.transcriber = transcriber
        opts = transcriber.options
        key = {"model": str(transcriber.resolved.path),
               **{f: repr(getattr(opts, f)) for f in PASS1_FIELDS}}  # fmt: skip
        mark = folder / "pass1.json"
        if mark.is_file() and (fresh or json.loads(mark.read_text()) != key):
            for path in folder.glob("*/*.np[y]"):
                path.unlink()
            for path in folder.glob("*/*.json"):
                path.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        mark.write_text(json.dumps(key, indent=1) + "\n")
        self.decoded = 0  # utterances decoded by this run
        self.decode_seconds = 0.0

    def get(self, set_key: str, item: EvalItem) -> list[tuple[float, float, Evidence]]:
        stem = self.folder / set_key / re.sub(r"[^\w.-]", "_", item.id)
        text, frames = stem.with_suffix(".json"), stem.with_suffix(".npy")
        if not (text.is_file() and frames.is_file()):
            self._decode(item, text, frames)
        rows = json.loads(text.read_text())
        stacked = np.load(frames)
        return [
            (r["start"], r["end"], Evidence(tuple(r["hypotheses"]),
                                            stacked[k].astype(np.float32) if r["frames"] else None))
            for k, r in enumerate(rows)
        ]  # fmt: skip

    def _decode(self, item: EvalItem, text: Path, frames: Path) -> None:
        start = time.perf_counter()
        heard = self.transcriber.listen(item.audio)
        self.decode_seconds += time.perf_counter() - start
        self.decoded += 1
        shapes = {e.frames.shape for _, _, e in heard if e.frames is not None}
        assert len(shapes) <= 1, f"stretches of unequal frame shapes: {shapes}"
        shape = shapes.pop() if shapes else (0, 0)
        stacked = (
            np.stack(
                [
                    (e.frames if e.frames is not None else np.zeros(shape)).astype(np.float16)
                    for _, _, e in heard
                ]
            )
            if heard
            else np.zeros((0, *shape), np.float16)
        )
        rows = [{"start": s, "end": t, "hypotheses": list(e.hypotheses),
                 "frames": e.frames is not None} for s, t, e in heard]  # fmt: skip
        text.parent.mkdir(parents=True, exist_ok=True)
        np.save(frames.with_suffix(".tmp.npy"), stacked)
        os.replace(frames.with_suffix(".tmp.npy"), frames)
        text.write_text(json.dumps(rows, ensure_ascii=False) + "\n")


# --- one retriever on one utterance ----------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One utterance under one (set, N, retriever)."""

    id: str
    truth: tuple[str, ...]  # true rare words, casefolded
    # per true rare word: 0 if the first pass spelled it in some stretch, else its best
    # rank (1-based) among the heard terms of any stretch, within K_MAX; None: not found
    found_at: tuple[int | None, ...]
    picks: tuple[tuple[str, ...], ...]  # retrieve()'s selected terms, per stretch
    ms: tuple[float, ...]  # retrieve()'s time, per stretch
    build_s: float  # this retriever's index / term table for the utterance's context

    @staticmethod
    def from_json(row: dict) -> Row:
        return Row(row["id"], tuple(row["truth"]), tuple(row["found_at"]),
                   tuple(tuple(p) for p in row["picks"]), tuple(row["ms"]),
                   row["build_s"])  # fmt: skip


class Bench:
    """The transcriber and one set of options per retriever."""

    def __init__(self, scorer: str | None = None) -> None:
        self.transcriber = Transcriber(None, TranscribeOptions(scorer=scorer))
        # No disk cache of indexes: every build is timed as a build.
        base = dataclasses.replace(self.transcriber.options, cache_index=False)
        self.options = {r: dataclasses.replace(base, retriever=r) for r in RETRIEVERS}
        self.scorer_error: str | None = None
        try:
            self.transcriber.scorer_for(base.scorer)
        except ModelError as exc:
            self.scorer_error = str(exc)

    def warm_up(self, evidence: Sequence[tuple[float, float, Evidence]], pool: WordPool,
                retrievers: Sequence[str]) -> None:  # fmt: skip
        """Load what a first retriever loads (pronunciations, scorer), outside the timings."""
        context = dedupe_terms(ContextTerm(w) for w in pool.words[:50])
        for name in retrievers:
            retriever = self.transcriber.retriever_for(context, self.options[name])
            for _, _, e in evidence[:1]:
                retriever.retrieve(e)

    def run(self, name: str, item: EvalItem, context: Sequence[ContextTerm],
            evidence: Sequence[tuple[float, float, Evidence]]) -> Row:  # fmt: skip
        start = time.perf_counter()
        retriever = self.transcriber.retriever_for(context, self.options[name])
        if name in LISTENING:
            retriever.table  # noqa: B018  (built lazily: build it here, outside the timings)
        build_s = time.perf_counter() - start
        truth = sorted({w.casefold() for w in rare_words(item)})
        best: dict[str, int] = {}
        picks, ms = [], []
        for _, _, e in evidence:
            if name == "phonetic":
                spelled, heard = retriever.ranked(e, floor=0.5, limit=300)
            elif name == "hybrid":
                spelled, heard = retriever.ranked(e)
            else:
                spelled, heard = retriever.ranked(e, limit=K_MAX)
            ranks = [(t.term, 0) for t in spelled] + [
                (t.term, k) for k, t in enumerate(heard[:K_MAX], start=1)
            ]
            for term, rank in ranks:
                word = term.casefold()
                best[word] = min(best.get(word, rank), rank)
            got = retriever.retrieve(e)
            picks.append(tuple(t.term for t in got.selected))
            ms.append(round(1000.0 * got.seconds, 3))
        found = tuple(best.get(w) for w in truth)
        return Row(item.id, tuple(truth), found, tuple(picks), tuple(ms), round(build_s, 4))


class Store:
    """The rows of one (set, N, retriever), one JSON line each, appended as they come;
    the first line holds the fingerprint, and a file with another one is started over."""

    def __init__(self, path: Path, fingerprint: str, fresh: bool) -> None:
        self.path = path
        self.rows: dict[str, Row] = {}
        if path.is_file() and not fresh:
            lines = path.read_text(encoding="utf-8").splitlines()
            if lines and json.loads(lines[0]).get("fingerprint") == fingerprint:
                for line in lines[1:]:
                    try:
                        row = Row.from_json(json.loads(line))
                    except (json.JSONDecodeError, KeyError, TypeError):
                        break  # a line cut short by a crash
                    self.rows[row.id] = row
        path.parent.mkdir(parents=True, exist_ok=True)
        head = json.dumps({"fingerprint": fingerprint}) + "\n"
        body = "".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in self.rows.values())
        tmp = path.with_suffix(".tmp")
        tmp.write_text(head + body, encoding="utf-8")
        os.replace(tmp, path)

    def add(self, row: Row) -> None:
        self.rows[row.id] = row
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(dataclasses.asdict(row), ensure_ascii=False) + "\n")


# --- metrics -------------------------------------------------------------------------


def stats(rows: Sequence[Row]) -> dict:
    """recall@k, the pick's recall, picks per stretch, precision, times, over ``rows``."""
    truth = sum(len(r.truth) for r in rows)
    at_k = [sum(1 for r in rows for f in r.found_at if f is not None and f <= k)
            for k in range(1, K_MAX + 1)]  # fmt: skip
    hits = distinct = 0
    for r in rows:
        picked = {t.casefold() for p in r.picks for t in p}
        hits += len(picked & set(r.truth))
        distinct += len(picked)
    per_stretch = [len(p) for r in rows for p in r.picks]
    ms = [m for r in rows for m in r.ms]
    builds = [r.build_s for r in rows]
    return {
        "utterances": len(rows),
        "stretches": len(per_stretch),
        "true_rare_words": truth,
        "spelled": sum(1 for r in rows for f in r.found_at if f == 0),
        "recall_at_k": [n / truth if truth else None for n in at_k],
        "pick_recall": hits / truth if truth else None,
        "picks_per_stretch": statistics.fmean(per_stretch) if per_stretch else None,
        "picked_distinct": distinct,
        "true_picked": hits,
        "precision": hits / distinct if distinct else None,
        "ms_mean": statistics.fmean(ms) if ms else None,
        "ms_max": max(ms) if ms else None,
        "build_s_mean": statistics.fmean(builds) if builds else None,
        "build_s_max": max(builds) if builds else None,
    }


# --- memory --------------------------------------------------------------------------


class _PeakRss:
    """The process's largest RSS (MiB) since the last ``reset``, sampled every 5 ms."""

    def __init__(self) -> None:
        import threading

        import psutil

        self._me = psutil.Process()
        self._peak = self.now()
        self._stop = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def now(self) -> float:
        return self._me.memory_info().rss / 2**20

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, self.now())

    def reset(self) -> float:
        """The peak since the last reset (the current RSS included); starts a new one."""
        peak, self._peak = max(self._peak, self.now()), self.now()
        return peak


def hash_file(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def memory_probe(terms_file: Path) -> dict:
    """In this (fresh) process: load the model, then build the retrievers of the terms in
    ``terms_file`` (one a line), and report the RSS after each step and its peak during it."""
    transcriber = Transcriber(None, TranscribeOptions())
    rss = _PeakRss()
    out: dict = {"steps": []}
    base = rss.now()
    out["model_mib"] = base

    def step(name: str, build) -> bool:
        before = rss.now()
        rss.reset()
        start = time.perf_counter()
        try:
            build()
        except ModelError as exc:
            out["steps"].append({"step": name, "error": str(exc)})
            return False
        seconds = time.perf_counter() - start
        after = rss.now()
        out["steps"].append({"step": name, "seconds": seconds, "rss_mib": after,
                             "increase_mib": after - before,
                             "peak_over_before_mib": rss.reset() - before})  # fmt: skip
        return True

    lines = terms_file.read_text(encoding="utf-8").splitlines()
    context = dedupe_terms(ContextTerm(" ".join(t.split())) for t in lines if t.strip())
    small = dedupe_terms(ContextTerm(" ".join(t.split())) for t in lines[-50:] if t.strip())
    out["terms"] = len(context)
    opts = dataclasses.replace(transcriber.options, cache_index=False)
    phonetic = dataclasses.replace(opts, retriever="phonetic")
    hybrid = dataclasses.replace(opts, retriever="hybrid")
    step("pronunciation lexicon (a 50-term index)",
         lambda: transcriber.retriever_for(small, phonetic))  # fmt: skip
    step(f"phonetic index, {len(context):,} terms",
         lambda: transcriber.retriever_for(context, phonetic))  # fmt: skip
    if step("audio scorer weights", lambda: transcriber.scorer_for(opts.scorer)):
        step(f"hybrid term table, {len(context):,} terms",
             lambda: transcriber.retriever_for(context, hybrid).table)  # fmt: skip
    out["total_increase_mib"] = rss.now() - base
    return out


def measure_memory(terms: Sequence[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "terms.txt"
        path.write_text("\n".join(terms) + "\n", encoding="utf-8")
        done = subprocess.run(
            [sys.executable, __file__, "--memory-probe", str(path)],
            capture_output=True, text=True, check=False, cwd=HERE,
        )  # fmt: skip
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_section(mem: dict) -> str:
    if "error" in mem:
        return f"Memory probe failed: {mem['error']}\n"
    lines = [
        f"Memory of a {mem['terms']:,}-term context, built in a fresh process after loading "
        f"only the model (RSS then: {mem['model_mib']:.0f} MiB; no index disk cache):\n",
        "| step | RSS increase MiB | peak during the step, over RSS before it, MiB | s |",
        "|---|---|---|---|",
    ]
    for s in mem["steps"]:
        if "error" in s:
            lines.append(f"| {s['step']} | not loaded: {s['error']} | | |")
        else:
            lines.append(f"| {s['step']} | {s['increase_mib']:+.0f} "
                         f"| {s['peak_over_before_mib']:+.0f} | {s['seconds']:.2f} |")  # fmt: skip
    lines.append(f"| all | {mem['total_increase_mib']:+.0f} | | |")
    return "\n".join(lines) + "\n"


# --- report --------------------------------------------------------------------------


def _f(x: float | None, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def set_table(results: dict[str, dict[int, dict]]) -> str:
    head = (["retriever", "N"] + [f"R@{k}" for k in SHOWN_K]
            + ["pick recall", "picks / stretch", "precision", "ms mean", "ms max",
               "build s mean"])  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, by_n in results.items():
        for n, s in sorted(by_n.items()):
            row = (
                [name, f"{n:,}"]
                + [_f(s["recall_at_k"][k - 1], ".1%") for k in SHOWN_K]
                + [
                    f"{_f(s['pick_recall'], '.1%')} ({s['true_picked']}/{s['true_rare_words']})",
                    _f(s["picks_per_stretch"], ".2f"),
                    _f(s["precision"], ".1%"),
                    _f(s["ms_mean"], ".1f"),
                    _f(s["ms_max"], ".1f"),
                    _f(s["build_s_mean"], ".3f"),
                ]
            )
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, dict[str, dict[int, dict]]], titles: dict[str, str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(report), figsize=(6 * len(report), 4.2), squeeze=False)
    ks = list(range(1, K_MAX + 1))
    colors = {"phonetic": "tab:blue", "hybrid": "tab:orange", "a2p": "tab:green"}
    for ax, (key, results) in zip(axes[0], report.items()):
        for name, by_n in results.items():
            for n, style in ((1000, "-"), (100_000, "--")):
                s = by_n.get(n)
                if s is None or s["recall_at_k"][0] is None:
                    continue
                ax.plot(ks, [100 * r for r in s["recall_at_k"]], style,
                        color=colors.get(name), label=f"{name}, N={n:,}")  # fmt: skip
        ax.set_xlabel("k (heard terms kept per stretch, besides the spelled ones)")
        ax.set_ylabel("recall of true rare words (%)")
        ax.set_title(titles[key])
        ax.set_ylim(top=100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main ----------------------------------------------------------------------------


def load_set(key: str, args: argparse.Namespace) -> list[EvalItem]:
    if key == "synth-hard":
        return synth_hard_items(args.synth_hard)
    if key == "real":
        return real_items(args.real)
    return real2_items(args.real2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    parser.add_argument("--retrievers", nargs="+", choices=RETRIEVERS, default=list(RETRIEVERS))
    parser.add_argument("--a2p-max", type=int, default=A2P_MAX,
                        help="largest N for a2p, which scores every term of the list")  # fmt: skip
    parser.add_argument("--limit", type=int, default=None,
                        help="only the first K utterances of each set (a partial run)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--work", type=Path, default=WORK,
                        help="first-pass evidence and per-utterance results")  # fmt: skip
    parser.add_argument("--fresh", action="store_true", help="ignore earlier runs' results")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory probe")
    parser.add_argument(
        "--scorer",
        type=Path,
        default=None,
        help="audio scorer weights to use (a folder from ctxasr train "
        "retriever) instead of the packaged ones",
    )
    parser.add_argument("--synth-hard", type=Path,
                        default=HERE / "work" / "synth-hard" / "manifest.jsonl")  # fmt: skip
    parser.add_argument("--real", type=Path, default=DATA / "real-speech")
    parser.add_argument("--real2", type=Path, default=DATA / "real-speech-2")
    parser.add_argument(
        "--pool", type=Path, default=DATA / "librispeech-biasing" / "words" / "all_rare_words.txt"
    )
    parser.add_argument("--memory-probe", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe)))
        return

    started = time.perf_counter()
    sizes = sorted(set(args.sizes))
    sets = {key: load_set(key, args) for key in args.sets}  # fail early on a missing set
    pool = WordPool(read_word_pool(args.pool))
    bench = Bench(str(args.scorer) if args.scorer else None)
    names = list(args.retrievers)
    skipped = ""
    if bench.scorer_error and any(n in LISTENING for n in names):
        skipped = f"hybrid and a2p not run: the audio scorer did not load ({bench.scorer_error})"
        print(skipped, file=sys.stderr, flush=True)
        names = [n for n in names if n not in LISTENING]
    t = bench.transcriber
    # Another scorer's weights change the rows as much as the packaged ones do.
    weights = sorted(args.scorer.glob("*")) if args.scorer else []
    salt = (K_MAX, *(hash_file(w) for w in weights if w.is_file())) if weights else K_MAX
    stamp = fingerprint(args.pool, t.options, str(t.resolved.path), salt=salt)
    cache = EvidenceCache(args.work / "pass1", t, args.fresh)
    report: dict[str, dict[str, dict[int, dict]]] = {}
    warm = False
    for key, items in sets.items():
        items = items[: args.limit] if args.limit else items
        if not warm:
            bench.warm_up(cache.get(key, items[0]), pool, names)
            warm = True
        for item in items:  # pass 1 first: each utterance once, whatever the N
            cache.get(key, item)
        print(f"{key}: first pass of {len(items)} utterances ready ({cache.decoded} "
              f"decoded so far, {cache.decode_seconds:.0f} s)", flush=True)  # fmt: skip
        results: dict[str, dict[int, dict]] = {n: {} for n in names}
        for n in sizes:
            wanted = [r for r in names if r != "a2p" or n <= args.a2p_max]
            stores = {r: Store(args.work / key / f"{r}-N{n}.jsonl", stamp, args.fresh)
                      for r in wanted}  # fmt: skip
            todo = [i for i in with_lists(items, pool, n)
                    if any(i.id not in s.rows for s in stores.values())]  # fmt: skip
            clock = time.perf_counter()
            for done, item in enumerate(todo, start=1):
                evidence = cache.get(key, item)
                context = dedupe_terms(ContextTerm(" ".join(t.split())) for t in item.context)
                for r in wanted:
                    if item.id not in stores[r].rows:
                        stores[r].add(bench.run(r, item, context, evidence))
                if done % 20 == 0:
                    print(f"  {key} N={n:,}: {done}/{len(todo)} "
                          f"({time.perf_counter() - clock:.0f} s)", flush=True)  # fmt: skip
            for r in wanted:
                s = stats([stores[r].rows[i.id] for i in items])
                results[r][n] = s
                print(f"{key} {r} N={n:,}: R@10 {_f(s['recall_at_k'][9], '.1%')}, pick "
                      f"{_f(s['pick_recall'], '.1%')} at {_f(s['picks_per_stretch'], '.2f')}"
                      f"/stretch, {_f(s['ms_mean'], '.1f')} ms", flush=True)  # fmt: skip
        report[key] = results

    memory = None
    if not args.no_memory:
        key, items = next(iter(sets.items()))
        first = with_lists(items[:1], pool, MEMORY_N)[0]
        memory = measure_memory(first.context)
        print(f"memory: {memory}", flush=True)

    suffix = f"-limit{args.limit}" if args.limit else ""
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / f"retrieval_recall{suffix}.png"
    plot(report, SETS, png)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "model": f"{t.resolved.name} ({t.resolved.path})",
        "code": git_state(),
        "command": shlex.join(["python", *sys.argv]),
        "fingerprint": stamp,
        "seed": SEED,
        "sizes": sizes,
        "retrievers": names,
        "a2p_max": args.a2p_max,
        "limit": args.limit,
        "not_run": skipped,
        "pass1_decoded_now": cache.decoded,
        "pass1_seconds_now": cache.decode_seconds,
        "wall_seconds": time.perf_counter() - started,
    }
    sections = []
    for key, results in report.items():
        n_items = len(sets[key][: args.limit] if args.limit else sets[key])
        any_stats = next((s for by_n in results.values() for s in by_n.values()), None)
        truth = any_stats["true_rare_words"] if any_stats else 0
        stretches = any_stats["stretches"] if any_stats else 0
        sections.append(f"## {SETS[key]}: {n_items} utterances, {stretches} stretches, "
                        f"{truth} true rare words\n\n" + set_table(results))  # fmt: skip
    text = (
        "# Retrieval recall: the retrievers alone, from 100 to 100,000 context terms\n\n"
        + ("**Partial run (--limit): not the benchmark's result.**\n\n" if args.limit else "")
        + f"Date: {meta['date']}. Machine: {meta['machine']}, Python {meta['python']}. "
        f"Model: {meta['model']}, int8, CPU, beam {t.options.beam_size}, {t.options.nbest}-best. "
        f"Code: {meta['code']}. Command: `{meta['command']}` "
        f"({meta['wall_seconds'] / 60:.1f} min; first passes decoded now: {cache.decoded}).\n\n"
        "Each utterance's list: its true rare words plus N distractors from "
        f"all_rare_words.txt (seed {SEED}), as in context_scaling.py; one first pass per "
        "utterance, no second pass. R@k: share of the true rare words among the terms the "
        "first pass spelled plus the k best other terms of a 30 s stretch (``ranked``), over "
        "the utterance's stretches, case-insensitive. pick recall, picks / stretch, "
        "precision: of ``retrieve()``'s pick (precision over the distinct terms picked per "
        "utterance). ms: ``retrieve()`` per stretch. build s: the retriever's per-context "
        "build (phonetic: the index; hybrid and a2p: the audio term table, the index being "
        "shared), not in ms."
        + (f" a2p only for N <= {args.a2p_max:,}." if "a2p" in names else "")
        + (f"\n\nNote: {skipped}." if skipped else "")
        + "\n\n" + "\n".join(sections)
        + ("\n" + memory_section(memory) if memory else "")
        + f"\n![recall@k]({png.name})\n"
    )  # fmt: skip
    (args.out / f"retrieval_recall{suffix}.md").write_text(text)
    payload = {
        "meta": meta,
        "sets": {
            k: {r: {str(n): s for n, s in by_n.items()} for r, by_n in v.items()}
            for k, v in report.items()
        },
        "memory": memory,
    }
    (args.out / f"retrieval_recall{suffix}.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
