"""Respelling decoded near-misses of context terms: golden cases and the guards."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxasr.context.spelling import Respelling, TermSpeller, respell_text

TERMS = [
    "thereunder",
    "Linnell's",
    "idylls",
    "Birket",
    "Carker",
    "US",
    "COVID-19",
    "PyTorch",
    "Quilter",
    "trivialities",
    "New York Stock Exchange",
]


@pytest.fixture(scope="module")
def speller() -> TermSpeller:
    return TermSpeller(TERMS)


@pytest.mark.parametrize(
    "decoded,expected",
    [
        # words that spell a term's letters join into it, punctuation kept
        (" activities there under. In this regard", " activities thereunder. In this regard"),
        (
            " covid 19 cases and py torch, quilter's gospel.",
            " COVID-19 cases and PyTorch, Quilter's gospel.",
        ),
        (" the new york stock exchange opened", " the New York Stock Exchange opened"),
        # a rare word one edit from a term takes the term's spelling, possessive kept
        (" Mr. Birkett Foster's landscapes", " Mr. Birket Foster's landscapes"),
        (" and Mr. Birkett's", " and Mr. Birket's"),
        # a long term split into words one letter off
        (" review of activities they're under. In", " review of activities thereunder. In"),
        # a short word glued onto a long term
        (" spectators, retrivialities not worth", " spectators, trivialities not worth"),
    ],
)
def test_near_misses_take_the_listed_spelling(speller, decoded, expected):
    assert respell_text(decoded, speller) == expected


@pytest.mark.parametrize(
    "decoded",
    [
        " let us go",  # "us" is a common word: never re-cased to the acronym "US"
        " Mr. Carter came",  # "carter" is a common word, so it is not respelled to "Carker"
        " the idles were idle",  # "idles" is an ordinary word: not respelled to "idylls"
        " Mr. Parker said",  # different first letter
        " there is nothing under it",  # letters not adjacent
        " they are under",  # two letters off: a split joins only one edit from a term
        "",
    ],
)
def test_ordinary_words_are_left_alone(speller, decoded):
    assert respell_text(decoded, speller) == decoded


def test_respell_reports_spans_only_for_changes(speller):
    words = ["Mr.", "Quilter", "is", "there", "under,", "said", "Carker."]
    assert speller.respell(words) == [Respelling(3, 5, "thereunder,")]


def test_an_empty_term_list_changes_nothing():
    assert respell_text(" py torch there under", TermSpeller([])) == " py torch there under"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "the",
                "a",
                "there",
                "under",
                "py",
                "torch",
                "Birkett",
                "us",
                "covid",
                "19,",
                "idles",
                "x",
            ]
        ),
        max_size=12,
    )
)
def test_respelling_never_grows_the_word_count_and_is_idempotent(words):
    speller = TermSpeller(TERMS)
    text = " " + " ".join(words)
    once = respell_text(text, speller)
    assert len(once.split()) <= len(words)
    assert respell_text(once, speller) == once
