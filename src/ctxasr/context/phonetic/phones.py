"""The 39 phones pronunciations are spelled in, and how easily one is heard as another.

A phone id is an index into ``PHONES`` (CMUdict's ARPAbet phones, stress dropped). The
costs of confusing, inserting or dropping each phone and the coarse phone classes are the
tables the phonetic retriever aligns and indexes pronunciations with.
"""

from __future__ import annotations

import functools

import numpy as np

# fmt: off
PHONES: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G",
    "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T",
    "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
)  # CMUdict's phones without stress; a phone id is an index into this
# fmt: on
PHONE_ID = {phone: i for i, phone in enumerate(PHONES)}

Phones = tuple[int, ...]
"""One word's pronunciation: phone ids."""

Pron = tuple[tuple[int, ...], ...]
"""One pronunciation of a term: its words, each a tuple of phone ids."""


def phone_ids(phones: str) -> Phones:
    """Phone ids of phone names separated by spaces: "AH L" -> (2, 20)."""
    return tuple(PHONE_ID[p] for p in phones.split())


VOWELS: frozenset[int] = frozenset(phone_ids("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW"))


# --- confusion costs -------------------------------------------------------------------

# Manner of articulation of each consonant (CMUdict's cmudict.phones): two consonants
# of the same manner are a likelier confusion than a stop for a nasal.
# fmt: off
_MANNER = {
    phone: manner
    for manner, phones in (
        ("stop", "B D G K P T"), ("affricate", "CH JH"), ("fricative", "DH F S SH TH V Z ZH"),
        ("aspirate", "HH"), ("nasal", "M N NG"), ("liquid", "L R"), ("semivowel", "W Y"),
    )
    for phone in phones.split()
}
# fmt: on
_VOWEL_PAIR = 0.6  # two vowels not listed below
_SAME_MANNER = 0.8  # two consonants of one manner not listed below

# Confusions a recogniser (or a speaker) makes often, cheaper than the defaults.
# fmt: off
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
# fmt: on

# Phones a recogniser or speaker adds or drops easily: reduced vowels, h-dropping,
# final t/d, non-rhotic r, yod-dropping ("tune" T Y UW / T UW).
_GAP = 0.7
_CHEAP_GAPS = {"AH": 0.4, "IH": 0.4, "HH": 0.4, "T": 0.55, "D": 0.55, "R": 0.55, "Y": 0.55}

# Coarse classes for confusion-tolerant n-gram indexing: voicing pairs, nasals, th with
# f/v and affricates with their fricatives merge; vowels fall into five groups.
# fmt: off
_CLASSES = (
    "P B", "T D", "K G", "F V TH DH", "S Z", "SH ZH CH JH", "M N NG", "L", "R", "W", "Y",
    "HH", "IY IH", "EH AE EY", "AH AA AO AW AY", "UH UW OW OY", "ER",
)
# fmt: on


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
        costs[PHONE_ID[pa], PHONE_ID[pb]] = costs[PHONE_ID[pb], PHONE_ID[pa]] = cost
    np.fill_diagonal(costs, 0.0)
    return _read_only(costs)


@functools.cache
def gap_costs() -> np.ndarray:
    """(P,) cost of inserting or deleting one phone; read-only."""
    costs = np.full(len(PHONES), _GAP, np.float32)
    for phone, cost in _CHEAP_GAPS.items():
        costs[PHONE_ID[phone]] = cost
    return _read_only(costs)


@functools.cache
def phone_classes() -> np.ndarray:
    """(P,) int8 coarse class of each phone, for confusion-tolerant n-gram indexing; read-only."""
    classes = np.full(len(PHONES), -1, np.int8)
    for index, group in enumerate(_CLASSES):
        for phone in group.split():
            classes[PHONE_ID[phone]] = index
    assert (classes >= 0).all(), "every phone has a class"
    return _read_only(classes)
