"""The document's n-gram (``ctxasr.context.ngram``): golden values computed by hand on a
three-sentence corpus, and properties of the distribution on random small corpora.

A word-level fake tokenizer stands in for Whisper's: one token per word (with its
leading space) or punctuation mark, so every count below can be read off the corpus.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxasr.context.ngram import (
    BOS,
    TRANSPARENT,
    UNSEEN,
    DomainScorer,
    NgramLM,
    TokenClasses,
    _discounts,
    build_domain_lm,
    load_lm,
    save_lm,
    sentences_of,
    token_key,
)

# Token ids 0..12 are text, 13 and 14 specials (their text never counts).
TEXTS = [" the", " cat", " sat", " on", " mat", " dog", " a", " The", " CAT", ",", ".", " (",
         "!", "<|endoftext|>", "<|notimestamps|>"]  # fmt: skip
FIRST_SPECIAL = 13
ID = {t: i for i, t in enumerate(TEXTS)}
THE, CAT, SAT, ON, MAT, DOG, A, THE_CAP, CAT_CAPS, COMMA, PERIOD, PAREN, BANG = range(13)
EOT, NO_TIMESTAMPS = 13, 14
CLASSES = TokenClasses([token_key(t) for t in TEXTS], FIRST_SPECIAL)
VOCAB = 7  # the, cat, sat, on, mat, dog, a
WORDS = ["the", "cat", "sat", "on", "mat", "dog", "a"]


def encode(texts: list[str]) -> list[list[int]]:
    """Word-level tokens: " word" (or "word" at a line's start) and punctuation marks."""
    return [[ID[t] for t in re.findall(r" ?\w+| ?\(|[^\w\s(]", s)] for s in texts]


def build(text: str, order: int = 2) -> NgramLM:
    return build_domain_lm(text, encode, CLASSES, order)


# --- token keys and classes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [(" The", " the"), (" THE", " the"), ("the", "the"), (" cat,", " cat"), (",", ""),
     (" (", ""), ("  ", ""), ("", ""), (" '", ""), (" don't", " don't"), (" ÉCOLE", " école"),
     (" 42", " 42"), ("-", "")],
)  # fmt: skip
def test_token_key_folds_case_and_drops_punctuation(text, key):
    assert token_key(text) == key


def test_token_classes_blank_specials_and_count_the_vocabulary():
    classes = TokenClasses([token_key(t) for t in (" a", " A", ",", " b", " c")], first_special=4)
    assert classes.keys == [" a", " a", "", " b", ""]
    assert classes.vocab == 2
    assert CLASSES.vocab == VOCAB
    assert CLASSES.keys[EOT] == CLASSES.keys[NO_TIMESTAMPS] == ""


class _Tokenizer:
    """The three methods of ``tokenizers.Tokenizer`` that ``of_tokenizer`` uses."""

    texts = (" Hi", ",", "\ufffd", " hi", "<|endoftext|>")

    def get_vocab_size(self) -> int:
        return len(self.texts)

    def decode(self, ids: list[int]) -> str:
        return self.texts[ids[0]]

    def id_to_token(self, i: int) -> str:
        return f"raw{i}"


def test_token_classes_of_a_tokenizer_keep_broken_bytes_raw():
    classes = TokenClasses.of_tokenizer(_Tokenizer(), first_special=4)
    assert classes.keys == [" hi", "", "raw2", " hi", ""]
    assert classes.vocab == 2


def test_sentences_split_at_sentence_punctuation_and_lines():
    text = "One. Two!  Three?\nFour; five: six\n\n  3.14 is pi  "
    assert sentences_of(text) == ["One.", "Two!", "Three?", "Four;", "five:", "six",
                                  "3.14 is pi"]  # fmt: skip
    assert sentences_of(" \n ") == []


# --- golden values --------------------------------------------------------------------
#
# Corpus (order 2): "The cat sat. The dog sat. A cat, the cat."
# Classes by first use: the=2, cat=3, sat=4, dog=5, a=6; on and mat unseen; "," "." skip.
# Streams: [the cat sat] [the dog sat] [a cat the cat].
# Bigrams (raw): (BOS the) 2, (the cat) 2, (cat sat) 1, (the dog) 1, (dog sat) 1,
#   (BOS a) 1, (a cat) 1, (cat the) 1  -> n1 = 6, n2 = 2, n3 = 0: fallback discounts.
# Unigram continuation counts: the {BOS, cat} 2, cat {the, a} 2, sat {cat, dog} 2,
#   dog 1, a 1; total 8 -> n1 = 2, n2 = 3, n3 = 0: fallback (0.5, 1.0, 1.5).

CORPUS = "The cat sat. The dog sat. A cat, the cat."
FLOOR = (1 - (3 * (2 - 1.0) + 2 * (1 - 0.5)) / 8) / VOCAB  # freed 1/2 over 7 classes
UNI = {THE: 1 / 8 + FLOOR, CAT: 1 / 8 + FLOOR, SAT: 1 / 8 + FLOOR, DOG: 1 / 16 + FLOOR,
       A: 1 / 16 + FLOOR, ON: FLOOR, MAT: FLOOR}  # fmt: skip


def test_golden_unigram_continuation_probabilities_with_a_uniform_floor():
    lm = build(CORPUS)
    assert FLOOR == pytest.approx(1 / 14)
    assert lm.classes == {" the": 2, " cat": 3, " sat": 4, " dog": 5, " a": 6}
    expected = [FLOOR, 0.0, UNI[THE], UNI[CAT], UNI[SAT], UNI[DOG], UNI[A]]
    assert lm.unigram == pytest.approx(expected)
    # A history the document never has (sat is never followed) backs off to the unigram.
    hist = lm.advance(lm.start(), SAT)
    for token, p in UNI.items():
        assert lm.logprob(hist, token) == pytest.approx(math.log(p))


def test_golden_bigram_probabilities_and_backoff_weight():
    lm = build(CORPUS)
    the = lm.advance(lm.start(), THE)
    # After "the": cat 2, dog 1 of 3; freed (D2 + D1) / 3 = 1.5 / 3 goes to the unigram.
    backoff = (1.0 + 0.5) / 3
    followers, discounted, weight = lm.tables[2].get((lm.classes[" the"],))
    assert weight == pytest.approx(backoff)
    assert dict(zip(followers.tolist(), discounted.tolist(), strict=True)) == pytest.approx(
        {lm.classes[" cat"]: (2 - 1.0) / 3, lm.classes[" dog"]: (1 - 0.5) / 3}
    )
    assert math.exp(lm.logprob(the, CAT)) == pytest.approx((2 - 1.0) / 3 + backoff * UNI[CAT])
    assert math.exp(lm.logprob(the, DOG)) == pytest.approx((1 - 0.5) / 3 + backoff * UNI[DOG])
    assert math.exp(lm.logprob(the, MAT)) == pytest.approx(backoff * FLOOR)
    assert math.exp(lm.logprob(the, THE)) == pytest.approx(backoff * UNI[THE])
    # After "cat": sat 1, the 1 of 2; freed 2 * 0.5 / 2.
    cat = lm.advance(lm.start(), CAT)
    assert math.exp(lm.logprob(cat, SAT)) == pytest.approx(0.5 / 2 + 0.5 * UNI[SAT])
    # At a sentence's start: the 2, a 1 of 3.
    assert math.exp(lm.logprob(lm.start(), THE)) == pytest.approx(1 / 3 + 0.5 * UNI[THE])
    assert math.exp(lm.logprob(lm.start(), A)) == pytest.approx(1 / 6 + 0.5 * UNI[A])


def test_golden_sentence_score_skips_punctuation_and_folds_case():
    lm = build(CORPUS)
    expected = (math.log(1 / 3 + 0.5 * UNI[THE]) + math.log(1 / 3 + 0.5 * UNI[CAT])
                + math.log(0.25 + 0.5 * UNI[SAT]))  # fmt: skip
    assert lm.score([THE_CAP, CAT_CAPS, COMMA, SAT, PERIOD, EOT]) == pytest.approx(expected)
    assert lm.score([THE, CAT, SAT]) == pytest.approx(expected)


def test_golden_build_info():
    lm = build(CORPUS)
    info = lm.info
    assert (info.words, info.tokens, info.order, info.classes) == (10, 10, 2, 5)
    assert info.ngrams == 5 + 8  # distinct unigrams + distinct bigrams
    assert len(info.sha256) == 64
    assert lm.first_special == FIRST_SPECIAL
    assert lm.start() == (BOS,)


def test_golden_trigram_start_and_history_length():
    # Order 3, one sentence "the cat sat" twice: trigrams (BOS BOS the) 2,
    # (BOS the cat) 2, (the cat sat) 2 -> n2 only: fallback, D2 = 1.0.
    lm = build("the cat sat. the cat sat.", order=3)
    assert lm.start() == (BOS, BOS)
    h = lm.advance(lm.advance(lm.start(), THE), COMMA)
    assert h == (BOS, lm.classes[" the"])
    h = lm.advance(h, CAT)
    assert h == (lm.classes[" the"], lm.classes[" cat"])
    # Bigrams (continuation): (BOS the) 1, (the cat) 1, (cat sat) 1 -> D1 = 0.5, and
    # unigrams the, cat, sat 1 each of 3 -> each 0.5 / 3, floor 0.5 / 7.
    floor = 0.5 / VOCAB
    uni = 0.5 / 3 + floor
    bi = 0.5 + 0.5 * uni  # P(sat | cat): one follower, D1 0.5 of 1
    tri = (2 - 1.0) / 2 + 0.5 * bi  # P(sat | the cat): one follower, D2 1.0 of 2
    assert math.exp(lm.logprob(h, SAT)) == pytest.approx(tri)
    assert math.exp(lm.logprob(h, ON)) == pytest.approx(0.5 * 0.5 * floor)


def test_discounts_follow_chen_and_goodman():
    # Count-of-counts n1 = 4, n2 = 2, n3 = 1, n4 = 1 (the 5 is not an n4).
    counts = Counter({i: c for i, c in enumerate([1, 1, 1, 1, 2, 2, 3, 4, 5])})
    y = 4 / (4 + 2 * 2)
    expected = (1 - 2 * y * 2 / 4, 2 - 3 * y * 1 / 2, 3 - 4 * y * 1 / 1)
    assert _discounts(counts) == pytest.approx(expected)
    # Missing count-of-counts (no n-gram seen exactly 4 times): the fallback.
    assert _discounts(Counter({0: 1, 1: 2, 2: 3, 3: 5, 4: 6})) == (0.5, 1.0, 1.5)


def test_a_unigram_model_scores_without_history():
    lm = build(CORPUS, order=1)
    assert lm.start() == ()
    assert lm.advance(lm.start(), THE) == ()
    # Raw counts: the 3, cat 3, sat 2, dog 1, a 1 of 10; n1 2, n2 1, n3 2: fallback.
    floor = (1 - (2 * (3 - 1.5) + (2 - 1.0) + 2 * (1 - 0.5)) / 10) / VOCAB
    assert lm.score([THE, CAT, ON]) == pytest.approx(
        math.log(1.5 / 10 + floor) + math.log(1.5 / 10 + floor) + math.log(floor)
    )


# --- input checks ---------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   \n ", ". , !", " (."])
def test_a_text_without_words_is_refused(text):
    with pytest.raises(ValueError, match="no word"):
        build(text)


def test_order_must_be_positive():
    with pytest.raises(ValueError, match="order"):
        build(CORPUS, order=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"lm_weight": -0.1}, "lm_weight"), ({"ilm_weight": -1.0}, "ilm_weight"),
     ({"lm_weight": math.inf}, "lm_weight"), ({"ilm_weight": math.nan}, "ilm_weight"),
     ({"mix": 0.0}, "mix"), ({"mix": 1.5}, "mix"), ({"mix": -0.5}, "mix")],
)  # fmt: skip
def test_bad_scorer_weights_are_refused(kwargs, match):
    args = {"lm_weight": 0.3, "ilm_weight": 0.1} | kwargs
    with pytest.raises(ValueError, match=match):
        DomainScorer(build(CORPUS), **args)


# --- the scorer -----------------------------------------------------------------------


def test_scorer_golden_value():
    lm = build(CORPUS)
    scorer = DomainScorer(lm, lm_weight=0.5, ilm_weight=0.2, mix=0.25)
    ilm = [-1.0, -0.5, -7.0, -2.0]
    doc = [1 / 3 + 0.5 * UNI[THE], 1.0, 1 / 3 + 0.5 * UNI[CAT], 1.0]  # "," and eot skip
    expected = sum(0.5 * math.log(0.25 * d + 0.75 * math.exp(i)) - 0.2 * i
                   for d, i, t in zip(doc, ilm, [THE, COMMA, CAT, EOT], strict=True)
                   if t not in (COMMA, EOT))  # fmt: skip
    assert scorer.score([THE, COMMA, CAT, EOT], ilm) == pytest.approx(expected)
    with pytest.raises(ValueError):
        scorer.score([THE, CAT], [-1.0])


def test_scorer_with_mix_one_is_the_document_model_minus_the_internal_one():
    lm = build(CORPUS)
    scorer = DomainScorer(lm, lm_weight=0.7, ilm_weight=0.3, mix=1.0)
    tokens, ilm = [A, CAT, MAT, SAT], [-2.0, -3.0, -1.0, -4.0]
    assert scorer.score(tokens, ilm) == pytest.approx(0.7 * lm.score(tokens) - 0.3 * sum(ilm))


# --- properties on random corpora -----------------------------------------------------

sentence = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6)
corpora = st.lists(sentence, min_size=1, max_size=5)
any_token = st.integers(0, len(TEXTS) + 1)  # past the tokenizer's vocabulary too
text_tokens = st.lists(any_token, max_size=8)


def corpus_text(sentences: list[list[str]]) -> str:
    return "\n".join(" ".join(s) for s in sentences)


@settings(max_examples=60, deadline=None)
@given(corpora, st.integers(1, 4), text_tokens)
def test_class_distribution_sums_to_one_over_the_vocabulary(sentences, order, tokens):
    lm = build(corpus_text(sentences), order)
    history = lm.start()
    for t in [*tokens, None]:
        probs = lm.class_probs(history)
        unseen = VOCAB - len(lm.classes)
        assert probs[BOS] == 0.0  # history only, never predicted
        assert probs[2:].sum() + unseen * probs[UNSEEN] == pytest.approx(1.0)
        assert (probs[2:] > 0).all() and probs[UNSEEN] > 0
        if t is not None:
            history = lm.advance(history, t)
            assert len(history) == order - 1


@settings(max_examples=60, deadline=None)
@given(corpora, st.integers(1, 4), text_tokens)
def test_distribution_is_per_token_and_one_for_skipped_tokens(sentences, order, tokens):
    lm = build(corpus_text(sentences), order)
    history = lm.start()
    for t in tokens:
        history = lm.advance(history, t)
    dist = lm.distribution(history)
    assert dist.shape == (len(TEXTS),)
    assert (dist > 0).all()
    for skipped in (COMMA, PERIOD, PAREN, BANG, EOT, NO_TIMESTAMPS):
        assert dist[skipped] == 1.0
        assert lm.logprob(history, skipped) == 0.0
        assert lm.advance(history, skipped) == history
    assert dist[THE] == dist[THE_CAP] and dist[CAT] == dist[CAT_CAPS]
    for t in range(FIRST_SPECIAL):
        assert math.log(dist[t]) == pytest.approx(lm.logprob(history, t))
    # Text tokens sum to one once each class is counted once (the, cat twice here).
    assert dist[[THE, CAT, SAT, ON, MAT, DOG, A]].sum() == pytest.approx(1.0)
    # Past the tokenizer's vocabulary: skipped, like a special.
    assert lm.logprob(history, len(TEXTS) + 5) == 0.0


@settings(max_examples=60, deadline=None)
@given(corpora, st.integers(1, 4), text_tokens)
def test_score_is_the_sum_of_logprobs_along_the_history(sentences, order, tokens):
    lm = build(corpus_text(sentences), order)
    history, total = lm.start(), 0.0
    for t in tokens:
        total += lm.logprob(history, t)
        history = lm.advance(history, t)
    assert lm.score(tokens) == pytest.approx(total)
    assert lm.score(tokens) <= 1e-12


@settings(max_examples=40, deadline=None)
@given(corpora, st.integers(1, 4), text_tokens, st.data())
def test_case_and_punctuation_of_the_document_do_not_matter(sentences, order, tokens, data):
    plain = build(corpus_text(sentences), order)
    commas = [[w + data.draw(st.sampled_from(["", ",", " ("])) for w in s] for s in sentences]
    shouted = build(corpus_text(commas).upper(), order)
    assert shouted.classes == plain.classes
    assert shouted.score(tokens) == pytest.approx(plain.score(tokens))
    cased = [{THE: THE_CAP, CAT: CAT_CAPS}.get(t, t) for t in tokens]
    assert plain.score(cased) == pytest.approx(plain.score(tokens))


@settings(max_examples=60, deadline=None)
@given(corpora, st.integers(1, 4), text_tokens, st.data())
def test_the_scorer_costs_a_token_at_most_its_mixture_share(sentences, order, tokens, data):
    lm = build(corpus_text(sentences), order)
    w = data.draw(st.floats(0.0, 3.0))
    scorer = DomainScorer(lm, lm_weight=w, ilm_weight=w, mix=0.5)
    ilm = data.draw(st.lists(st.floats(-30.0, 0.0), min_size=len(tokens), max_size=len(tokens)))
    history, expected = lm.start(), 0.0
    for t, lp in zip(tokens, ilm, strict=True):
        added = _score_from(scorer, history, t, lp)
        skipped = t >= FIRST_SPECIAL or t in (COMMA, PERIOD, PAREN, BANG)
        assert added == 0.0 if skipped else added >= w * math.log(0.5) - 1e-9
        expected += added
        history = lm.advance(history, t)
    assert scorer.score(tokens, ilm) == pytest.approx(expected, abs=1e-9)


def _score_from(scorer: DomainScorer, history: tuple[int, ...], token: int, ilm: float) -> float:
    """One token's addition after ``history``, from the scorer's documented formula."""
    lm = scorer.lm
    if token >= len(lm.token_class) or lm.token_class[token] == TRANSPARENT:
        return 0.0
    doc = math.exp(lm.logprob(history, token))
    mixed = math.log(scorer.mix * doc + (1 - scorer.mix) * math.exp(ilm))
    return scorer.lm_weight * mixed - scorer.ilm_weight * ilm


@settings(max_examples=40, deadline=None)
@given(corpora, st.floats(0.0, 3.0), st.floats(-30.0, 0.0))
def test_an_unused_token_costs_at_most_the_mixture_share(sentences, w, ilm):
    used = {w for s in sentences for w in s}
    lm = build(corpus_text(sentences), 2)
    scorer = DomainScorer(lm, lm_weight=w, ilm_weight=w, mix=0.5)
    for word in set(WORDS) - used:
        token = ID[" " + word]
        assert lm.token_class[token] == UNSEEN
        assert scorer.score([token], [ilm]) >= w * math.log(0.5) - 1e-9
    for token in (COMMA, PAREN, EOT, NO_TIMESTAMPS, len(TEXTS) + 3):
        assert scorer.score([token], [ilm]) == 0.0


def test_the_cache_hands_out_the_same_answer_twice():
    lm = build(CORPUS, order=3)
    h = lm.advance(lm.start(), THE)
    first = lm.distribution(h).copy()
    lm.distribution(h)[:] = 0.0  # a caller scribbling on its copy changes nothing
    np.testing.assert_array_equal(lm.distribution(h), first)


def test_a_stored_model_loads_with_the_same_probabilities(tmp_path):
    lm = build("The cat sat on a mat. The dog sat.\nA cat, the dog.", order=3)
    path = tmp_path / "lm.npz"
    save_lm(lm, path)
    again = load_lm(path, CLASSES)
    assert again.info == lm.info and again.order == lm.order
    start = lm.start()
    histories = [start, lm.advance(start, ID[" the"]),
                 lm.advance(lm.advance(start, ID[" cat"]), ID[" sat"])]  # fmt: skip
    for history in histories:
        np.testing.assert_allclose(again.class_probs(history), lm.class_probs(history))
    tokens = [ID[t] for t in (" The", " cat", " sat", ",", " on", " a", " mat", ".")]
    assert again.score(tokens) == pytest.approx(lm.score(tokens))


def test_a_partial_store_is_refused(tmp_path):
    path = tmp_path / "lm.npz"
    save_lm(build("The cat sat."), path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises((OSError, KeyError, ValueError)):
        load_lm(path, CLASSES)
