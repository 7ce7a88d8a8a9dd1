"""Word facts shared by the context code: how common a word is, and its bare letters."""

from __future__ import annotations

from functools import lru_cache

from wordfreq import zipf_frequency


@lru_cache(maxsize=1 << 17)
def zipf(word: str) -> float:
    """wordfreq's Zipf frequency of an English word (0 for unknown; cached: the context
    code looks up the same words over and over)."""
    return zipf_frequency(word, "en")


def letters(text: str) -> str:
    """The letters and digits of ``text``, casefolded: "Linnell's" -> "linnells"."""
    return "".join(ch for ch in text.casefold() if ch.isalnum())
