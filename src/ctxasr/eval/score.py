"""WER, U-WER and B-WER: the LibriSpeech contextual-biasing scorer.

The benchmark of Le et al., "Contextualized Streaming End-to-End Speech Recognition
with Trie-Based Deep Biasing and Shallow Fusion" (Interspeech 2021), splits the word
errors of a test set by whether the reference word is one of the utterance's *rare
words* (the words a biasing list is meant to help with):

* **WER** counts every error.
* **B-WER** (biased) counts substitutions and deletions of reference words in the
  utterance's rare-word list, and insertions of words in that list.
* **U-WER** (unbiased) counts all the other errors.

Each is ``100 * (subs + ins + dels) / ref_words`` over its own reference words, so
the numbers add up: ``wer.ref_words == u_wer.ref_words + b_wer.ref_words`` and the
same for every error kind.

The scores must be comparable with the published ones, so this module reproduces the
benchmark's own scorer (``score.py`` in facebookresearch/fbai-speech,
``is21_deep_bias``) exactly, including the choice among equally cheap alignments:

* costs: match 0, substitution 4, insertion 3, deletion 3 (:data:`SUBSTITUTION_COST`,
  ...). A substitution is cheaper than a deletion plus an insertion (6), so a wrong
  word is a substitution, never a delete-insert pair.
* ties: each cell of the dynamic-programming table keeps the diagonal step (match or
  substitution) unless the insertion step is strictly cheaper, and then takes the
  deletion step only if it is strictly cheaper than both. The first row is all
  insertions, the first column all deletions. The alignment is read back from the
  last cell. Other orders give the same totals but move errors between U-WER and
  B-WER (and between subs/ins/dels), and no longer match the published files.
* words are the reference and hypothesis texts split on whitespace, compared as
  strings; nothing else is normalised in the default mode.

Two choices differ from the original script, neither of which changes a published
number: an utterance with no hypothesis scores as an empty hypothesis (the original
stops with an error, or skips the utterance with ``--lenient``; both are available
through ``missing=``), and an empty reference with an empty hypothesis is simply
scored as no words and no errors (the original raises).

``normalize="whisper"`` scores after Whisper's English text normaliser (the
``whisper-normalizer`` package's ``EnglishTextNormalizer``, a copy of
``whisper/normalizers/english.py``), applied to the reference, the hypothesis and the
rare words alike. That normaliser can turn one word into several tokens
(``quilter's`` -> ``quilter is``, ``weren't`` -> ``were not``) or change its spelling
(``honourable`` -> ``honorable``), so "is this token a rare word" no longer has a
string answer. The rule used here:

* a normalised *reference* token is biased when it comes from a rare word: each
  reference word is normalised on its own, its tokens are biased when it normalises
  exactly like one of the rare words (so ``Colour`` in the list marks ``colour``), and those
  flags are carried onto the tokens of the whole normalised reference by aligning
  the two token sequences (they differ only where context matters, e.g. spelled-out
  numbers ``twenty one`` -> ``21``). So both ``quilter`` and ``is`` from a rare
  ``quilter's`` are biased, but another ``is`` in the same sentence is not;
* an *inserted* token counts against B-WER when it is one of the tokens of the
  normalised rare words (the set rule of the default mode, applied to tokens).

Normalising typically adds a few percent to B-WER's reference words (test-clean:
5,761 words -> about 5,950 tokens), mostly from the ``'s`` -> ``is`` split.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from ctxasr.errors import CtxasrError
from ctxasr.eval.tsv import (  # noqa: F401 - the files' reader lives in eval.tsv; re-exported
    Reference,
    read_biasing_lists,
    read_hyps,
    read_refs,
)

Op = Literal["match", "sub", "ins", "del"]
Normalization = Literal["none", "whisper"]
MissingHypothesis = Literal["empty", "error", "skip"]

NORMALIZATIONS: tuple[Normalization, ...] = ("none", "whisper")

SUBSTITUTION_COST = 4
INSERTION_COST = 3
DELETION_COST = 3

# Backtrace codes, one byte per cell.
_DIAG, _INS, _DEL = 0, 1, 2


# --- alignment ---------------------------------------------------------------------


class AlignedPair(NamedTuple):
    """One step of an alignment: ``ref`` is None for an insertion, ``hyp`` for a deletion."""

    op: Op
    ref: str | None
    hyp: str | None


def _backtrace(ref: Sequence[str], hyp: Sequence[str]) -> list[bytearray]:
    """The table of best steps into each cell, with the benchmark's tie-breaking.

    Row ``i`` / column ``j`` stand for the first ``i`` reference and ``j`` hypothesis
    words. Only two rows of scores are kept; scores are whole numbers, so ints give
    the same comparisons as the original's floats.
    """
    m = len(hyp)
    prev = [INSERTION_COST * j for j in range(m + 1)]
    rows = [bytearray([_INS]) * (m + 1)]
    for i, r in enumerate(ref, start=1):
        cur = [DELETION_COST * i] * (m + 1)
        steps = bytearray(m + 1)  # zero-filled: _DIAG
        steps[0] = _DEL
        left = cur[0]
        for j in range(1, m + 1):
            best = prev[j - 1] if r == hyp[j - 1] else prev[j - 1] + SUBSTITUTION_COST
            ins = left + INSERTION_COST
            if ins < best:
                best = ins
                steps[j] = _INS
            dele = prev[j] + DELETION_COST
            if dele < best:
                best = dele
                steps[j] = _DEL
            cur[j] = left = best
        rows.append(steps)
        prev = cur
    return rows


def align(ref: Sequence[str], hyp: Sequence[str]) -> list[AlignedPair]:
    """The benchmark's minimum-cost alignment of two word sequences, in order.

    >>> [p.op for p in align(["a", "b", "c"], ["a", "x", "c", "d"])]
    ['match', 'sub', 'match', 'ins']
    """
    rows = _backtrace(ref, hyp)
    i, j = len(ref), len(hyp)
    pairs: list[AlignedPair] = []
    while i or j:
        step = rows[i][j]
        if step == _DIAG:
            i -= 1
            j -= 1
            r, h = ref[i], hyp[j]
            pairs.append(AlignedPair("match" if r == h else "sub", r, h))
        elif step == _INS:
            j -= 1
            pairs.append(AlignedPair("ins", None, hyp[j]))
        else:
            i -= 1
            pairs.append(AlignedPair("del", ref[i], None))
    pairs.reverse()
    return pairs


# --- counts ------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorCounts:
    """Reference words and errors of one kind of word; add them to pool utterances."""

    ref_words: int = 0
    subs: int = 0
    ins: int = 0
    dels: int = 0

    @property
    def errors(self) -> int:
        return self.subs + self.ins + self.dels

    @property
    def error_rate(self) -> float:
        """Errors per 100 reference words; 0.0 for no words and no errors, inf for
        errors against no reference words (insertions into an empty reference)."""
        if self.ref_words == 0:
            return math.inf if self.errors else 0.0
        # Same expression, same order as the original, so the floats print the same.
        return 100.0 * self.errors / self.ref_words

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        if not isinstance(other, ErrorCounts):
            return NotImplemented
        return ErrorCounts(
            self.ref_words + other.ref_words,
            self.subs + other.subs,
            self.ins + other.ins,
            self.dels + other.dels,
        )

    def __str__(self) -> str:
        return (
            f"error_rate={self.error_rate}, ref_words={self.ref_words}, "
            f"subs={self.subs}, ins={self.ins}, dels={self.dels}"
        )


@dataclass(frozen=True)
class BiasingScores:
    """WER over all words, U-WER over the unbiased and B-WER over the biased ones."""

    wer: ErrorCounts = ErrorCounts()
    u_wer: ErrorCounts = ErrorCounts()
    b_wer: ErrorCounts = ErrorCounts()

    def __add__(self, other: BiasingScores) -> BiasingScores:
        if not isinstance(other, BiasingScores):
            return NotImplemented
        return BiasingScores(
            self.wer + other.wer, self.u_wer + other.u_wer, self.b_wer + other.b_wer
        )

    def percents(self) -> dict[str, float | None]:
        """``wer``, ``u_wer`` and ``b_wer`` in percent, rounded for a report; None where a
        rate is infinite (errors against no reference words)."""
        rates = {"wer": self.wer, "u_wer": self.u_wer, "b_wer": self.b_wer}
        return {k: round(v.error_rate, 2) if math.isfinite(v.error_rate) else None
                for k, v in rates.items()}  # fmt: skip


def score_utterance(
    ref_words: Sequence[str],
    hyp_words: Sequence[str],
    rare: Collection[str],
    *,
    ref_biased: Sequence[bool] | None = None,
) -> BiasingScores:
    """Counts of one utterance, to be summed over a corpus with ``+``.

    A reference word is biased when it is in ``rare``, unless ``ref_biased`` gives a
    flag per reference word instead (the normalised mode does, because a rare word
    may have become several tokens); an inserted word is biased when it is in
    ``rare``.
    """
    if ref_biased is None:
        ref_biased = [w in rare for w in ref_words]
    elif len(ref_biased) != len(ref_words):
        raise ValueError(
            f"ref_biased has {len(ref_biased)} flags for {len(ref_words)} reference words"
        )
    # [ref_words, subs, ins, dels] for unbiased (0) and biased (1) words.
    counts = [[0, 0, 0, 0], [0, 0, 0, 0]]
    i = 0  # index of the next reference word
    for op, _, hyp in align(ref_words, hyp_words):
        if op == "ins":
            counts[hyp in rare][2] += 1
            continue
        c = counts[ref_biased[i]]
        i += 1
        c[0] += 1
        if op == "sub":
            c[1] += 1
        elif op == "del":
            c[3] += 1
    u_wer, b_wer = ErrorCounts(*counts[0]), ErrorCounts(*counts[1])
    return BiasingScores(u_wer + b_wer, u_wer, b_wer)


# --- normalisation -----------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _whisper_normalizer() -> Callable[[str], str]:
    try:
        from whisper_normalizer.english import EnglishTextNormalizer  # type: ignore[import-untyped]
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise CtxasrError(
            "normalize=whisper",
            "needs the whisper-normalizer package (pip install whisper-normalizer)",
        ) from err
    normalizer: Callable[[str], str] = EnglishTextNormalizer()
    return normalizer


@functools.lru_cache(maxsize=65536)
def _whisper_tokens(text: str) -> tuple[str, ...]:
    return tuple(_whisper_normalizer()(text).split())


def _check_normalization(normalize: str) -> None:
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")


def tokenize(text: str, normalize: Normalization = "none") -> list[str]:
    """The words a text is scored as: split on whitespace, after normalising if asked."""
    _check_normalization(normalize)
    if normalize == "none":
        return text.split()
    return list(_whisper_tokens(text))


def _prepare_reference(
    text: str, rare_words: Collection[str], normalize: Normalization
) -> tuple[list[str], list[bool], frozenset[str]]:
    """Reference tokens, a biased flag per token, and the rare tokens (see module doc)."""
    if normalize == "none":
        words = text.split()
        rare = frozenset(rare_words)
        return words, [w in rare for w in words], rare
    _check_normalization(normalize)
    rare_forms = {_whisper_tokens(w) for w in rare_words} - {()}
    rare_tokens = frozenset(t for form in rare_forms for t in form)
    tokens = list(_whisper_tokens(text))
    # Normalise word by word to know which tokens each rare word became. A word is rare
    # when it normalises like a rare word ("Colour" in the list marks "colour").
    by_word = [(t, form in rare_forms) for form in map(_whisper_tokens, text.split()) for t in form]
    if [t for t, _ in by_word] == tokens:
        return tokens, [b for _, b in by_word], rare_tokens
    # Context changed the whole-text normalisation (numbers, "'s been" -> "has been"):
    # carry the flags across an alignment of the two; a token with no source is unbiased.
    flags: list[bool] = []
    k = 0
    for op, _, _ in align([t for t, _ in by_word], tokens):
        if op == "del":
            k += 1
        elif op == "ins":
            flags.append(False)
        else:
            flags.append(by_word[k][1])
            k += 1
    return tokens, flags, rare_tokens


def score_text(
    ref_text: str,
    hyp_text: str,
    rare_words: Collection[str],
    *,
    normalize: Normalization = "none",
) -> BiasingScores:
    """Score one utterance given as text, optionally normalised (see module doc)."""
    ref, biased, rare = _prepare_reference(ref_text, rare_words, normalize)
    return score_utterance(ref, tokenize(hyp_text, normalize), rare, ref_biased=biased)


def score_corpus(
    refs: Mapping[str, tuple[str, Collection[str]]],
    hyps: Mapping[str, str],
    *,
    normalize: Normalization = "none",
    missing: MissingHypothesis = "empty",
) -> BiasingScores:
    """Pool the counts of every reference utterance.

    ``refs`` maps an utterance id to ``(text, rare_words)`` (e.g. a :class:`Reference`),
    ``hyps`` maps it to the hypothesis text; hypotheses without a reference are ignored.
    A reference without a hypothesis scores as an empty hypothesis (``missing="empty"``,
    every word deleted), raises :class:`CtxasrError` (``"error"``, the original
    script's default) or is left out (``"skip"``, its ``--lenient``).
    """
    _check_normalization(normalize)
    if missing not in ("empty", "error", "skip"):
        raise ValueError(f"missing must be empty, error or skip, got {missing!r}")
    if missing == "error":
        absent = [uid for uid in refs if uid not in hyps]
        if absent:
            raise CtxasrError(
                "hypotheses",
                f"{len(absent)} of {len(refs)} reference utterances have no hypothesis "
                f"(first: {absent[0]})",
            )
    total = BiasingScores()
    for uid, (text, rare_words) in refs.items():
        hyp = hyps.get(uid)
        if hyp is None and missing == "skip":
            continue
        total += score_text(text, hyp or "", rare_words, normalize=normalize)
    return total


def format_scores(scores: BiasingScores, *, normalize: Normalization = "none") -> str:
    """The benchmark's report: three lines, each ending in a newline.

    In the default mode the text is byte for byte what the original script prints::

        WER: error_rate=3.65..., ref_words=52576, subs=1501, ins=195, dels=225
        U-WER: error_rate=2.37..., ref_words=46815, subs=725, ins=195, dels=190
        B-WER: error_rate=14.07..., ref_words=5761, subs=776, ins=0, dels=35

    Normalised scores are not comparable with published ones, so they carry a fourth
    line, ``normalization: whisper``; the first three keep their place and format.
    """
    _check_normalization(normalize)
    text = f"WER: {scores.wer}\nU-WER: {scores.u_wer}\nB-WER: {scores.b_wer}\n"
    if normalize != "none":
        text += f"normalization: {normalize}\n"
    return text
