"""Pronunciations for the phonetic retriever: golden words, rules, costs and the batch API."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxasr.context.phonetic import (
    PHONES,
    VOWELS,
    Pronouncer,
    gap_costs,
    ipa_to_phones,
    phone_classes,
    pronounce,
    split_words,
    substitution_costs,
)


def ids(phones: str) -> tuple[int, ...]:
    return tuple(PHONES.index(p) for p in phones.split())


def said(*words: str) -> tuple[tuple[int, ...], ...]:
    return tuple(ids(w) for w in words)


@pytest.fixture(scope="module")
def pron() -> Pronouncer:
    return Pronouncer()


@pytest.fixture(scope="module")
def plain() -> Pronouncer:
    return Pronouncer(g2p=False)


def test_phone_set_is_cmudicts_without_stress():
    assert len(PHONES) == 39 == len(set(PHONES))
    assert set(VOWELS) == set(ids("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW"))


@pytest.mark.parametrize(
    "word,first",
    [
        ("birkett", "B ER K IH T"),
        ("Birkett", "B ER K IH T"),
        ("BIRKETT,", "B ER K IH T"),  # case and surrounding punctuation do not matter
        ("“Linnell”", "L IH N AH L"),
        ("don't", "D OW N T"),
        ("don’t", "D OW N T"),  # a curly apostrophe is an apostrophe
        ("quilter", "K W IH L T ER"),
    ],
)
def test_dictionary_words(plain, word, first):
    assert plain.word(word)[0] == ids(first)


def test_variants_come_in_dictionary_order_without_stress_duplicates(plain):
    assert plain.word("read") == said("R EH D", "R IY D")
    assert plain.word("it") == said("IH T")  # IH1 T and IH0 T are one pronunciation


@pytest.mark.parametrize(
    "word,expected",
    [
        ("linnell's", "L IH N AH L Z"),  # not in CMUdict; "linnell" is
        ("birkett's", "B ER K IH T S"),  # s after a voiceless sound
        ("caruso's", "K ER UW S OW Z"),
        ("quilter's", "K W IH L T ER Z"),
    ],
)
def test_possessive_of_a_known_word(plain, word, expected):
    assert plain.word(word)[0] == ids(expected)


def test_possessive_after_a_sibilant_adds_a_syllable(plain):
    # "aldous's" is not in CMUdict; "aldous" ends in S
    assert plain.word("Aldous's")[0] == ids("AA L D AH S IH Z")


@pytest.mark.parametrize(
    "word,expected",
    [
        ("favourable", "F EY V ER AH B AH L"),  # British spelling of a listed word
        ("endeavoured", "IH N D EH V ER D"),
        ("stammered", "S T AE M ER D"),  # inflection of a listed word
        ("wrapp'd", "R AE P T"),
        ("quiltered", "K W IH L T ER D"),
    ],
)
def test_rules_on_dictionary_words(plain, word, expected):
    assert plain.word(word)[0] == ids(expected)


@pytest.mark.parametrize(
    "word,readings",
    [
        ("4", ["F AO R"]),
        (
            "1990",
            [
                "N AY N T IY N N AY N T IY",
                "W AH N TH AW Z AH N D N AY N HH AH N D R AH D N AY N T IY",
            ],
        ),
        (
            "2026",
            ["T W EH N T IY T W EH N T IY S IH K S", "T UW TH AW Z AH N D T W EH N T IY S IH K S"],
        ),
        ("1,000", ["W AH N TH AW Z AH N D"]),
        ("21st", ["T W EH N T IY F ER S T"]),
        ("3.5", ["TH R IY P OY N T F AY V"]),
        ("007", ["Z IH R OW Z IH R OW S EH V AH N"]),
    ],
)
def test_numbers_are_said_as_words(plain, word, readings):
    assert plain.word(word) == tuple(ids(r) for r in readings)


@given(st.integers(0, 10**15 - 1), st.sampled_from(["", "th"]))
def test_every_number_is_said_from_dictionary_words(n, ending):
    variants = Pronouncer(g2p=False).word(f"{n}{ending}")
    assert 1 <= len(variants) <= 2 and all(variants)


def test_acronyms_get_their_letters(plain):
    assert plain.word("IBM") == said("AY B IY EH M")
    assert plain.word("GPT") == said("JH IY P IY T IY")
    # a dictionary word in capitals keeps its word reading first, then its letters
    assert plain.word("NASA") == said("N AE S AH", "EH N EY EH S EY")
    assert plain.word("US") == said("AH S", "Y UW EH S")
    assert plain.word("nasa") == said("N AE S AH")  # lower case is the word only


def test_mixed_case_pieces_are_said_in_turn(plain):
    assert plain.word("mRNA")[0] == ids("EH M AA R EH N EY")
    assert plain.word("GitLab")[0] == ids("G IH T L AE B")


def test_word_of_several_pieces_is_said_piece_after_piece(plain):
    assert plain.word("GPT-4") == said("JH IY P IY T IY F AO R")
    assert plain.word("x-ray") == said("EH K S R EY")  # CMUdict lists it whole


@pytest.mark.parametrize("word", ["", "  ", "--", "...", "—"])
def test_nothing_to_say(plain, word):
    assert plain.word(word) == ()


def test_unknown_word_without_g2p_is_spelled(plain):
    assert plain.word("zxqv") == said("Z IY EH K S K Y UW V IY")


def test_unknown_words_go_to_g2p(pron):
    (zipformer, *_) = pron.word("Zipformer")
    assert zipformer[0] == PHONES.index("Z")
    assert set(zipformer) >= set(ids("P F M"))
    (kubernetes, *_) = pron.word("Kubernetes")
    assert kubernetes[:2] == ids("K UW") and kubernetes[-1] in ids("S Z")


def test_possessive_of_a_g2p_word_is_g2ps_word_and_s(pron):
    base = pron.word("Zipformer")[0]
    assert pron.word("Zipformer's")[0] == base + ids("Z")


@pytest.mark.parametrize(
    "word",
    ["birkett", "Zipformer", "NASA", "1990", "GPT-4", "mRNA", "café", "Linnell's", "a"],
)
def test_every_word_with_letters_or_digits_is_said(pron, word):
    variants = pron.word(word)
    assert 1 <= len(variants) <= 3
    assert all(variants) and len(set(variants)) == len(variants)
    assert all(0 <= p < len(PHONES) for v in variants for p in v)


def test_terms_keep_word_boundaries(plain):
    assert plain.term("Dr. Linnell") == (
        said("D R AY V", "L IH N AH L"),
        said("D AA K T ER", "L IH N AH L"),
    )
    assert plain.term("GPT-4") == (said("JH IY P IY T IY", "F AO R"),)
    assert plain.term("Linnell's") == (said("L IH N AH L Z"),)


def test_term_variants_are_capped_and_best_first(plain):
    prons = plain.term("read read read", max_variants=3)
    assert len(prons) == 3
    assert prons[0] == said("R EH D", "R EH D", "R EH D")
    assert all(sum(w != ids("R EH D") for w in p) == 1 for p in prons[1:])
    assert len(plain.term("read read read", max_variants=100)) == 8
    assert plain.term("", max_variants=4) == ()
    assert plain.term("-- !") == ()
    with pytest.raises(ValueError, match="max_variants"):
        plain.term("read", max_variants=0)


@pytest.mark.parametrize(
    "text,words",
    [
        ("Dr. Linnell's", ["Dr", "Linnell's"]),
        ("don't stop", ["don't", "stop"]),
        ("GPT4 vs. GPT-4o", ["GPT", "4", "vs", "GPT", "4", "o"]),
        ("state-of-the-art", ["state", "of", "the", "art"]),
        ("TCP/IP over_wifi", ["TCP", "IP", "over", "wifi"]),
        ("'tis the Joneses' cat", ["tis", "the", "Joneses", "cat"]),
        ("in 1990, 1,000 men", ["in", "1990", "1,000", "men"]),
        ("the 21st of 3.5", ["the", "21st", "of", "3.5"]),
        ("café, naïve", ["café", "naïve"]),
        ("", []),
        (" — ... ", []),
    ],
)
def test_split_words(text, words):
    assert split_words(text) == words


@given(st.text(max_size=40))
def test_split_words_is_stable(text):
    words = split_words(text)
    assert all(any(c.isalnum() for c in w) for w in words)
    assert split_words(" ".join(words)) == words


@pytest.mark.parametrize(
    "ipa,expected",
    [
        ("zɪpfɔɹmɚ", "Z IH P F AO R M ER"),
        ("kjuːbənɛtɪs", "K Y UW B AH N EH T IH S"),
        ("stɹɛt͡ʃɪŋ", "S T R EH CH IH NG"),  # tie bar, longest match
        ("ˈbaɪ̯nd", "B AY N D"),  # stress and non-syllabic marks dropped
        ("tʌmbl̩d", "T AH M B AH L D"),  # syllabic consonant: schwa before it
        ("nɪə", "N IH R"),  # non-rhotic centring diphthong gets its r back
        ("ɡəʊld", "G OW L D"),
        ("bʌʔn̩", "B AH AH N"),  # glottal stop dropped
        ("laɪnnəl", "L AY N AH L"),  # doubled consonant is one
        ("", ""),
    ],
)
def test_ipa_to_phones(ipa, expected):
    assert ipa_to_phones(ipa) == ids(expected)


def test_substitution_costs():
    costs = substitution_costs()
    p = len(PHONES)
    assert costs.shape == (p, p) and costs.dtype == np.float32
    assert np.array_equal(costs, costs.T)
    assert (np.diag(costs) == 0).all()
    off = costs[~np.eye(p, dtype=bool)]
    assert (off > 0).all() and (off <= 1).all()

    def cost(a: str, b: str) -> float:
        return float(costs[PHONES.index(a), PHONES.index(b)])

    for a, b in [("P", "B"), ("T", "D"), ("S", "Z"), ("M", "N"), ("IH", "IY")]:
        assert cost(a, b) < 0.45 < cost("P", "M")
    assert cost("L", "R") < cost("L", "K")
    assert cost("AA", "IY") < cost("AA", "K") == 1.0
    assert cost("ER", "R") < 1.0
    assert substitution_costs() is costs  # cached
    with pytest.raises(ValueError):
        costs[0, 1] = 0.5  # read-only


def test_gap_costs():
    gaps = gap_costs()
    assert gaps.shape == (len(PHONES),) and gaps.dtype == np.float32
    assert (gaps > 0).all() and (gaps <= 1).all()
    assert gaps[PHONES.index("AH")] < gaps[PHONES.index("T")] < gaps[PHONES.index("K")]
    assert not gaps.flags.writeable


def test_phone_classes_merge_likely_confusions():
    classes = phone_classes()
    assert classes.shape == (len(PHONES),) and classes.dtype == np.int8
    assert not classes.flags.writeable

    def same(a: str, b: str) -> bool:
        return classes[PHONES.index(a)] == classes[PHONES.index(b)]

    assert same("P", "B") and same("M", "NG") and same("IH", "IY")
    assert not same("P", "T") and not same("IY", "AA") and not same("S", "AH")
    assert len({int(classes[v]) for v in VOWELS}) <= 6


def test_a_misrecognised_name_shares_most_class_trigrams(plain):
    """Birkett heard as "Burket", Kubernetes as "Cooper Netties"."""
    classes = phone_classes()

    def trigrams(phones: tuple[int, ...]) -> set[tuple[int, ...]]:
        c = [int(classes[p]) for p in phones]
        return {tuple(c[i : i + 3]) for i in range(len(c) - 2)}

    term = trigrams(ids("K UW B ER N EH T IY Z"))
    heard = trigrams(ids("K UW P ER N EH T IY Z"))
    assert term == heard
    assert len(trigrams(ids("B ER K IH T")) & trigrams(ids("B ER K IY T"))) == 3


def test_batch_api_equals_single_calls(pron):
    texts = [
        "Dr. Linnell's",
        "Zipformer",
        "GPT-4",
        "NASA",
        "",
        "read",
        "1990",
        "PyTorch",
        "Kubernetes cluster",
        "Birkett",
    ]
    assert pron.terms(texts) == [pron.term(t) for t in texts]
    assert pron.terms(texts, max_variants=1) == [pron.term(t, 1) for t in texts]
    words = [w for t in texts for w in t.split()] + ["", "hello,", "GPT4"]
    assert pron.words(words) == [(pron.word(w) or ((),))[0] for w in words]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(alphabet="abcdeilnorstuyzABNIS'-4 ", max_size=12), max_size=8))
def test_words_is_word_first_variant(words):
    plain = Pronouncer(g2p=False)
    assert plain.words(words) == [(plain.word(w) or ((),))[0] for w in words]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(alphabet="abcdeilnorstuyzABNIS'-4 ", max_size=16), max_size=6))
def test_terms_is_term_of_each(texts):
    plain = Pronouncer(g2p=False)
    assert plain.terms(texts, 3) == [plain.term(t, 3) for t in texts]


UNLISTED = [
    "zipformer",
    "kubernetes",
    "wibblewobbles",
    "dolorifuge",
    "tewfikieh",
    "oolaloo",
    "cramoisie",
    "leodogran",
    "inertron",
    "kadabrans",
    "fromenteau",
    "sinivate",
]


def test_helper_processes_give_the_same_answers(monkeypatch):
    expected = Pronouncer(g2p_processes=1).words(UNLISTED)
    monkeypatch.setattr(pronounce, "G2P_WORDS_PER_PROCESS", 2)
    answers = []
    helper_output = Pronouncer._helper_output

    def recorded(*args):
        answers.append(helper_output(*args))
        return answers[-1]

    monkeypatch.setattr(Pronouncer, "_helper_output", staticmethod(recorded))
    assert Pronouncer(g2p_processes=3).words(UNLISTED) == expected
    assert len(answers) == 2 and None not in answers  # both helpers answered


def test_a_failed_helper_process_costs_only_time(monkeypatch):
    expected = Pronouncer(g2p_processes=1).words(UNLISTED)
    monkeypatch.setattr(pronounce, "G2P_WORDS_PER_PROCESS", 2)
    monkeypatch.setattr(pronounce, "_G2P_WORKER", "import sys; sys.exit(3)")
    assert Pronouncer(g2p_processes=3).words(UNLISTED) == expected
