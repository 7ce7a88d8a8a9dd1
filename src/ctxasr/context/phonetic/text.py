"""The words of a text that get a pronunciation each: ``split_words``."""

from __future__ import annotations

import re
import unicodedata

_NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_ORDINAL = r"(?:st|nd|rd|th)(?![^\W\d_])"
_LETTERS = r"[^\W\d_]+(?:['’][^\W\d_]+)*"
_WORD = re.compile(rf"(?:{_NUMBER})(?:{_ORDINAL})?|{_LETTERS}", re.IGNORECASE)
WORD_EDGES = re.compile(r"^[\W_]+|[\W_]+$")  # punctuation around a word


def split_words(text: str) -> list[str]:
    """The pronounceable words of ``text``, in order.

    Splits on whitespace, hyphens, slashes, underscores and punctuation; keeps
    apostrophes inside a word ("Linnell's", "don't") and splits letters from digits
    ("GPT4" -> "GPT", "4"). A number stays one word with its thousands separators,
    decimal point or ordinal ending ("1,000", "3.5", "21st").
    """
    words = _WORD.findall(unicodedata.normalize("NFC", text))
    return [w for w in words if w[0].isdecimal() or any(c.isalpha() for c in w)]  # not "²"
