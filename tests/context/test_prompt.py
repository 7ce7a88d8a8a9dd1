"""Tests for ``ctxasr.context.prompt`` with the packaged model's real tokenizer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxasr.context.prompt import EMPTY_PROMPT, PROMPT_BUDGET, build_prompt, rank_terms
from ctxasr.context.terms import ContextTerm, dedupe_terms
from ctxasr.models import packaged_model_path

T = ContextTerm


@pytest.fixture(scope="module")
def encode():
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(packaged_model_path() / "tokenizer.json"))
    return lambda text: tokenizer.encode(text, add_special_tokens=False).ids


def test_terms_are_rendered_as_a_comma_list_in_the_given_order(encode):
    prompt = build_prompt([T("Kubernetes"), T("etcd"), T("New York")], encode)

    assert prompt.text == " Kubernetes, etcd, New York."
    assert prompt.terms == ("Kubernetes", "etcd", "New York")
    assert list(prompt.tokens) == encode(" Kubernetes, etcd, New York.")


def test_higher_weight_terms_come_first_ties_keep_order(encode):
    terms = [T("alpha"), T("beta", 3.0), T("gamma"), T("delta", 2.0), T("epsilon", 3.0)]

    prompt = build_prompt(terms, encode)

    assert prompt.terms == ("beta", "epsilon", "delta", "alpha", "gamma")
    assert [t.text for t in rank_terms(terms)] == list(prompt.terms)


def test_empty_input_gives_the_empty_prompt(encode):
    assert build_prompt([], encode) is EMPTY_PROMPT
    assert EMPTY_PROMPT.text == "" and EMPTY_PROMPT.tokens == () and EMPTY_PROMPT.terms == ()


def test_nothing_fits_gives_the_empty_prompt(encode):
    assert build_prompt([T("Kubernetes orchestration")], encode, budget=1) is EMPTY_PROMPT


def test_a_term_too_long_is_skipped_and_later_short_ones_still_fit(encode):
    long = " ".join(f"word{i}" for i in range(150))  # about 300 tokens
    terms = [T("first", 5.0), T(long, 4.0), T("etcd", 1.0), T("gRPC", 1.0)]

    prompt = build_prompt(terms, encode)

    assert len(encode(" " + long)) > PROMPT_BUDGET
    assert prompt.terms == ("first", "etcd", "gRPC")
    assert list(prompt.tokens) == encode(" first, etcd, gRPC.")


def test_budget_is_filled_then_smaller_terms_fill_the_rest(encode):
    # Each "wordNNN" term costs 2 tokens and its separator (or the closing full stop) 1;
    # with a budget of 11 three fit (9 tokens) and a fourth (12) does not, but a
    # 1-token term still does (11).
    terms = [T("word100"), T("word200"), T("word300"), T("word400"), T("the")]
    assert all(len(encode(" " + t.text)) == 2 for t in terms[:4]) and len(encode(" the")) == 1

    prompt = build_prompt(terms, encode, budget=11)

    assert prompt.terms == ("word100", "word200", "word300", "the")
    assert len(prompt.tokens) == 11


PUNCTUATED = ["U.S.", "Ph.D.", "e.g.", '"quoted"', "rock 'n'", "x)", "C#", "AT&T"]


@pytest.mark.parametrize("term", PUNCTUATED)
def test_trailing_punctuation_is_tokenized_as_the_text_is(encode, term):
    # "." and "," merge into one ".," token; costing them apart would give the decoder
    # tokens no real text produces.
    prompt = build_prompt([T(term), T("next")], encode)

    assert prompt.text == f" {term}, next."
    assert list(prompt.tokens) == encode(prompt.text)
    last = build_prompt([T("next"), T(term, 0.5)], encode)  # ends in the term itself
    assert last.text == f" next, {term}."
    assert list(last.tokens) == encode(last.text)


def test_a_thousand_terms_fit_the_budget(encode):
    terms = [T(f"Term{i} of thing {i}", weight=1 + (i % 7)) for i in range(1000)]

    prompt = build_prompt(terms, encode)

    assert len(prompt.tokens) <= 223 == PROMPT_BUDGET
    assert list(prompt.tokens) == encode(prompt.text)
    assert len(prompt.terms) > 10
    # Only weight-7 terms (the highest) are in a prompt this full, in input order.
    assert prompt.terms[0] == "Term6 of thing 6"
    assert all(int(t.rsplit(" ", 1)[1]) % 7 == 6 for t in prompt.terms)


TEXT = (
    st.text(
        alphabet=st.sampled_from(list("abcXYZ019 .,#'\"-()&!?é日本")),
        min_size=1,
        max_size=30,
    )
    .map(lambda s: " ".join(s.split()))
    .filter(bool)
)


@settings(max_examples=200, deadline=None)
@given(
    terms=st.lists(st.builds(T, TEXT, st.sampled_from([0.5, 1.0, 2.0, 3.0])), max_size=60),
    budget=st.integers(1, 260),
)
def test_prompt_never_exceeds_budget_and_is_its_own_encoding(encode, terms, budget):
    terms = dedupe_terms(terms)  # as every caller does

    prompt = build_prompt(terms, encode, budget)

    if not prompt.terms:
        assert prompt is EMPTY_PROMPT
        # Nothing fitted: every term alone (with the full stop) is over budget.
        assert all(len(encode(" " + t.text + ".")) > budget for t in terms)
        return
    assert len(prompt.tokens) <= budget
    assert list(prompt.tokens) == encode(prompt.text)
    assert prompt.text == " " + ", ".join(prompt.terms) + "."
    # Terms come out in rank order.
    ranked = [t.text for t in rank_terms(terms)]
    positions = [ranked.index(t) for t in prompt.terms]
    assert positions == sorted(positions)
    # Greedy: any term left out would not have fitted after those before it.
    for term in terms:
        if term.text not in prompt.terms:
            kept_before = [t for t in prompt.terms if ranked.index(t) < ranked.index(term.text)]
            trial = " " + ", ".join([*kept_before, term.text]) + "."
            assert len(encode(trial)) > budget
