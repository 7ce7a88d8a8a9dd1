"""Snap near-misses of context terms in decoded text to the terms' own spelling.

A prompt makes Whisper *likely* to use a term's spelling, not certain: a small model
still writes "there under" for "thereunder" or "Birkett" for "Birket". When the decoded
words spell the same letters as a listed term (spaces, hyphens and case aside), or miss
a rare name by an edit or two, the user's spelling is the better answer. This is
deliberately conservative: an ordinary English word is never replaced by a near
neighbour, only a word that is itself rare (likely a garbled name), and only by a term
the decoder was actually offered.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

from ctxasr.context.words import letters as _compact
from ctxasr.context.words import zipf as _zipf

MAX_SPAN = 4  # decoded words that may join into one term ("p y torch" -> "PyTorch")
COMMON_ZIPF = 4.0  # a word this frequent is never re-cased: "us" is not "US"
RARE_ZIPF = 3.0  # only words rarer than this may be respelled to a near neighbour
LONG_TERM = 8  # letters: a term this long may absorb several decoded words one edit off
_EDGE = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)
_POSSESSIVE = ("'s", "’s")


@dataclass(frozen=True)
class Respelling:
    """Words ``[start, end)`` of the input became ``text`` (one word)."""

    start: int
    end: int
    text: str


class TermSpeller:
    """Finds respellings of decoded words into a fixed set of terms."""

    def __init__(self, terms: Sequence[str]) -> None:
        self._exact: dict[str, str] = {}
        self._single: list[str] = []
        for term in terms:
            key = _compact(term)
            if key:
                self._exact.setdefault(key, term)
            if " " not in term and len(key) >= 5:
                self._single.append(term)

    def respell(self, words: Sequence[str]) -> list[Respelling]:
        """Respellings for a sequence of decoded words (each may carry punctuation)."""
        return [
            found
            for found in self.find(words)
            if found.text.strip() != " ".join(w.strip() for w in words[found.start : found.end])
        ]

    def find(self, words: Sequence[str]) -> list[Respelling]:
        """Every stretch of ``words`` that is, or would be respelled into, a term."""
        out: list[Respelling] = []
        i = 0
        while i < len(words):
            found = self._match_at(words, i)
            if found is None:
                i += 1
                continue
            out.append(found)
            i = found.end
        return out

    def _match_at(self, words: Sequence[str], i: int) -> Respelling | None:
        for n in range(min(MAX_SPAN, len(words) - i), 0, -1):
            lead, whole, trail = _EDGE.match(" ".join(w.strip() for w in words[i : i + n])).groups()
            for core, suffix in ((whole, ""), _split_possessive(whole)):
                term = self._exact.get(_compact(core))
                if term is not None and (n > 1 or self._may_recase(core, term)):
                    return Respelling(i, i + n, lead + term + suffix + trail)
            core, suffix = _split_possessive(whole)
            term = self._near(core) if n == 1 else self._near_split(core)
            if term is not None:
                return Respelling(i, i + n, lead + term + suffix + trail)
        return None

    @staticmethod
    def _may_recase(core: str, term: str) -> bool:
        if core == term:
            return True  # already right: reported as a match, not changed
        return _zipf(core.casefold()) < COMMON_ZIPF

    def _near(self, core: str) -> str | None:
        word = core.casefold()
        if len(word) < 5 or not word.isalpha() or _zipf(word) >= RARE_ZIPF:
            return None
        allowed = 1 if len(word) < 8 else 2
        best, best_distance = None, allowed + 1
        for term in self._single:
            folded = term.casefold()
            if abs(len(folded) - len(word)) > allowed:
                continue
            if len(folded) >= 8 and (word.endswith(folded) or word.startswith(folded)):
                return term  # a short word glued on: "were trivialities" -> "retrivialities"
            if folded[0] != word[0]:
                continue
            d = Levenshtein.distance(word, folded, score_cutoff=allowed)
            if d < best_distance:
                best, best_distance = term, d
        return best

    def _near_split(self, core: str) -> str | None:
        """A long term decoded as several words, one letter off: "they're under"."""
        letters = _compact(core)
        if len(letters) < LONG_TERM or not letters.isalpha():
            return None
        for term in self._single:
            folded = _compact(term)
            if (
                len(folded) >= LONG_TERM
                and folded[0] == letters[0]
                and folded[-1] == letters[-1]
                and Levenshtein.distance(letters, folded, score_cutoff=1) <= 1
            ):
                return term
        return None


def _split_possessive(core: str) -> tuple[str, str]:
    for ending in _POSSESSIVE:
        if core.endswith(ending) and len(core) > len(ending):
            return core[: -len(ending)], ending
    return core, ""


def respell_text(text: str, speller: TermSpeller) -> str:
    """Apply :meth:`TermSpeller.respell` to whitespace-separated text."""
    words = text.split()
    for r in reversed(speller.respell(words)):
        words[r.start : r.end] = [r.text]
    out = " ".join(words)
    return (" " + out) if text.startswith(" ") and out else out
