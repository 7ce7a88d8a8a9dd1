"""Merging the two passes and placing context in the prompt (no model needed)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctxasr.context.prompt import PROMPT_BUDGET
from ctxasr.context.retrieval import Evidence, Retrieval
from ctxasr.context.terms import ContextTerm
from ctxasr.context.twopass import (
    FirstPass,
    SeekPlan,
    TwoPassSeek,
    merge_passes,
    merge_verified,
    with_context,
)
from ctxasr.results import TermEvidence

EOT = 1000
SOT_PREV, SOT = 1001, 1002


class FakeTokenizer:
    """Token ids are indices into a vocabulary of word pieces; >= EOT are special."""

    eot = EOT

    def __init__(self) -> None:
        self.pieces: list[str] = []

    def ids(self, *pieces: str) -> list[int]:
        out = []
        for p in pieces:
            if p.startswith("<"):
                out.append(EOT + 10 + int(p.strip("<>")))  # a timestamp token
                continue
            if p not in self.pieces:
                self.pieces.append(p)
            out.append(self.pieces.index(p))
        return out

    def text(self, tokens: list[int]) -> str:
        return "".join(self.pieces[t] if t < EOT else f"<{t - EOT - 10}>" for t in tokens)

    def split_to_word_tokens(self, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
        # As faster-whisper: a word starts at a piece with a leading space or punctuation.
        words: list[str] = []
        groups: list[list[int]] = []
        for t in tokens:
            piece = self.pieces[t]
            if not words or piece.startswith(" ") or piece.strip() in string.punctuation:
                words.append(piece)
                groups.append([t])
            else:
                words[-1] += piece
                groups[-1].append(t)
        return words, groups


@pytest.fixture
def tok() -> FakeTokenizer:
    return FakeTokenizer()


def test_pass_two_is_taken_where_it_brings_in_a_wanted_term(tok):
    first = tok.ids("<0>", " Mister", " Fox", " and", " Burke", " it", " said", " no", ".", "<150>")
    second = tok.ids("<0>", " Mr", ".", " Fox", " and", " Birkett", " said", " so", ".", "<150>")
    merged = merge_passes(first, second, tok, ["Birkett"])
    # "Burke it" -> "Birkett" is taken; "Mister" -> "Mr." and "no" -> "so" are not.
    assert tok.text(merged) == "<0> Mister Fox and Birkett said no.<150>"


def test_nothing_wanted_keeps_pass_one_exactly(tok):
    first = tok.ids("<0>", " a", " b", "<40>", "<40>", " c", "<90>")
    second = tok.ids("<0>", " x", " b", "<40>", "<40>", " y", "<90>")
    assert merge_passes(first, second, tok, []) == first
    assert merge_passes(first, second, tok, ["Zanzibar"]) == first


def test_punctuation_and_case_changes_alone_are_not_taken(tok):
    first = tok.ids("<0>", " Linnell", "'s", " pictures", "<60>")
    second = tok.ids("<0>", " linnell", "'s", ",", " pictures", "<60>")
    assert merge_passes(first, second, tok, ["Linnell"]) == first


def test_timestamps_inside_a_replaced_stretch_are_kept(tok):
    first = tok.ids("<0>", " the", " burk", "<50>", "<50>", " it", " went", "<99>")
    second = tok.ids("<0>", " the", " Birkett", " went", "<99>")
    merged = merge_passes(first, second, tok, ["Birkett"])
    assert tok.text(merged) == "<0> the Birkett<50><50> went<99>"


def test_an_inserted_term_lands_before_the_closing_timestamp(tok):
    first = tok.ids("<0>", " we", " met", "<70>")
    second = tok.ids("<0>", " we", " met", " Quilter", "<70>")
    merged = merge_passes(first, second, tok, ["Quilter"])
    assert tok.text(merged) == "<0> we met Quilter<70>"


def test_a_near_miss_of_the_term_counts_as_bringing_it_in(tok):
    # The term speller would fix "Birket" -> "Birkett" afterwards.
    first = tok.ids("<0>", " the", " bur", "kit", " went", "<99>")
    second = tok.ids("<0>", " the", " Birket", " went", "<99>")
    merged = merge_passes(first, second, tok, ["Birkett"])
    assert tok.text(merged) == "<0> the Birket went<99>"


def test_multiword_terms_spelled_across_words(tok):
    first = tok.ids(" it", " was", " there", " and", " her", " done")
    second = tok.ids(" it", " was", " there", " under", " done")
    merged = merge_passes(first, second, tok, ["thereunder"])
    assert tok.text(merged) == " it was there under done"


WORDS = [" a", " b", " c", " d", " term", " x"]


@given(
    st.lists(st.sampled_from(WORDS), max_size=12),
    st.lists(st.sampled_from(WORDS), max_size=12),
)
def test_merge_never_invents_text(a_words, b_words):
    tok = FakeTokenizer()
    first, second = tok.ids(*a_words) if a_words else [], tok.ids(*b_words) if b_words else []
    merged = tok.text(merge_passes(first, second, tok, [])) if (first or second) else ""
    assert merged == "".join(a_words)  # nothing wanted: pass 1 verbatim
    merged = merge_passes(first, second, tok, ["term"])
    pieces = set(a_words) | set(b_words)
    assert all(tok.pieces[t] in pieces for t in merged)
    if " term" not in b_words:
        assert tok.text(merged) == "".join(a_words)


def test_with_context_puts_terms_first_and_trims_previous_text():
    context = [7, 8, 9]
    plain = [SOT, 50, 51]
    assert with_context(plain, context, SOT_PREV, SOT) == [SOT_PREV, 7, 8, 9, SOT, 50, 51]
    previous = list(range(300, 300 + PROMPT_BUDGET))
    prompted = with_context([SOT_PREV, *previous, SOT, 50], context, SOT_PREV, SOT)
    assert prompted[:4] == [SOT_PREV, 7, 8, 9]
    assert len(prompted) - 3 == PROMPT_BUDGET  # context + previous text fill the budget
    assert prompted[-3:-2] == [previous[-1]]  # the newest previous text survives
    assert prompted[-2:] == [SOT, 50]


def _scorer(tok, costs):
    """A fake forced decode: log P(text) = minus the summed cost of its words."""

    def score(texts):
        return [-sum(costs.get(w.strip(" .").lower(), 0.0)
                     for w in tok.split_to_word_tokens(list(t))[0]) for t in texts]  # fmt: skip

    return score


def test_verification_keeps_a_change_the_decoder_supports(tok):
    first = tok.ids("<0>", " Mister", " Burke", " it", " said", "<150>")
    second = tok.ids("<0>", " Mister", " Birkett", " said", "<150>")
    # The term costs 1.5 nats more than pass 1's words: within a margin of 2.
    score = _scorer(tok, {"birkett": 4.0, "burke": 1.5, "it": 1.0})
    merged = merge_verified(first, second, tok, ["Birkett"], score, margin=2.0)
    assert tok.text(merged.tokens) == "<0> Mister Birkett said<150>"
    (change,) = merged.changes
    assert change.terms == ("Birkett",) and change.accepted
    assert change.first == "Burke it" and change.second == "Birkett"
    assert change.delta == pytest.approx(-1.5)


def test_verification_drops_a_change_the_decoder_does_not_support(tok):
    first = tok.ids("<0>", " the", " cards", " are", " here", "<90>")
    second = tok.ids("<0>", " the", " Carder", " are", " here", "<90>")
    score = _scorer(tok, {"carder": 9.0, "cards": 1.0})
    merged = merge_verified(first, second, tok, ["Carder"], score, margin=2.0)
    assert merged.tokens == first
    assert [(c.terms, c.accepted, c.delta) for c in merged.changes] == [(("Carder",), False, -8.0)]


def test_each_change_is_judged_on_its_own(tok):
    first = tok.ids("<0>", " a", " Burke", " it", " b", " cards", " c", "<90>")
    second = tok.ids("<0>", " a", " Birkett", " b", " Carder", " c", "<90>")
    score = _scorer(tok, {"birkett": 1.0, "burke": 1.0, "carder": 9.0})
    merged = merge_verified(first, second, tok, ["Birkett", "Carder"], score, margin=0.5)
    assert tok.text(merged.tokens) == "<0> a Birkett b cards c<90>"
    assert [c.accepted for c in merged.changes] == [True, False]


def test_without_a_scorer_merge_verified_is_merge_passes(tok):
    first = tok.ids("<0>", " Mister", " Burke", " it", " said", "<150>")
    second = tok.ids("<0>", " Mister", " Birkett", " said", "<150>")
    merged = merge_verified(first, second, tok, ["Birkett"])
    assert merged.tokens == merge_passes(first, second, tok, ["Birkett"])
    assert [c.delta for c in merged.changes] == [None]


# --- the two-pass flow, driven by a fake decoder -------------------------------------------


class FakeRetriever:
    """Picks every term whose text the first pass's best hypothesis does not contain,
    if it is in ``said``; records what it was shown."""

    def __init__(self, said: list[str]) -> None:
        self.said = said
        self.seen: list[tuple[str, ...]] = []

    def retrieve(self, evidence: Evidence) -> Retrieval:
        self.seen.append(evidence.hypotheses)
        top = evidence.hypotheses[0] if evidence.hypotheses else ""
        picks = tuple(TermEvidence(t, 0.9, t, in_text=t in top) for t in self.said)
        return Retrieval(picks, (), 0.001)


class FakeDecoder:
    """Canned passes: ``first`` and ``second`` as word pieces, scores by a table."""

    def __init__(self, tok, first, second, *, silent=False, scores=None) -> None:
        self.tokenizer = tok
        self._first, self._second = tok.ids(*first), tok.ids(*second)
        self.silent, self.scores = silent, scores or {}
        self.calls: list[str] = []
        self.prompts: list[tuple[int, ...]] = []

    def first_pass(self, nbest: int) -> FirstPass:
        self.calls.append(f"first:{nbest}")
        text = self.tokenizer.text([t for t in self._first if t < EOT]).strip()
        return FirstPass([self._first], [text], self.silent)

    def frames(self):
        self.calls.append("frames")

    def second_pass(self, context, terms) -> list[int]:
        self.calls.append("second:" + ",".join(t.text for t in terms))
        self.prompts.append(context.tokens)
        return list(self._second)

    def score(self, texts) -> list[float]:
        self.calls.append(f"score:{len(texts)}")
        return [self.scores.get(self.tokenizer.text(list(t)).strip(), -10.0) for t in texts]


def plan_for(retriever, verify_margin=None) -> SeekPlan:
    return SeekPlan(retriever=retriever, terms={"Birkett": ContextTerm("Birkett", 2.0)},
                    encode=lambda s: [7] * len(s.split()), nbest=3,
                    verify_margin=verify_margin)  # fmt: skip


def test_two_pass_seek_runs_its_steps_in_order(tok):
    decoder = FakeDecoder(tok, ["<0>", " and", " Burke", " it", " said", "<90>"],
                          ["<0>", " and", " Birkett", " said", "<90>"])  # fmt: skip
    plan = plan_for(FakeRetriever(["Birkett"]))
    merged = TwoPassSeek(plan, decoder).run()
    assert tok.text(merged) == "<0> and Birkett said<90>"
    assert decoder.calls == ["first:3", "second:Birkett"]  # no frames: it does not listen
    assert decoder.prompts == [(7,)]  # the pick went into pass 2's prompt
    assert [p.second_pass for p in plan.picks] == [True] and list(plan.used) == ["Birkett"]


def test_two_pass_seek_stops_early(tok):
    words = ["<0>", " and", " Birkett", " said", "<90>"]
    # Pass 1 spelled the pick already: no second pass.
    decoder = FakeDecoder(tok, words, words)
    plan = plan_for(FakeRetriever(["Birkett"]))
    assert TwoPassSeek(plan, decoder).run() is None
    assert decoder.calls == ["first:3"] and plan.picks[0].second_pass is False
    # Silence: nothing retrieved, nothing recorded.
    retriever = FakeRetriever(["Birkett"])
    silent = FakeDecoder(tok, ["<0>", "<90>"], words, silent=True)
    assert TwoPassSeek(plan_for(retriever), silent).run() is None
    assert retriever.seen == []


def test_two_pass_seek_verifies_each_change(tok):
    first, second = ["<0>", " and", " Burke", " it", " said", "<90>"], ["<0>", " and", " Birkett", " said", "<90>"]  # fmt: skip
    # The decoder finds the change 5 nats less likely: over a margin of 2, it is refused.
    decoder = FakeDecoder(tok, first, second, scores={"and Burke it said": -3.0, "and Birkett said": -8.0})  # fmt: skip
    plan = plan_for(FakeRetriever(["Birkett"]), verify_margin=2.0)
    merged = TwoPassSeek(plan, decoder).run()
    assert tok.text(merged) == "<0> and Burke it said<90>"
    assert decoder.calls[-1] == "score:2"
    assert plan.picks[0].selected[0].verify == -5.0
