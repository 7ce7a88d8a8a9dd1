"""Retrieval that listens: a trained audio scorer re-ranks what the phonetic index heard.

The phonetic retriever (``context.retrieval``) matches terms against the *text* of the
first pass, so a term the first pass mangled past its phone costs ("Unok" for eunuch) is
lost, and a term merely close in sound to some words is picked. A trained scorer in the
spirit of Attention2Probability listens to the *audio* instead: each term's phones attend
over the speech encoder's frames of the stretch and give the probability that the term
is spoken there (``ctxasr.a2p``). Scoring all of 100,000 terms that way costs seconds,
so the two are chained:

1. the phonetic index shortlists by sound with a low floor (high recall: a few hundred
   terms out of any number);
2. the audio scorer gives each shortlisted term its probability;
3. per stretch, the pick is recall-first: every term the phonetic retriever picks on its
   own stays unless the audio all but rules it out (under ``veto``), and the shortlisted
   terms whose blend of both scores clears ``threshold`` join them, at most
   ``max_picks`` in all, best blend first.

Precision is not this stage's job: the second pass's changes are checked by the decoder
itself before they reach the text (``twopass``, decoder verification).

``AudioRetriever`` is the scorer alone over the whole list (no phonetic shortlist),
affordable for small contexts and a baseline for the benchmark.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ctxasr.context.retrieval import Evidence, PhoneticRetriever, Retrieval
from ctxasr.results import TermEvidence

Pron = tuple[tuple[int, ...], ...]  # words of phone ids (``context.phonetic``)


class AudioScorer(Protocol):
    """A model that scores terms against the speech encoder's frames of a stretch."""

    encoder_dim: int  # D of the frames it takes

    def term_table(self, prons: Sequence[Pron]) -> Any:
        """The model's input form of the terms' pronunciations (built once per context)."""
        ...

    def listen(self, frames: np.ndarray) -> Any:
        """The per-stretch part of the model: frames (T, D) float32, padding included."""
        ...

    def score(self, memory: Any, table: Any, ids: np.ndarray) -> np.ndarray:
        """(K,) probabilities in [0, 1] that the terms ``ids`` of ``table`` are spoken."""
        ...


@dataclass(frozen=True)
class HybridOptions:
    """Shortlist and pick of the hybrid retriever (tuned on the development sets)."""

    floor: float = 0.55  # phonetic score a term needs to be shortlisted
    shortlist: int = 300  # terms scored on the audio per stretch, best-sounding first
    # A term's score is a blend of its audio probability and its phonetic score; a term
    # the phonetic pick left out joins from ``threshold`` up.
    # (Threshold and veto from bench/retrieval_sweep.py --hybrid on synth-hard and
    # real-speech-2: the setting that cut most picks for the least recall.)
    audio_weight: float = 0.6
    threshold: float = 0.7
    # A term the phonetic retriever picked is dropped only when its audio probability is
    # under this: the scorer rarely rules a word out wrongly, far more often it misses one.
    veto: float = 0.05
    max_picks: int = 15  # terms the first pass did not spell, per 30 s stretch
    near: float = 0.15  # terms this far under the threshold are reported as rejected
    report_rejected: int = 5

    def __post_init__(self) -> None:
        if not 0 <= self.floor <= 1:
            raise ValueError(f"floor must be in [0, 1], got {self.floor}")
        if not 0 <= self.veto <= 1:
            raise ValueError(f"veto must be in [0, 1], got {self.veto}")
        if not 0 <= self.audio_weight <= 1:
            raise ValueError(f"audio_weight must be in [0, 1], got {self.audio_weight}")
        if self.shortlist < 1 or self.max_picks < 1:
            raise ValueError("shortlist and max_picks must be at least 1")


class _Listening:
    """What the audio retrievers share: the term table, and evidence without frames."""

    listens = True  # the transcriber hands these retrievers the encoder frames

    def __init__(self, phonetic: PhoneticRetriever, scorer: AudioScorer, options) -> None:
        self.phonetic = phonetic
        self.scorer = scorer
        self.options = options
        self.terms = phonetic.terms
        self._table: Any = None

    @property
    def table(self) -> Any:
        if self._table is None:  # pronunciations of every term, once per context
            self._table = self.scorer.term_table(self.phonetic.pronunciations())
        return self._table

    def _frames(self, evidence: Evidence) -> np.ndarray | None:
        frames = evidence.frames
        if frames is None:
            return None
        if frames.ndim != 2 or frames.shape[1] != self.scorer.encoder_dim:
            raise ValueError(
                f"the audio scorer takes encoder frames of width {self.scorer.encoder_dim}, "
                f"got shape {frames.shape}: it was trained for another speech encoder"
            )
        return frames


class HybridRetriever(_Listening):
    """Phonetic shortlist, audio re-ranking, recall-first pick (see the module doc).

    Without frames (a backend that does not expose its encoder output) it falls back to
    the phonetic retriever's own pick.
    """

    def __init__(
        self,
        phonetic: PhoneticRetriever,
        scorer: AudioScorer,
        options: HybridOptions = HybridOptions(),
    ) -> None:
        super().__init__(phonetic, scorer, options)

    def ranked(self, evidence: Evidence) -> tuple[list[TermEvidence], list[TermEvidence]]:
        """The terms the first pass spelled, and the shortlist ranked by blended score."""
        found = self.phonetic.candidates(evidence, self.options.floor, self.options.shortlist)
        return self._rank(evidence, found)

    def _rank(
        self, evidence: Evidence, found: list[TermEvidence]
    ) -> tuple[list[TermEvidence], list[TermEvidence]]:
        opts = self.options
        spelled = [e for e in found if e.in_text]
        heard = [e for e in found if not e.in_text]
        frames = self._frames(evidence)
        if not heard or frames is None:
            return spelled, heard
        ids = np.fromiter((self.phonetic._ids[e.term] for e in heard), dtype=np.int64,
                          count=len(heard))  # fmt: skip
        audio = self.scorer.score(self.scorer.listen(frames), self.table, ids)
        out = []
        for a, e in zip(audio.tolist(), heard):
            blended = _blend(a, e.phonetic or 0.0, opts.audio_weight)
            out.append(TermEvidence(e.term, round(blended, 4), e.span, False,
                                    phonetic=e.phonetic, audio=round(a, 4)))  # fmt: skip
        out.sort(key=lambda e: -e.score)
        return spelled, out

    def retrieve(self, evidence: Evidence) -> Retrieval:
        started = time.perf_counter()
        if evidence.frames is None:
            return self.phonetic.retrieve(evidence)
        opts = self.options
        own, found = self.phonetic.retrieve_with_candidates(evidence, opts.floor, opts.shortlist)
        spelled, heard = self._rank(evidence, found)
        picked = {e.term for e in own.selected if not e.in_text}
        kept, joined, rejected = [], [], []
        for e in heard:  # ranked by blend, best first
            if e.term in picked:
                (kept if e.audio is None or e.audio >= opts.veto else rejected).append(e)
            elif e.score >= opts.threshold:
                joined.append(e)
            elif e.score >= opts.threshold - opts.near:
                rejected.append(e)
        # A phonetic pick the shortlist missed (it keeps only the best-sounding terms)
        # stays, unheard by the scorer.
        scored = {e.term for e in heard}
        kept += [e for e in own.selected if not e.in_text and e.term not in scored]
        chosen = sorted(kept + joined, key=lambda e: -e.score)[: opts.max_picks]
        return Retrieval(tuple(spelled) + tuple(chosen), tuple(rejected[: opts.report_rejected]),
                         time.perf_counter() - started)  # fmt: skip


@dataclass(frozen=True)
class AudioOptions:
    """The audio scorer alone, over the whole list."""

    threshold: float = 0.5  # audio probability of a picked term
    max_picks: int = 15
    chunk: int = 4096  # terms scored at once (bounds the memory of one call)
    report_rejected: int = 5
    near: float = 0.15


class AudioRetriever(_Listening):
    """Every term scored on the audio: no shortlist, so it also finds terms the first
    pass's words do not resemble at all, at a cost that grows with the context (about
    a second per 30 s stretch per 20,000 terms on one core)."""

    def __init__(
        self,
        phonetic: PhoneticRetriever,
        scorer: AudioScorer,
        options: AudioOptions = AudioOptions(),
    ) -> None:
        super().__init__(phonetic, scorer, options)

    def ranked(
        self, evidence: Evidence, limit: int = 100
    ) -> tuple[list[TermEvidence], list[TermEvidence]]:
        """The terms the first pass spelled, and the ``limit`` best others by audio."""
        opts = self.options
        spelled = self.phonetic.spelled(evidence)
        frames = self._frames(evidence)
        if frames is None:
            return spelled, []
        skip = {e.term for e in spelled}
        memory = self.scorer.listen(frames)
        n = len(self.terms)
        probs = (
            np.concatenate(
                [
                    self.scorer.score(memory, self.table, np.arange(i, min(i + opts.chunk, n)))
                    for i in range(0, n, opts.chunk)
                ]
            )
            if n
            else np.zeros(0)
        )
        heard = []
        for i in np.argsort(-probs, kind="stable").tolist():
            if len(heard) >= limit:
                break
            if self.terms[i].text not in skip:
                p = round(float(probs[i]), 4)
                heard.append(TermEvidence(self.terms[i].text, p, "", False, audio=p))
        return spelled, heard

    def retrieve(self, evidence: Evidence) -> Retrieval:
        started = time.perf_counter()
        if evidence.frames is None:
            return self.phonetic.retrieve(evidence)
        opts = self.options
        spelled, heard = self.ranked(evidence, opts.max_picks + opts.report_rejected)
        return _pick(spelled, heard, opts, started)


def _pick(
    spelled: list[TermEvidence],
    heard: list[TermEvidence],
    opts: HybridOptions | AudioOptions,
    started: float,
) -> Retrieval:
    """Spelled terms, then ranked ``heard`` terms from the threshold up (recall first)."""
    selected, rejected = list(spelled), []
    for e in heard:
        if e.score >= opts.threshold and len(selected) - len(spelled) < opts.max_picks:
            selected.append(e)
        elif e.score >= opts.threshold - opts.near:
            if len(rejected) < opts.report_rejected:
                rejected.append(e)
        else:
            break  # ranked: nothing further is even near
    return Retrieval(tuple(selected), tuple(rejected), time.perf_counter() - started)


def _blend(audio: float, phonetic: float, weight: float) -> float:
    """A score in [0, 1] from both kinds of evidence (a weighted mean of log-odds)."""

    def logit(p: float) -> float:
        p = min(max(p, 1e-4), 1 - 1e-4)
        return math.log(p / (1 - p))

    # The phonetic score's own scale: 0.8 (the phonetic retriever's threshold) is even odds.
    z = weight * logit(audio) + (1 - weight) * 8.0 * (phonetic - 0.8)
    return 1.0 / (1.0 + math.exp(-z))
