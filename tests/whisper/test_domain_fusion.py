"""A document's language model in the searches: ``DomainFusion`` in the torch beam search
(on the tiny random-weight Whisper of test_decoding.py) and ``NBest``'s re-ranking of
CTranslate2's hypotheses (on a fake CTranslate2 model)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from tiny_whisper import DIMS, PROMPT, SPECIALS, TOKENS, features, tiny_model

from ctxasr.context.ngram import DomainScorer, NgramLM, TokenClasses, build_domain_lm, token_key
from ctxasr.whisper.decoding import (
    BeamSearch,
    DomainFusion,
    SearchOptions,
    SuppressTokens,
)
from ctxasr.whisper.faster import Merged, NBest
from ctxasr.whisper.model import Whisper


@pytest.fixture(scope="module")
def model() -> Whisper:
    return tiny_model()


def sequence_logprobs(model: Whisper, audio: torch.Tensor, tokens: list[int],
                      filters=()) -> list[float]:  # fmt: skip
    """The model's log-probabilities of ``tokens`` after PROMPT, specials suppressed and
    ``filters`` applied, by one forward."""
    ids = torch.tensor([PROMPT + tokens])
    with torch.no_grad():
        logits = model.decoder(ids, model.decoder.new_cache(audio))[0, len(PROMPT) - 1 :]
    logits[:, list(SPECIALS)] = -math.inf
    for i in range(len(tokens)):
        for f in filters:
            f.apply(logits[i : i + 1], [tokens[:i]], i)
    lp = torch.log_softmax(logits, dim=-1)
    return [lp[i, t].item() for i, t in enumerate(tokens)]


# The tokenizer knows ids 0..9 (text 0..5, then eot, sot, no_speech, no_timestamps); the
# model's two timestamps (10, 11) lie past it, as unused ids past a real tokenizer do.
TEXTS = [" alpha", " Alpha", " beta", ",", " gamma", " delta"]
ALPHA, ALPHA_CAP, BETA, COMMA, GAMMA, DELTA = range(6)
FIRST_SPECIAL = TOKENS.eot
CLASSES = TokenClasses([token_key(t) for t in TEXTS] + [""] * 4, FIRST_SPECIAL)
ID = {t: i for i, t in enumerate(TEXTS)}
SENTENCE = (BETA, DELTA, ALPHA)  # the tiny model left alone says "gamma gamma ..."


def encode(texts: list[str]) -> list[list[int]]:
    """Word-level tokens; every punctuation mark is the "," token."""
    return [[ID.get(t, COMMA) for t in re.findall(r" ?\w+|[^\w\s]", s)] for s in texts]


def lm_of(text: str, order: int = 3) -> NgramLM:
    return build_domain_lm(text, encode, CLASSES, order)


DOCUMENT = "Beta delta, alpha.\nAlpha gamma beta. beta beta delta!\ngamma alpha, alpha delta"
REPEATED = "\n".join(["Beta delta alpha"] * 5)


def search(model, options, audio, domain=None, filters=()):
    return BeamSearch(model, TOKENS, options, [SuppressTokens(SPECIALS), *filters],
                      domain=domain).run(audio, PROMPT)  # fmt: skip


def random_logprobs(n: int, vocab: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(3 * torch.randn(n, vocab, generator=g), dim=-1)


def histories(lm: NgramLM, tokens: list[int]) -> list[tuple[int, ...]]:
    """The n-gram state before each token."""
    out, h = [], lm.start()
    for t in tokens:
        out.append(h)
        h = lm.advance(h, t)
    return out


# --- DomainFusion.bonus against DomainScorer.score ------------------------------------


@pytest.mark.parametrize(("lm_weight", "ilm_weight", "mix"),
                         [(0.5, 0.2, 0.5), (1.3, 0.0, 0.1), (0.0, 0.7, 1.0), (2.0, 2.0, 0.9)])  # fmt: skip
def test_dense_bonus_agrees_with_the_per_sequence_scorer(lm_weight, ilm_weight, mix):
    scorer = DomainScorer(lm_of(DOCUMENT), lm_weight, ilm_weight, mix)
    fusion = DomainFusion(scorer)
    rng = np.random.default_rng(0)
    for trial in range(20):
        tokens = rng.integers(0, DIMS.n_vocab, size=int(rng.integers(1, 8))).tolist()
        ilm = random_logprobs(len(tokens), DIMS.n_vocab, seed=trial)  # (T, V)
        states = histories(scorer.lm, tokens)
        dense = fusion.bonus(states, ilm)  # all rows at once
        assert dense.shape == (len(tokens), DIMS.n_vocab) and dense.dtype == torch.float32
        picked = [ilm[i, t].item() for i, t in enumerate(tokens)]
        along = sum(dense[i, t].item() for i, t in enumerate(tokens))
        assert along == pytest.approx(scorer.score(tokens, picked), rel=1e-5, abs=1e-4)
        # Every token of the last row, as the scorer would add it after the prefix.
        prefix, last = tokens[:-1], ilm[-1]
        before = scorer.score(prefix, picked[:-1])
        for v in range(DIMS.n_vocab):
            added = scorer.score([*prefix, v], [*picked[:-1], last[v].item()]) - before
            assert dense[-1, v].item() == pytest.approx(added, rel=1e-5, abs=1e-4)


def test_specials_and_ids_past_the_tokenizer_earn_nothing():
    scorer = DomainScorer(lm_of(DOCUMENT), 1.0, 0.5)
    fusion = DomainFusion(scorer)
    ilm = random_logprobs(3, DIMS.n_vocab, seed=1)
    lm = scorer.lm
    states = [lm.start(), lm.advance(lm.advance(lm.start(), BETA), DELTA),
              lm.advance(lm.start(), GAMMA)]  # fmt: skip
    dense = fusion.bonus(states, ilm)
    assert (dense[:, FIRST_SPECIAL:] == 0).all()  # eot .. timestamps (10 and 11 unknown)
    assert (dense[:, COMMA] == 0).all()  # punctuation is transparent
    assert (dense[:, [ALPHA, BETA, GAMMA, DELTA]] != 0).all()
    # " alpha" and " Alpha" are one class: with the same ILM they earn the same.
    same = ilm.clone()
    same[:, ALPHA_CAP] = same[:, ALPHA]
    dense = fusion.bonus(states, same)
    assert torch.equal(dense[:, ALPHA], dense[:, ALPHA_CAP])


def test_a_vocabulary_smaller_than_the_tokenizer_is_cut():
    scorer = DomainScorer(lm_of(DOCUMENT), 1.0, 0.5)
    ilm = random_logprobs(2, 5, seed=2)
    states = [scorer.lm.start(), scorer.lm.advance(scorer.lm.start(), BETA)]
    dense = DomainFusion(scorer).bonus(states, ilm)
    full = DomainFusion(scorer).bonus(states, torch.cat([ilm, ilm.new_zeros(2, 7)], dim=1))
    torch.testing.assert_close(dense, full[:, :5])


# --- the beam search with a document --------------------------------------------------


def test_zero_weights_change_nothing(model):
    audio = features(model, n_audio=2, seed=31)
    options = SearchOptions(beam_size=3, num_hypotheses=3, max_new_tokens=7)
    plain = search(model, options, audio)
    fused = search(model, options, audio, DomainFusion(DomainScorer(lm_of(REPEATED), 0.0, 0.0)))
    for p, f in zip(plain, fused, strict=True):
        assert [h.tokens for h in f.hypotheses] == [h.tokens for h in p.hypotheses]
        assert [h.logprob for h in f.hypotheses] == [h.logprob for h in p.hypotheses]
        assert [h.score for h in f.hypotheses] == [h.score for h in p.hypotheses]
        assert all(h.fusion == 0.0 for h in f.hypotheses)
        assert f.no_speech_prob == p.no_speech_prob


def test_a_heavy_document_model_pulls_its_sentence_in(model):
    audio = features(model, seed=32)
    options = SearchOptions(beam_size=3, num_hypotheses=3, max_new_tokens=6)
    plain = search(model, options, audio)[0].hypotheses[0]
    assert BETA not in plain.tokens and DELTA not in plain.tokens
    for ilm_weight in (1.0, 3.0):
        scorer = DomainScorer(lm_of(REPEATED), lm_weight=3.0, ilm_weight=ilm_weight)
        best = search(model, options, audio, DomainFusion(scorer))[0].hypotheses[0]
        # " alpha" or " Alpha": one class to the document's model.
        words = [CLASSES.keys[t] for t in best.tokens if CLASSES.keys[t]]
        assert words[:3] == [" beta", " delta", " alpha"]
        assert best.fusion > 0
        # The model's own score stays the model's.
        ended = len(best.tokens) < 6
        expected = sequence_logprobs(model, audio, [*best.tokens] + [TOKENS.eot] * ended)
        assert best.logprob == pytest.approx(sum(expected), abs=1e-4)


def internal_logprobs(model: Whisper, tokens: list[int]) -> torch.Tensor:
    """(T, V) the internal LM's log-probabilities before each token: the decoder on one
    zero audio frame, unfiltered."""
    silent = torch.zeros(1, 1, DIMS.n_audio_state)
    ids = torch.tensor([PROMPT + tokens[:-1]]) if tokens else torch.tensor([PROMPT])
    with torch.no_grad():
        logits = model.decoder(ids, model.decoder.new_cache(silent))[0, len(PROMPT) - 1 :]
    return torch.log_softmax(logits.float(), dim=-1)


@dataclass
class _EndWithout:
    """Force end-of-text on rows of ``length`` tokens without ``token``: on the audio
    below, item 0 ends early while item 1 goes on, so the caches drop an item in the
    middle of the search."""

    token: int
    length: int

    def apply(self, logits, generated, step) -> None:
        for row, tokens in enumerate(generated):
            if len(tokens) >= self.length and self.token not in tokens:
                logits[row, : TOKENS.eot] = -math.inf


def test_the_internal_model_cache_follows_the_beams(model):
    audio = features(model, n_audio=2, seed=33)
    scorer = DomainScorer(lm_of(DOCUMENT), lm_weight=1.5, ilm_weight=0.8)
    fusion = DomainFusion(scorer)
    options = SearchOptions(beam_size=3, num_hypotheses=3, max_new_tokens=7)
    ender = _EndWithout(DELTA, 4)
    found = search(model, options, audio, fusion, filters=[ender])
    # Item 0 ends early, item 1 runs to the end: beams reordered, an item dropped.
    assert all(len(h.tokens) < 7 for h in found[0].hypotheses)
    assert any(len(h.tokens) == 7 for h in found[1].hypotheses)
    assert len({h.tokens[:3] for r in found for h in r.hypotheses}) > 1
    for item, result in enumerate(found):
        assert len(result.hypotheses) == 3
        for h in result.hypotheses:
            ended = len(h.tokens) < 7
            tokens = [*h.tokens] + [TOKENS.eot] * ended
            ilm = internal_logprobs(model, tokens)
            dense = fusion.bonus(histories(scorer.lm, tokens), ilm)
            bonus = sum(dense[i, t].item() for i, t in enumerate(tokens))
            assert h.fusion == pytest.approx(bonus, abs=1e-3)
            model_lp = sequence_logprobs(model, audio[item : item + 1], tokens, [ender])
            assert h.logprob == pytest.approx(sum(model_lp), abs=1e-4)
            assert h.token_logprobs == pytest.approx(model_lp[: len(h.tokens)], abs=1e-4)
            assert h.score == pytest.approx((h.logprob + h.fusion) / max(1, len(h.tokens)),
                                            abs=1e-5)  # fmt: skip
        scores = [h.score for h in result.hypotheses]
        assert scores == sorted(scores, reverse=True)


def test_one_zero_frame_stands_for_a_zero_encoder_output(model):
    ids = torch.tensor([PROMPT + [BETA, DELTA, ALPHA]])
    with torch.no_grad():
        one = model.decoder(ids, model.decoder.new_cache(torch.zeros(1, 1, DIMS.n_audio_state)))
        full = model.decoder(ids, model.decoder.new_cache(torch.zeros(1, DIMS.n_audio_ctx,
                                                                      DIMS.n_audio_state)))  # fmt: skip
    torch.testing.assert_close(one, full, atol=1e-5, rtol=1e-5)


def test_sampling_leaves_the_document_out(model):
    audio = features(model, seed=34)
    options = SearchOptions(beam_size=1, temperature=1.0, num_hypotheses=3, max_new_tokens=5,
                            seed=7)  # fmt: skip
    fusion = DomainFusion(DomainScorer(lm_of(REPEATED), 5.0, 0.0))
    plain = search(model, options, audio)[0].hypotheses
    fused = search(model, options, audio, fusion)[0].hypotheses
    assert [h.tokens for h in fused] == [h.tokens for h in plain]


# --- NBest: re-ranking CTranslate2's hypotheses ---------------------------------------

SOT_SEQUENCE = [TOKENS.sot, TOKENS.no_timestamps]
ILM_PROB = {ALPHA: 0.2, ALPHA_CAP: 0.05, BETA: 0.1, COMMA: 0.3, GAMMA: 0.6, DELTA: 0.02}


@dataclass
class _Generated:
    sequences_ids: list[list[int]]
    scores: list[float]
    no_speech_prob: float


@dataclass
class _Aligned:
    text_token_probs: list[float]


@dataclass
class _FakeCT2:
    """``generate`` returns its hypotheses (best first, as many as asked) per prompt;
    ``align`` gives each text token a fixed internal-LM probability."""

    hypotheses: list[tuple[list[int], float]]
    generated: list[dict] = field(default_factory=list)
    aligned: list[tuple] = field(default_factory=list)
    owns_search: bool = False

    def generate(self, encoder_output, prompts, **kwargs):
        self.generated.append(kwargs)
        n = kwargs.get("num_hypotheses", 1)
        return [_Generated([list(s) for s, _ in self.hypotheses[:n]],
                           [score for _, score in self.hypotheses[:n]], 0.125 * (i + 1))
                for i, _ in enumerate(prompts)]  # fmt: skip

    def align(self, features, sot_sequence, texts, num_frames):
        self.aligned.append((features, list(sot_sequence), [list(t) for t in texts]))
        return [_Aligned([ILM_PROB[t] for t in texts[0]])]


ENCODER_OUTPUT = np.ones((1, 4, DIMS.n_audio_state), dtype=np.float32)
# CTranslate2's scores: summed log-prob / length ** length_penalty, best first.
HYPOTHESES = [([GAMMA, GAMMA, GAMMA], -0.5), ([GAMMA, COMMA, ALPHA, 11], -0.9),
              ([BETA, DELTA, ALPHA], -1.0), ([], -1.2), ([10, ALPHA_CAP, DELTA], -1.4)]  # fmt: skip


def expected_ranking(scorer, hypotheses, penalty):
    ranked = []
    for seq, score in hypotheses:
        ilm = [math.log(ILM_PROB[t]) if t < FIRST_SPECIAL else 0.0 for t in seq]
        length = max(1, len(seq)) ** penalty
        ranked.append(((score * length + scorer.score(seq, ilm)) / length, seq, score))
    ranked.sort(key=lambda r: -r[0])
    return [r[1] for r in ranked], [r[2] for r in ranked]


@pytest.mark.parametrize("penalty", [1.0, 0.5, None])
def test_nbest_reranks_with_the_document_and_keeps_the_model_scores(penalty):
    scorer = DomainScorer(lm_of(REPEATED), lm_weight=2.0, ilm_weight=1.0)
    fake = _FakeCT2(HYPOTHESES)
    nbest = NBest(fake)
    extra = {} if penalty is None else {"length_penalty": penalty}
    with nbest.domain(scorer, SOT_SEQUENCE), nbest.hypotheses(4):
        found = nbest.generate(ENCODER_OUTPUT, [[1, 2], [3]], beam_size=5, patience=1.0,
                               **extra)  # fmt: skip
    assert fake.generated == [{"beam_size": 5, "patience": 1.0, "num_hypotheses": 5,
                               "return_scores": True, **extra}]  # fmt: skip
    seqs, scores = expected_ranking(scorer, HYPOTHESES, 1.0 if penalty is None else penalty)
    assert seqs[0] == [BETA, DELTA, ALPHA]  # the document's sentence wins
    if penalty == 0.5:  # the length penalty reorders the tail: cut to 4, it shows
        assert seqs[3] == [10, ALPHA_CAP, DELTA]
    assert len(found) == 2
    for i, result in enumerate(found):
        assert isinstance(result, Merged)
        assert result.sequences_ids == seqs[:4]
        assert result.scores == scores[:4]  # the model's own scores, with their sequences
        assert result.no_speech_prob == 0.125 * (i + 1)
    # The internal LM: text tokens only, after the start-of-transcript sequence, on one
    # zero frame as wide as the encoder output.
    texts = [a[2] for a in fake.aligned]
    assert texts == 2 * [[[GAMMA, GAMMA, GAMMA]], [[GAMMA, COMMA, ALPHA]], [[BETA, DELTA, ALPHA]],
                         [[ALPHA_CAP, DELTA]]]  # fmt: skip
    for frame, sot, _ in fake.aligned:
        assert sot == SOT_SEQUENCE
        zero = np.asarray(frame)
        assert zero.shape == (1, 1, DIMS.n_audio_state) and not zero.any()


def test_nbest_without_a_document_model_ranks_as_the_model_does():
    scorer = DomainScorer(lm_of(REPEATED), lm_weight=0.0, ilm_weight=0.0)
    nbest = NBest(_FakeCT2(HYPOTHESES))
    with nbest.domain(scorer, SOT_SEQUENCE):
        found = nbest.generate(ENCODER_OUTPUT, [[1]], beam_size=5, length_penalty=1.0)
    assert found[0].sequences_ids == [[GAMMA, GAMMA, GAMMA]]  # one, as faster-whisper asks
    assert found[0].scores == [-0.5]


def test_nbest_leaves_greedy_and_sampling_alone():
    scorer = DomainScorer(lm_of(REPEATED), lm_weight=2.0, ilm_weight=1.0)
    fake = _FakeCT2(HYPOTHESES)
    nbest = NBest(fake)
    sampling = {"beam_size": 1, "num_hypotheses": 3, "sampling_topk": 0,
                "sampling_temperature": 0.4}  # fmt: skip
    with nbest.domain(scorer, SOT_SEQUENCE), nbest.hypotheses(4):
        found = nbest.generate(ENCODER_OUTPUT, [[1]], **sampling)
        greedy = nbest.generate(ENCODER_OUTPUT, [[1]], beam_size=1)
    assert fake.generated == [sampling, {"beam_size": 1}]
    assert not fake.aligned
    assert not isinstance(found[0], Merged) and not isinstance(greedy[0], Merged)
    assert found[0].sequences_ids == [s for s, _ in HYPOTHESES[:3]]
    assert greedy[0].sequences_ids == [HYPOTHESES[0][0]]


def test_nbest_without_a_domain_is_untouched():
    fake = _FakeCT2(HYPOTHESES)
    nbest = NBest(fake)
    with nbest.domain(None, SOT_SEQUENCE):
        one = nbest.generate(ENCODER_OUTPUT, [[1]], beam_size=5)
        with nbest.hypotheses(3):
            three = nbest.generate(ENCODER_OUTPUT, [[1]], beam_size=5)
    assert fake.generated == [{"beam_size": 5}, {"beam_size": 5, "num_hypotheses": 3}]
    assert not fake.aligned
    assert one[0].sequences_ids == [HYPOTHESES[0][0]]
    assert three[0].sequences_ids == [s for s, _ in HYPOTHESES[:3]]
    assert not isinstance(three[0], Merged)


def test_nbest_domain_block_restores_the_previous_one():
    scorer = DomainScorer(lm_of(REPEATED), lm_weight=2.0, ilm_weight=1.0)
    fake = _FakeCT2(HYPOTHESES)
    nbest = NBest(fake)
    with nbest.domain(scorer, SOT_SEQUENCE):
        with nbest.domain(None, SOT_SEQUENCE):
            inner = nbest.generate(ENCODER_OUTPUT, [[1]], beam_size=5)
        outer = nbest.generate(ENCODER_OUTPUT, [[1]], beam_size=5)
    after = nbest.generate(ENCODER_OUTPUT, [[1]], beam_size=5)
    assert inner[0].sequences_ids == after[0].sequences_ids == [HYPOTHESES[0][0]]
    assert outer[0].sequences_ids == [[BETA, DELTA, ALPHA]]
    assert fake.generated[1]["num_hypotheses"] == 5 and "num_hypotheses" not in fake.generated[2]


def test_nbest_hands_a_search_it_does_not_own_one_fusion_per_document():
    fake = _FakeCT2(HYPOTHESES, owns_search=True)
    nbest = NBest(fake)
    first = DomainScorer(lm_of(REPEATED), lm_weight=2.0, ilm_weight=1.0)
    second = DomainScorer(lm_of(DOCUMENT), lm_weight=2.0, ilm_weight=1.0)
    for scorer in (first, first, second):
        with nbest.domain(scorer, SOT_SEQUENCE, in_search=True):
            nbest.generate(ENCODER_OUTPUT, [[1]], beam_size=4)
    fusions = [kwargs.pop("domain") for kwargs in fake.generated]
    assert all(isinstance(f, DomainFusion) for f in fusions)
    assert fusions[0] is fusions[1] and fusions[0].scorer is first
    assert fusions[2].scorer is second
    assert fake.generated == 3 * [{"beam_size": 4}]  # the torch search ranks by itself
    assert not fake.aligned


def test_nbest_reranks_an_owned_search_unless_asked_to_fuse_in_it():
    # The torch backend's default: its n-best re-ranked as CTranslate2's, no in-search fusion.
    fake = _FakeCT2(HYPOTHESES, owns_search=True)
    nbest = NBest(fake)
    scorer = DomainScorer(lm_of(REPEATED), lm_weight=2.0, ilm_weight=1.0)
    with nbest.domain(scorer, SOT_SEQUENCE):
        found = nbest.generate(ENCODER_OUTPUT, [[1]], beam_size=4)
    assert "domain" not in fake.generated[0] and fake.generated[0]["num_hypotheses"] == 4
    assert isinstance(found[0], Merged) and fake.aligned
