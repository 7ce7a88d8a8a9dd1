"""Pronunciations of words and context terms as ARPAbet phone ids, for matching by sound.

A first-pass transcript misspells a rare name in ways that still sound like it ("Birket"
-> "Birkett", "Kubernetes" -> "Cooper Netties"). Comparing pronunciations instead of
letters finds the term behind such a misspelling without any model. This package turns
words into phone sequences and says how cheap each phone confusion is; the matching
itself lives elsewhere.

Pronunciations come from the CMU Pronouncing Dictionary first (126k words, stress
dropped), then from rules built on it (possessives and other inflections of a listed
word, British spellings, compounds of two common words, numbers, acronyms spelled
letter by letter), and only then from the g2p2 grapheme-to-phoneme model, whose IPA
output is mapped onto the same 39 phones. On held-out CMUdict words the rules get 2.7%
of phones wrong and g2p2 about 19%, so g2p2 is the last resort: it is also the slow
part (about 0.5 ms a word it has to guess).

Its modules, each importing only the ones before it:

* ``phones``: the phone inventory, phone ids, confusion and gap costs, phone classes;
* ``text``: ``split_words``, the words of a text that get a pronunciation each;
* ``numbers``: numbers read as words;
* ``lexicon``: CMUdict and the rules on top of it;
* ``g2p``: g2p2 and its IPA mapped onto the phones;
* ``pronounce``: the ``Pronouncer``, combining all of them.

The names below are re-exported here. A setting such as ``G2P_WORDS_PER_PROCESS`` is read
from the module that defines it: set it there (``pronounce``), not on this package.
"""

from ctxasr.context.phonetic.g2p import ipa_to_phones
from ctxasr.context.phonetic.lexicon import COMPOUND_MIN, COMPOUND_ZIPF, MAX_WORD_VARIANTS
from ctxasr.context.phonetic.phones import (
    PHONES,
    VOWELS,
    Phones,
    Pron,
    gap_costs,
    phone_classes,
    substitution_costs,
)
from ctxasr.context.phonetic.pronounce import (
    G2P,
    G2P_CACHE_SIZE,
    G2P_HELPER_TIMEOUT,
    G2P_MAX_PROCESSES,
    G2P_WORDS_PER_PROCESS,
    Pronouncer,
)
from ctxasr.context.phonetic.text import split_words

__all__ = [
    "COMPOUND_MIN",
    "COMPOUND_ZIPF",
    "G2P",
    "G2P_CACHE_SIZE",
    "G2P_HELPER_TIMEOUT",
    "G2P_MAX_PROCESSES",
    "G2P_WORDS_PER_PROCESS",
    "MAX_WORD_VARIANTS",
    "PHONES",
    "VOWELS",
    "Phones",
    "Pron",
    "Pronouncer",
    "gap_costs",
    "ipa_to_phones",
    "phone_classes",
    "split_words",
    "substitution_costs",
]
