"""Guessed pronunciations: g2p2's IPA mapped onto the 39 phones, and g2p2 itself.

g2p2 is the last resort for words the dictionary and its rules do not cover: about 19% of
its phones are wrong on held-out CMUdict words, and it costs about 0.5 ms a word.
"""

from __future__ import annotations

import importlib.util
import lzma
import os
import re
import unicodedata
from pathlib import Path

from ctxasr.context.phonetic.phones import PHONES, VOWELS, Phones
from ctxasr.context.phonetic.phones import phone_ids as _ids
from ctxasr.cpus import cpu_count

# IPA symbols (after stress, length, tone and diacritics are dropped) to ARPAbet, longest
# match first. g2p2's English output mixes American and non-rhotic British forms, so
# British centring diphthongs get their r back ("nɪə" -> N IH R) and əʊ is OW.
# fmt: off
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
# fmt: on
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


def load_g2p2():
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


def idle_cpus() -> int:
    """CPUs not kept busy by others (the last minute's load), at least 1."""
    try:
        busy = round(os.getloadavg()[0])
    except (AttributeError, OSError):  # no load average on this platform
        busy = 0
    return max(1, cpu_count() - busy)
