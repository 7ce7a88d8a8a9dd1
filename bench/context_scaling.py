"""Context scaling: WER, U-WER, B-WER and cost of tiny.en from 100 to 100,000 context terms.

The question (issue "B-WER stays flat from 10 to 100,000 context terms"): does a long
context still help the words it is meant for, what does it cost the other words, and
what does it cost in time? Three development sets:

* ``synth-hard``: 360 LibriSpeech test references spoken by 17 TTS voices, augmented
  (``bench/work/synth-hard/manifest.jsonl``; ``ctxasr data synth --augment test-other``,
  calibrated in ``bench/results/synth_calibration.md``: the script says how to build it
  when it is missing);
* ``real``: the real recordings of ``../shared/data/real-speech``;
* ``real2``: the real recordings of ``../shared/data/real-speech-2`` (disfluent,
  whispered, creaky voices; transcription markup stripped, ``text_normalized`` where
  given).

Rare words: the manifest's, else the words outside the packaged LibriSpeech 5k common
list. For each N, every utterance's list is its own true rare words plus N distractors
from ``all_rare_words.txt`` (``build_biasing_lists``, seeded as in biasing_report.py).
Systems, in one run on one model (packaged tiny.en, int8, CPU, beam 5):

* ``none``: ctxasr with no context (once per set; the time base of every ratio);
* ``oracle prompt``: ctxasr with only the true rare words, whole list in the prompt;
* ``whole-list prompt``: ctxasr with the whole list in every prompt, as far as the
  223-token budget goes;
* ``ctxasr phonetic``: speech-aware pruning (a first pass without context, the terms it
  heard, matched by sound, in a second pass's prompt), with the default verification
  (on from ``TranscribeOptions.verify_from`` terms);
* ``ctxasr hybrid``: the same with the phonetic shortlist re-ranked by the trained audio
  scorer (``ctxasr.a2p``) on the stretch's encoder frames;
* ``ctxasr a2p``: the audio scorer alone over the whole list (only N <= ``--a2p-max``,
  1,000 by default: it scores every term);
* ``ctxasr phonetic + verify``, ``ctxasr hybrid + verify``: with decoder verification of
  the second pass's changes (``TranscribeOptions(verify=True)``);
* ``fw hotwords`` (off by default; ``--systems``): plain faster-whisper with the whole
  list as ``hotwords``.

Scores are Whisper-normalised (``score_text``, as ``ctxasr.eval.run.evaluate`` scores).
Each utterance's result is appended to ``bench/work/context_scaling/`` as it comes; a
rerun keeps those of an earlier run when the package code (and audio scorer weights),
options, model and word pool are unchanged, and runs only what is missing (``--fresh``
starts over). Phonetic indexes of 2,000 terms or more are stored in
``bench/work/context_scaling/index-cache`` (``$CTXASR_CACHE``; about 5 MB per
100,000-term list; emptied on ``--fresh`` or when the code changes), so a rerun loads
them instead of building them; the report says so.

Usage::

    python bench/context_scaling.py [--sets synth-hard real real2]
        [--sizes 100 1000 10000 100000] [--systems ...] [--a2p-max 1000]
        [--limit K] [--out bench/results] [--fresh]

Writes ``context_scaling.md``, ``context_scaling.png`` and ``context_scaling.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from biasing_report import (
    DATA,
    SEED,
    real2_items,
    real_items,
    recognizers,
    synth_hard_items,
    with_lists,
)

import ctxasr
from ctxasr import ContextTerm, TranscribeOptions, Transcriber
from ctxasr.audio import probe
from ctxasr.context.retrieval import context_key, index_cache_dir
from ctxasr.context.terms import dedupe_terms
from ctxasr.data.biasing import WordPool, read_word_pool
from ctxasr.errors import ModelError
from ctxasr.eval.manifest import EvalItem
from ctxasr.eval.run import rare_words
from ctxasr.eval.score import BiasingScores, ErrorCounts, score_text
from ctxasr.transcribe import CACHE_MIN_TERMS

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "context_scaling"
SIZES = (100, 1000, 10_000, 100_000)
SETS = {
    "synth-hard": "synth-hard (TTS voices, augmented)",
    "real": "real-speech",
    "real2": "real-speech-2",
}

NONE, ORACLE, WHOLE = "none", "oracle prompt", "whole-list prompt"
PHONETIC, HYBRID, A2P = "ctxasr phonetic", "ctxasr hybrid", "ctxasr a2p"
PHONETIC_V, HYBRID_V = "ctxasr phonetic + verify", "ctxasr hybrid + verify"
HOTWORDS = "fw hotwords"
SYSTEMS = (NONE, ORACLE, WHOLE, PHONETIC, PHONETIC_V, HYBRID, HYBRID_V, A2P, HOTWORDS)
DEFAULT_SYSTEMS = tuple(s for s in SYSTEMS if s != HOTWORDS)
PER_SIZE = SYSTEMS[2:]  # run for every N; none and oracle once per set
# system: (TranscribeOptions.retriever, verify); None: the default, which verifies
# contexts of TranscribeOptions.verify_from terms or more.
RETRIEVER = {
    NONE: ("none", False),
    ORACLE: ("all", False),
    WHOLE: ("all", False),
    PHONETIC: ("phonetic", None),
    PHONETIC_V: ("phonetic", True),
    HYBRID: ("hybrid", False),
    HYBRID_V: ("hybrid", True),
    A2P: ("a2p", False),
}
PRUNING = (PHONETIC, PHONETIC_V, HYBRID, HYBRID_V, A2P)  # systems that retrieve per stretch
LISTENING = (HYBRID, HYBRID_V, A2P)  # systems that need the audio scorer
A2P_MAX = 1000  # the audio scorer alone scores every term: slow on long lists

# faster-whisper keeps only the first max_length // 2 - 1 = 223 tokens of ``hotwords``
# but tokenises the whole string for every 30 s stretch. Every term is at least one
# token and each ", " another, so the first 500 terms already make more than 223
# tokens: a list cut there gives faster-whisper the very same prompt (checked per list).
HOTWORDS_CAP = 500
HOTWORDS_PROMPT = 223
SLOW = 5.0  # cap when tokenising the whole string would make a run this many times none's


@dataclass(frozen=True)
class Utt:
    """One utterance's result under one (set, N, system)."""

    id: str
    pred_text: str
    seconds: float  # wall time of the transcription call
    duration: float  # audio seconds
    offered: int  # context terms given to the system
    used: int  # terms given to a decoder pass (ctxasr's context_used; fw: hotwords passed)
    # ctxasr retrievers: the context's first retriever_for (index, and audio term table)
    index_seconds: float | None = None
    index_cached: bool | None = None  # ... which loaded the phonetic index from the disk cache
    picks: tuple[dict, ...] = ()  # ctxasr retrievers: per 30 s stretch (JSON form)
    run: str = ""  # which process measured it

    @staticmethod
    def from_json(row: dict) -> Utt:
        return Utt(**{**row, "picks": tuple(row.get("picks", ()))})


@dataclass(frozen=True)
class Outcome:
    """One (set, N, system) over the whole set."""

    system: str
    size: int | None  # None: none and oracle prompt
    scores: BiasingScores
    seconds: float
    rows: tuple[Utt, ...]
    hotwords_cap: int | None = None  # fw hotwords: terms passed when the list was cut
    hotwords_cap_reason: str = ""


@dataclass(frozen=True)
class Target:
    name: str
    met: bool | None  # None: not measured in this run
    detail: str


# --- running -------------------------------------------------------------------------


class Systems:
    """The systems on one packaged tiny.en (ctxasr) and one plain faster-whisper."""

    def __init__(self) -> None:
        self.transcriber = Transcriber(None, TranscribeOptions())
        self._fw = None
        base = TranscribeOptions()
        self.options = {
            s: dataclasses.replace(base, retriever=r, verify=v) for s, (r, v) in RETRIEVER.items()
        }
        self.run_id = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")

    @property
    def fw(self):
        if self._fw is None:  # plain faster-whisper: loaded only for fw hotwords
            self._fw = recognizers(self.transcriber)[HOTWORDS]
        return self._fw

    def forget_retrievers(self) -> None:
        """Drop the transcriber's in-memory retrievers, so that the next system builds (or
        loads from the disk cache) each context's own: build times comparable across
        systems that share an index (ctxasr phonetic and its + verify run)."""
        self.transcriber._retrievers._items.clear()  # no public way; a bench-only reset

    def scorer_error(self) -> str | None:
        """Why the audio scorer does not load, or None when it does."""
        try:
            self.transcriber.scorer_for(self.options[HYBRID].scorer)
        except ModelError as exc:
            return str(exc)
        return None

    def warm_up(self, item: EvalItem, pool: WordPool, systems: Sequence[str]) -> float:
        """Load everything a first call loads (VAD, pronunciations, the audio scorer),
        outside the timings."""
        start = time.perf_counter()
        words = list(pool.words[:50])  # a context no utterance gets
        self.transcriber.transcribe(item.audio, (), options=self.options[NONE])
        for system in dict.fromkeys(RETRIEVER[s] for s in systems if s in PRUNING):
            opts = self.options[next(s for s in PRUNING if RETRIEVER[s] == system)]
            self.transcriber.transcribe(item.audio, words, options=opts)
        if HOTWORDS in systems:
            self.fw(item.audio, words)
        return time.perf_counter() - start

    def run(
        self,
        system: str,
        item: EvalItem,
        terms: Sequence[str],
        duration: float,
        hotwords_cap: int | None = None,
    ) -> Utt:
        if system == HOTWORDS:
            given = list(terms[:hotwords_cap] if hotwords_cap else terms)
            start = time.perf_counter()
            text, _ = self.fw(item.audio, given)
            seconds = time.perf_counter() - start
            return Utt(item.id, text, seconds, duration, len(terms), len(given), run=self.run_id)
        opts = self.options[system]
        index_seconds = index_cached = None
        if system in PRUNING and terms:
            # Build (or load) the index and the audio term table first, so that their
            # one-time cost is timed apart; the transcriber then finds the retriever
            # among its cached ones.
            context = dedupe_terms(ContextTerm(" ".join(t.split())) for t in terms)
            if opts.cache_index and len(context) >= CACHE_MIN_TERMS:
                index_cached = (index_cache_dir() / f"{context_key(context)}.npz").is_file()
            start = time.perf_counter()
            retriever = self.transcriber.retriever_for(context, opts)
            if system in LISTENING:
                retriever.table  # noqa: B018  (built lazily: build it here)
            index_seconds = time.perf_counter() - start
        start = time.perf_counter()
        result = self.transcriber.transcribe(item.audio, terms, options=opts)
        seconds = time.perf_counter() - start
        picks = tuple(
            {
                "start": p.start,
                "end": p.end,
                "heard": p.heard,
                "second_pass": p.second_pass,
                "seconds": p.seconds,
                "selected": [[e.term, e.score, e.in_text, e.verify] for e in p.selected],
            }
            for p in result.picks
        )
        return Utt(
            item.id,
            result.text,
            seconds,
            duration,
            len(terms),
            len(result.context_used),
            index_seconds,
            index_cached,
            picks,
            self.run_id,
        )

    def hotwords_overhead(self, terms: Sequence[str]) -> float:
        """Seconds faster-whisper spends tokenising this hotwords string, once per stretch."""
        text = " " + ", ".join(terms).strip()
        start = time.perf_counter()
        self.transcriber.encode(text)
        return time.perf_counter() - start

    def check_cap(self, terms: Sequence[str]) -> None:
        full = self.transcriber.encode(" " + ", ".join(terms).strip())
        cut = self.transcriber.encode(" " + ", ".join(terms[:HOTWORDS_CAP]).strip())
        assert len(cut) > HOTWORDS_PROMPT and cut[:HOTWORDS_PROMPT] == full[:HOTWORDS_PROMPT]


class Store:
    """The per-utterance results of one (set, N, system), one JSON line each, appended
    as they come. The first line holds the run's fingerprint; a file with another
    fingerprint (other code, options, model or pool) is started over."""

    def __init__(self, path: Path, fingerprint: str, fresh: bool) -> None:
        self.path = path
        self.meta: dict = {"fingerprint": fingerprint}
        self.rows: dict[str, Utt] = {}
        if not fresh:
            self.meta, self.rows = Store.read(path, fingerprint)
        self._rewrite()

    @staticmethod
    def read(path: Path, fingerprint: str) -> tuple[dict, dict[str, Utt]]:
        """The header and rows ``path`` holds for ``fingerprint`` (none for another one)."""
        meta: dict = {"fingerprint": fingerprint}
        rows: dict[str, Utt] = {}
        if not path.is_file():
            return meta, rows
        lines = path.read_text(encoding="utf-8").splitlines()
        head = json.loads(lines[0]) if lines else {}
        if head.get("fingerprint") != fingerprint:
            return meta, rows
        for line in lines[1:]:
            try:
                row = Utt.from_json(json.loads(line))
            except (json.JSONDecodeError, TypeError):
                break  # a line cut short by a crash
            rows[row.id] = row
        return head, rows

    def set_meta(self, **values) -> None:
        self.meta.update(values)
        self._rewrite()

    def add(self, utt: Utt) -> None:
        self.rows[utt.id] = utt
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(dataclasses.asdict(utt), ensure_ascii=False) + "\n")

    def _rewrite(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = [self.meta] + [dataclasses.asdict(u) for u in self.rows.values()]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
        os.replace(tmp, self.path)


@dataclass
class SetRun:
    """Runs the systems over one development set."""

    name: str
    items: list[EvalItem]
    systems: Systems
    work: Path
    fingerprint: str  # of the rows of systems that do not listen
    fresh: bool
    hotwords_cap: str  # auto, always or never
    listening_fingerprint: str = ""  # of the audio scorer's systems' rows ("": fingerprint)

    def stamp(self, system: str) -> str:
        """The fingerprint of ``system``'s rows: the audio scorer's weights count only for
        the systems that use it."""
        return (self.listening_fingerprint or self.fingerprint) if system in LISTENING else (
            self.fingerprint)  # fmt: skip

    def __post_init__(self) -> None:
        self.durations = {i.id: i.duration or probe(i.audio).duration or 0.0 for i in self.items}
        self.none_mean: float | None = None

    def once(self, system: str) -> Outcome:
        def terms(item: EvalItem) -> tuple[str, ...]:
            return tuple(sorted(rare_words(item))) if system == ORACLE else ()

        outcome = self._run(system, None, terms)
        if system == NONE:
            self.none_mean = outcome.seconds / len(self.items)
        return outcome

    def stored(self, system: str, size: int) -> bool:
        """Whether an earlier run of this code stored every utterance of (system, size)."""
        _, rows = Store.read(self._path(system, size), self.stamp(system))
        return all(i.id in rows for i in self.items)

    def _path(self, system: str, size: int | None) -> Path:
        slug = system.replace(" ", "-") + (f"-N{size}" if size is not None else "")
        return self.work / self.name / f"{slug}.jsonl"

    def sized(self, system: str, size: int, lists: dict[str, tuple[str, ...]]) -> Outcome:
        return self._run(system, size, lambda item: lists[item.id])

    def _run(
        self, system: str, size: int | None, terms: Callable[[EvalItem], Sequence[str]]
    ) -> Outcome:
        store = Store(self._path(system, size), self.stamp(system), self.fresh)
        if system == HOTWORDS and "hotwords_cap" not in store.meta:
            cap, why = self._hotwords_cap(size, terms(self.items[0]))
            store.set_meta(hotwords_cap=cap, hotwords_cap_reason=why)
        cap = store.meta.get("hotwords_cap")
        label = f"{self.name} {system}" + (f" N={size:,}" if size is not None else "")
        todo = [i for i in self.items if i.id not in store.rows]
        if system in PRUNING:
            self.systems.forget_retrievers()
        start = time.perf_counter()
        for k, item in enumerate(todo, start=1):
            store.add(self.systems.run(system, item, terms(item), self.durations[item.id], cap))
            if k % 20 == 0:
                print(
                    f"  {label}: {k}/{len(todo)} ({time.perf_counter() - start:.0f} s)", flush=True
                )
        rows = tuple(store.rows[i.id] for i in self.items)
        scores = sum(
            (
                score_text(i.text, r.pred_text, rare_words(i), normalize="whisper")
                for i, r in zip(self.items, rows)
            ),
            BiasingScores(),
        )
        seconds = sum(r.seconds for r in rows)
        why = store.meta.get("hotwords_cap_reason", "")
        outcome = Outcome(system, size, scores, seconds, rows, cap, why)
        print(
            f"{label}: WER {_pct(scores.wer)} U-WER {_pct(scores.u_wer)} B-WER "
            f"{_pct(scores.b_wer)}, {outcome.seconds:.1f} s ({len(todo)} run now, "
            f"{len(rows) - len(todo)} kept)",
            flush=True,
        )
        return outcome

    def _hotwords_cap(self, size: int | None, terms: Sequence[str]) -> tuple[int | None, str]:
        """Whether to cut the hotwords lists (without changing faster-whisper's prompt):
        when tokenising the whole string would make the run more than SLOW times none's
        time, or when asked to. Returns the cap (None: none) and why."""
        if self.hotwords_cap == "never" or len(terms) <= HOTWORDS_CAP:
            return None, ""
        why = "--hotwords-cap always"
        if self.hotwords_cap == "auto":
            stretches = statistics.fmean(math.ceil(d / 30) or 1 for d in self.durations.values())
            overhead = self.systems.hotwords_overhead(terms) * stretches  # per utterance
            base = self.none_mean or 0.0
            if size is None or size < 10_000 or not base or (base + overhead) / base <= SLOW:
                return None, ""
            why = (
                f"tokenising the whole list for every 30 s stretch ({overhead:.2f} s per "
                f"utterance) would have made the run about {(base + overhead) / base:.1f}x "
                "none's time"
            )
        self.systems.check_cap(terms)
        return HOTWORDS_CAP, why


# --- metrics -------------------------------------------------------------------------


def retrieval_stats(items: Sequence[EvalItem], rows: Sequence[Utt]) -> dict:
    """Recall, k and precision of the picked terms, retrieval time and index cost."""
    hits = truth = picked_total = stretches = second = per_stretch = 0
    ms: list[float] = []
    builds: list[float] = []
    loads: list[float] = []
    for item, row in zip(items, rows):
        rare = {w.casefold() for w in rare_words(item)}
        picked = {e[0].casefold() for p in row.picks for e in p["selected"]}
        hits += len(rare & picked)
        truth += len(rare)
        picked_total += len(picked)
        ms.append(1000.0 * sum(p["seconds"] for p in row.picks))
        stretches += len(row.picks)
        per_stretch += sum(len(p["selected"]) for p in row.picks)
        second += sum(1 for p in row.picks if p["second_pass"])
        if row.index_seconds is not None:
            (loads if row.index_cached else builds).append(row.index_seconds)
    return {
        "recall": hits / truth if truth else None,
        "true_rare_words": truth,
        "true_picked": hits,
        "picked_per_utterance": picked_total / len(rows) if rows else None,
        "picks_per_stretch": per_stretch / stretches if stretches else None,
        "precision": hits / picked_total if picked_total else None,
        "retrieval_ms_mean": statistics.fmean(ms) if ms else None,
        "retrieval_ms_max": max(ms) if ms else None,
        "stretches": stretches,
        "second_pass_share": second / stretches if stretches else None,
        "index_builds": len(builds),
        "index_build_s_mean": statistics.fmean(builds) if builds else None,
        "index_build_s_max": max(builds) if builds else None,
        "index_build_s_total": sum(builds),
        "index_loads": len(loads),
        "index_load_s_mean": statistics.fmean(loads) if loads else None,
    }


def _rate(c: ErrorCounts) -> float | None:
    rate = c.error_rate
    return None if rate == float("inf") else rate


def _pct(c: ErrorCounts) -> str:
    rate = _rate(c)
    return "n/a" if rate is None else f"{rate:.2f}"


def outcome_dict(o: Outcome, items: Sequence[EvalItem], none_s: float | None, run_id: str) -> dict:
    def counts(c: ErrorCounts) -> dict:
        return {"error_rate": _rate(c), **dataclasses.asdict(c)}

    out = {
        "wer": counts(o.scores.wer),
        "u_wer": counts(o.scores.u_wer),
        "b_wer": counts(o.scores.b_wer),
        "seconds": o.seconds,
        "ratio_to_none": o.seconds / none_s if none_s else None,
        "audio_seconds": sum(r.duration for r in o.rows),
        "mean_terms_offered": statistics.fmean(r.offered for r in o.rows) if o.rows else 0,
        "mean_terms_used": statistics.fmean(r.used for r in o.rows) if o.rows else 0,
        "rows_from_earlier_runs": sum(1 for r in o.rows if r.run != run_id),
    }
    if o.system in PRUNING:
        out["retrieval"] = retrieval_stats(items, o.rows)
    if o.system == HOTWORDS:
        out["hotwords_cap"] = o.hotwords_cap
        out["hotwords_cap_reason"] = o.hotwords_cap_reason
    return out


def targets(
    system: str,
    once: dict[str, Outcome],
    sized: dict[tuple[str, int], Outcome],
    sizes: Sequence[int],
    items: Sequence[EvalItem],
) -> list[Target]:
    """The issue's targets for one ctxasr retriever system on one set."""
    none, oracle = once.get(NONE), once.get(ORACLE)
    found: list[Target] = []
    for size, factor in ((1000, 1.25), (100_000, 1.5)):
        name = f"B-WER at N={size:,} <= {factor:g}x oracle prompt's"
        ours = sized.get((system, size))
        if ours is None or oracle is None:
            found.append(Target(name, None, "not measured"))
            continue
        b, limit = _rate(ours.scores.b_wer), _rate(oracle.scores.b_wer)
        if b is None or limit is None:
            found.append(Target(name, None, "no biased words"))
            continue
        found.append(Target(name, b <= limit * factor + 1e-9,
                            f"{b:.2f} (at most {limit * factor:.2f})"))  # fmt: skip
    name = "U-WER with context <= none's (every N)"
    ours_all = [(n, sized[(system, n)]) for n in sizes if (system, n) in sized]
    if none is None or not ours_all:
        found.append(Target(name, None, "not measured"))
    else:
        base = none.scores.u_wer.error_rate
        worse = [
            f"N={n:,}: {o.scores.u_wer.error_rate:.2f}"
            for n, o in ours_all
            if o.scores.u_wer.error_rate > base + 1e-9
        ]
        detail = f"none {base:.2f}; " + ("above at " + ", ".join(worse) if worse else "never above")
        found.append(Target(name, not worse, detail))
    name = "time at N=1,000 <= 1.5x none's (transcription + index builds)"
    ours = sized.get((system, 1000))
    if ours is None or none is None or not none.seconds:
        found.append(Target(name, None, "not measured"))
    else:
        build = sum(r.index_seconds or 0.0 for r in ours.rows)
        ratio = (ours.seconds + build) / none.seconds
        detail = f"{ratio:.2f}x ({ours.seconds / none.seconds:.2f}x without builds)"
        found.append(Target(name, ratio <= 1.5, detail))
    for size, least, most in ((1000, 0.92, 10.0), (100_000, 0.85, None)):
        name = f"recall of true rare words >= {least:.0%} at N={size:,}" + (
            f" with <= {most:g} picks per 30 s stretch" if most else ""
        )
        ours = sized.get((system, size))
        if ours is None:
            found.append(Target(name, None, "not measured"))
            continue
        st = retrieval_stats(items, ours.rows)
        recall, picks = st["recall"], st["picks_per_stretch"]
        if recall is None:
            found.append(Target(name, None, "no true rare words"))
            continue
        met = recall >= least - 1e-9 and (most is None or (picks or 0.0) <= most + 1e-9)
        found.append(Target(name, met, f"{recall:.1%}, {_f(picks, '.2f')} picks / stretch"))
    return found


def _f(x: float | None, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


# --- report --------------------------------------------------------------------------


def set_section(
    title: str,
    items: Sequence[EvalItem],
    once: dict[str, Outcome],
    sized: dict[tuple[str, int], Outcome],
    sizes: Sequence[int],
    systems: Sequence[str],
    goals: dict[str, list[Target]],
) -> str:
    none = once.get(NONE)
    none_s = none.seconds if none else None
    audio = sum(r.duration for r in next(iter(once.values())).rows) if once else 0.0
    biased = next(iter(once.values())).scores.b_wer.ref_words if once else 0

    def cells(o: Outcome | None) -> list[str]:
        if o is None:
            return ["", ""]
        s = o.scores
        ratio = f" ({o.seconds / none_s:.2f}x)" if none_s else ""
        return [f"{_pct(s.wer)} / {_pct(s.u_wer)} / {_pct(s.b_wer)}", f"{o.seconds:.1f}{ratio}"]

    head = ["system", "N", "WER / U-WER / B-WER", "s (x none)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for system, label in ((NONE, "none (no context)"), (ORACLE, "oracle prompt (true rare words)")):
        if system in once:
            lines.append(f"| {label} | — | " + " | ".join(cells(once[system])) + " |")
    for system in (s for s in PER_SIZE if s in systems):
        for n in sizes:
            if (system, n) in sized:
                row = " | ".join(cells(sized[(system, n)]))
                lines.append(f"| {system} | {n:,} | {row} |")
    text = (
        f"## {title}: {len(items)} utterances, {audio / 60:.1f} min, {biased} biased words\n\n"
        + "\n".join(lines)
        + "\n"
    )
    if any(s in systems for s in PRUNING):
        text += "\n" + retrieval_table(items, sized, sizes, systems)
    notes = hotwords_notes(sized, sizes, none_s) if HOTWORDS in systems else []
    if notes:
        text += "\n" + "\n".join(f"Note: {n}" for n in notes) + "\n"
    if goals:
        text += "\n" + targets_table(goals)
    return text


def targets_table(goals: dict[str, list[Target]]) -> str:
    names = [g.name for g in next(iter(goals.values()))]
    lines = ["| target | " + " | ".join(goals) + " |", "|---|" + "---|" * len(goals)]
    for k, name in enumerate(names):
        row = []
        for found in goals.values():
            g = found[k]
            verdict = "not measured" if g.met is None else "met" if g.met else "missed"
            row.append(f"**{verdict}**" + (f": {g.detail}" if g.met is not None else ""))
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "Targets:\n\n" + "\n".join(lines) + "\n"


def retrieval_table(
    items: Sequence[EvalItem],
    sized: dict[tuple[str, int], Outcome],
    sizes: Sequence[int],
    systems: Sequence[str],
) -> str:
    lines = [
        (
            "| system | N | recall | picks / stretch | picked / utt (k) | precision "
            "| retrieval ms / utt: mean | max | stretches with a 2nd pass "
            "| index build s / context: mean | max |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for system in (s for s in PRUNING if s in systems):
        for n in sizes:
            o = sized.get((system, n))
            if o is None:
                continue
            s = retrieval_stats(items, o.rows)
            build = _f(s["index_build_s_mean"], ".3f")
            if s["index_loads"]:  # indexes cached by an earlier run: their build was not timed
                build += (f" ({s['index_loads']} loaded from disk, "
                          f"{s['index_load_s_mean']:.3f} s each)")  # fmt: skip
            share = s["second_pass_share"]
            lines.append(
                f"| {system} | {n:,} "
                f"| {_f(s['recall'], '.1%')} ({s['true_picked']}/{s['true_rare_words']}) "
                f"| {_f(s['picks_per_stretch'], '.2f')} "
                f"| {_f(s['picked_per_utterance'], '.2f')} | {_f(s['precision'], '.1%')} "
                f"| {_f(s['retrieval_ms_mean'], '.1f')} | {_f(s['retrieval_ms_max'], '.1f')} "
                f"| {_f(share, '.0%')} of {s['stretches']} | {build} "
                f"| {_f(s['index_build_s_max'], '.3f')} |"
            )
    return "Retrieval:\n\n" + "\n".join(lines) + "\n"


def hotwords_notes(
    sized: dict[tuple[str, int], Outcome], sizes: Sequence[int], none_s: float | None
) -> list[str]:
    notes = []
    for n in sizes:
        o = sized.get((HOTWORDS, n))
        if o is None:
            continue
        if o.hotwords_cap:
            notes.append(
                f"fw hotwords at N={n:,}: {o.hotwords_cap_reason}, so each list was cut "
                f"to its first {o.hotwords_cap} terms. faster-whisper keeps only the first "
                f"{HOTWORDS_PROMPT} tokens of hotwords, which the cut list still fills with "
                "the same tokens: scores are those of the whole list, the time leaves out "
                "tokenising the rest."
            )
        if none_s and o.seconds > SLOW * none_s:
            notes.append(f"fw hotwords at N={n:,} took {o.seconds / none_s:.1f}x none's time.")
    return notes


def plot(
    sections: list[tuple[str, dict[str, Outcome], dict[tuple[str, int], Outcome]]],
    sizes: Sequence[int],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sections), figsize=(6 * len(sections), 4.2), squeeze=False)
    for ax, (title, once, sized) in zip(axes[0], sections):
        for system in PER_SIZE:
            points = [
                (n, _rate(sized[(system, n)].scores.b_wer)) for n in sizes if (system, n) in sized
            ]
            points = [(n, b) for n, b in points if b is not None]
            if points:
                ax.plot(*zip(*points), marker="o", label=system)
        for system, color in ((NONE, "grey"), (ORACLE, "black")):
            b = _rate(once[system].scores.b_wer) if system in once else None
            if b is not None:
                ax.axhline(b, linestyle="--", color=color, linewidth=1, label=system)
        ax.set_xscale("log")
        ax.set_xlabel("distractors per utterance (N)")
        ax.set_ylabel("B-WER (%)")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main ----------------------------------------------------------------------------


# Package code no stored row runs through: the shells (CLI, server, batch), speech synthesis
# and training. Leaving it out lets a change there keep hours of stored rows; anything a
# transcription, its biasing lists or its scoring calls (models, decoding, context, pipeline,
# data/biasing.py, eval) still counts.
NOT_IN_ROWS = frozenset(
    {
        "cli",
        "writers.py",
        "server",
        "batch",
        "train",
        "data/synth.py",
        "data/engines.py",
        "data/augment.py",
        "a2p/data.py",
        "a2p/train.py",
    }
)


def fingerprint(
    pool_path: Path,
    options: TranscribeOptions,
    model: str,
    salt: object = HOTWORDS_CAP,
    weights: bool = True,
) -> str:
    """What a stored result depends on: the package code rows run through (and, with
    ``weights``, the packaged audio scorer's weights), options, model, word pool, and
    ``salt`` (a caller's own setting that changes rows)."""
    h = hashlib.sha256()
    package = Path(ctxasr.__file__).resolve().parent
    for path in sorted(package.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".txt", ".json", ".safetensors"):
            relative = path.relative_to(package)
            if relative.parts[0] in NOT_IN_ROWS or relative.as_posix() in NOT_IN_ROWS:
                continue
            if not weights and "weights" in relative.parts:
                continue
            h.update(str(relative).encode() + b"\0" + path.read_bytes())
    h.update(repr(options).encode())
    h.update(f"{model}\0{SEED}\0{salt}\0".encode())
    h.update(pool_path.read_bytes())
    return h.hexdigest()[:16]


def index_cache(folder: Path, stamp: str, fresh: bool) -> Path:
    """The index cache folder, emptied on --fresh or when the code has changed since this
    script filled it: an index's file name hashes its terms, not how they were pronounced."""
    mark = folder / "fingerprint"
    if mark.is_file() and (fresh or mark.read_text().strip() != stamp):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mark.write_text(stamp + "\n")
    return folder


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


def git_state() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", str(HERE.parent / "src"))
    return commit + (" with uncommitted changes under src/" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=SYSTEMS,
        default=list(DEFAULT_SYSTEMS),
        help=f"none always runs: it is the time base of every ratio (default: all but {HOTWORDS})",
    )
    parser.add_argument(
        "--a2p-max",
        type=int,
        default=A2P_MAX,
        help=f"largest N for {A2P}, which scores every term of the list",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="only the first K utterances of each set"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument(
        "--work", type=Path, default=WORK, help="per-utterance results and the index cache"
    )
    parser.add_argument(
        "--stored-only",
        action="store_true",
        help="report only the (system, N) pairs an earlier run of this code stored in "
        "full; run nothing else (none and oracle still run if missing)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="ignore results of earlier runs (after a crash, rerun without it to go on)",
    )
    parser.add_argument(
        "--hotwords-cap",
        choices=("auto", "always", "never"),
        default="auto",
        help=f"cut fw hotwords lists to {HOTWORDS_CAP} terms: when the whole "
        f"string would make a run over {SLOW:g}x none's time (N >= 10,000), always, or never",
    )
    parser.add_argument(
        "--synth-hard", type=Path, default=HERE / "work" / "synth-hard" / "manifest.jsonl"
    )
    parser.add_argument("--real", type=Path, default=DATA / "real-speech")
    parser.add_argument("--real2", type=Path, default=DATA / "real-speech-2")
    parser.add_argument(
        "--pool", type=Path, default=DATA / "librispeech-biasing" / "words" / "all_rare_words.txt"
    )
    args = parser.parse_args()
    sizes = sorted(set(args.sizes))
    systems = [s for s in SYSTEMS if s in args.systems or s == NONE]
    loaders = {
        "synth-hard": lambda: synth_hard_items(args.synth_hard),
        "real": lambda: real_items(args.real),
        "real2": lambda: real2_items(args.real2),
    }
    sets = {key: loaders[key]() for key in args.sets}  # fail early on a missing set
    pool = WordPool(read_word_pool(args.pool))
    runner = Systems()
    skipped = ""
    if any(s in LISTENING for s in systems):
        error = runner.scorer_error()
        if error:
            skipped = (f"{', '.join(s for s in systems if s in LISTENING)} not run: the "
                       f"audio scorer did not load ({error})")  # fmt: skip
            print(skipped, file=sys.stderr, flush=True)
            systems = [s for s in systems if s not in LISTENING]
    t = runner.transcriber
    stamp = fingerprint(args.pool, t.options, t.resolved.path, weights=False)
    listening = fingerprint(args.pool, t.options, t.resolved.path)
    os.environ["CTXASR_CACHE"] = str(index_cache(args.work / "index-cache", stamp, args.fresh))
    started = time.perf_counter()
    warm = None
    sections, report = [], {}
    for key, items in sets.items():
        items = items[: args.limit] if args.limit else items
        if warm is None:
            warm = runner.warm_up(items[0], pool, systems)
        run = SetRun(key, items, runner, args.work, stamp, args.fresh, args.hotwords_cap, listening)
        once = {s: run.once(s) for s in (NONE, ORACLE) if s in systems}
        sized: dict[tuple[str, int], Outcome] = {}
        for n in sizes:
            wanted = [s for s in PER_SIZE if s in systems and (s != A2P or n <= args.a2p_max)]
            if args.stored_only:
                wanted = [s for s in wanted if run.stored(s, n)]
            if wanted:
                lists = {i.id: i.context for i in with_lists(items, pool, n)}
                for system in wanted:
                    sized[(system, n)] = run.sized(system, n, lists)
                del lists
        goals = {s: targets(s, once, sized, sizes, items) for s in PRUNING if s in systems}
        sections.append((SETS[key], once, sized))
        report[key] = _set_json(SETS[key], items, once, sized, goals, runner.run_id)
        report[key]["markdown"] = set_section(SETS[key], items, once, sized, sizes, systems, goals)

    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "context_scaling.png"
    plot(sections, sizes, png)
    t = runner.transcriber
    opts = t.options
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "python": platform.python_version(),
        "model": f"{t.resolved.name} ({t.resolved.path})",
        "code": git_state(),
        "command": shlex.join(["python", *sys.argv]),
        "fingerprint": stamp,
        "seed": SEED,
        "sizes": sizes,
        "systems": systems,
        "not_run": skipped,
        "a2p_max": args.a2p_max,
        "limit": args.limit,
        "beam_size": opts.beam_size,
        "retrieval_options": dataclasses.asdict(opts.retrieval),
        "warm_up_seconds": warm,
        "wall_seconds": time.perf_counter() - started,
    }
    mentions_earlier = any(
        v.get("rows_from_earlier_runs") for s in report.values() for v in _all_outcomes(s)
    )
    text = (
        "# Context scaling: tiny.en from 100 to 100,000 context terms\n\n"
        f"Date: {meta['date']}. Machine: {meta['machine']}, Python {meta['python']}. Model: "
        f"{meta['model']}, int8, CPU, beam {opts.beam_size}. Code: {meta['code']}. "
        f"Command: `{meta['command']}` ({meta['wall_seconds'] / 60:.1f} min"
        + (", some rows kept from an earlier run with the same code" if mentions_earlier else "")
        + ").\n\n"
        "Each utterance's list: its true rare words plus N distractors from "
        f"all_rare_words.txt (seed {SEED}). Scores Whisper-normalised, in percent, as "
        "WER / U-WER / B-WER; s = summed wall seconds of the transcription calls, (x none) "
        "their ratio to none's on the same set. none and oracle prompt are ctxasr runs (no "
        "context; only the true rare words, whole list in the prompt). whole-list prompt: "
        "ctxasr with the whole list in the prompt as far as the 223-token budget goes "
        "(lists are sorted, so the alphabetically first terms). ctxasr phonetic / hybrid / "
        "a2p: speech-aware pruning with the phonetic retriever, the phonetic shortlist "
        "re-ranked by the audio scorer, or the audio scorer alone"
        + (f" (N <= {args.a2p_max:,})" if A2P in systems else "")
        + "; + verify: with decoder verification of the second pass's changes; their s "
        "leaves out the index (and audio term table) build, shown apart (first call of a "
        "fresh context). fw hotwords: plain faster-whisper with the whole list as hotwords "
        "(it keeps the first 223 tokens). Retrieval: recall = share of the true rare words "
        "among the terms picked for the utterance (any stretch, case-insensitive); picks / "
        "stretch = terms picked per 30 s stretch (those the first pass spelled included); "
        "k = distinct picked terms per utterance; precision = share of picked terms that "
        "are true rare words; retrieval ms = time of the retriever over the utterance's "
        "stretches."
        + (f"\n\nNote: {skipped}." if skipped else "")
        + "\n\n"
        + "\n".join(s["markdown"] for s in report.values())
        + f"\n![B-WER against N]({png.name})\n"
    )
    (args.out / "context_scaling.md").write_text(text)
    payload = {
        "meta": meta,
        "sets": {
            k: {kk: vv for kk, vv in v.items() if kk != "markdown"} for k, v in report.items()
        },
    }
    (args.out / "context_scaling.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(text)


def _set_json(
    title: str,
    items: Sequence[EvalItem],
    once: dict[str, Outcome],
    sized: dict[tuple[str, int], Outcome],
    goals: dict[str, list[Target]],
    run_id: str,
) -> dict:
    none_s = once[NONE].seconds if NONE in once else None
    any_outcome = next(iter(once.values()))
    return {
        "title": title,
        "utterances": len(items),
        "audio_seconds": sum(r.duration for r in any_outcome.rows),
        "biased_words": any_outcome.scores.b_wer.ref_words,
        "once": {s: outcome_dict(o, items, none_s, run_id) for s, o in once.items()},
        "by_size": {
            str(n): {
                s: outcome_dict(o, items, none_s, run_id) for (s, m), o in sized.items() if m == n
            }
            for n in sorted({m for _, m in sized})
        },
        "targets": {s: [dataclasses.asdict(g) for g in found] for s, found in goals.items()},
    }


def _all_outcomes(section: dict) -> list[dict]:
    return [
        *section["once"].values(),
        *(v for d in section["by_size"].values() for v in d.values()),
    ]


if __name__ == "__main__":
    main()
