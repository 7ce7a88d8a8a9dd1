"""The beam search itself, on a tiny random-weight Whisper with a 12-token vocabulary."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from tiny_whisper import PROMPT, SPECIALS, TOKENS, features, tiny_model

from ctxasr.whisper.decoding import (
    BeamSearch,
    ContextFusion,
    SearchOptions,
    SuppressAtBegin,
    SuppressTokens,
    TimestampRules,
)
from ctxasr.whisper.model import Whisper


@pytest.fixture(scope="module")
def model() -> Whisper:
    return tiny_model()


def sequence_logprobs(model: Whisper, audio: torch.Tensor, tokens: list[int]) -> list[float]:
    """Log-probabilities of ``tokens`` after PROMPT, specials suppressed, by one forward."""
    ids = torch.tensor([PROMPT + tokens])
    with torch.no_grad():
        logits = model.decoder(ids, model.decoder.new_cache(audio))[0, len(PROMPT) - 1 :]
    logits[:, list(SPECIALS)] = -math.inf
    lp = torch.log_softmax(logits, dim=-1)
    return [lp[i, t].item() for i, t in enumerate(tokens)]


def search(model, options, audio, scorer=None, filters=None):
    if filters is None:
        filters = [SuppressTokens(SPECIALS)]
    return BeamSearch(model, TOKENS, options, filters, scorer).run(audio, PROMPT)


def test_a_beam_wider_than_the_tree_finds_the_best_sequence(model):
    audio = features(model)
    found = search(model, SearchOptions(beam_size=60, max_new_tokens=3), audio)[0]
    best = max(
        (seq for n in range(3) for seq in itertools.product(range(6), repeat=n)),
        key=lambda seq: sum(sequence_logprobs(model, audio, [*seq, TOKENS.eot])) / max(1, len(seq)),
    )
    # Sequences that run out of room (3 tokens, no end-of-text) compete too.
    full = max(itertools.product(range(6), repeat=3),
               key=lambda seq: sum(sequence_logprobs(model, audio, list(seq))))  # fmt: skip
    score_best = sum(sequence_logprobs(model, audio, [*best, TOKENS.eot])) / max(1, len(best))
    score_full = sum(sequence_logprobs(model, audio, list(full))) / 3
    expected = best if score_best >= score_full else full
    assert found.hypotheses[0].tokens == tuple(expected)
    assert found.hypotheses[0].score == pytest.approx(max(score_best, score_full), abs=1e-5)


def test_hypotheses_carry_their_exact_log_probabilities(model):
    audio = features(model, seed=3)
    found = search(model, SearchOptions(beam_size=4, num_hypotheses=3, max_new_tokens=6), audio)
    hyps = found[0].hypotheses
    assert len(hyps) == 3
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    for h in hyps:
        ended = len(h.tokens) < 6
        expected = sequence_logprobs(model, audio, [*h.tokens] + ([TOKENS.eot] if ended else []))
        assert h.logprob == pytest.approx(sum(expected), abs=1e-4)
        assert h.token_logprobs == pytest.approx(expected[: len(h.tokens)], abs=1e-4)
        assert h.fusion == 0.0
        assert h.score == pytest.approx(h.logprob / max(1, len(h.tokens)), abs=1e-6)


def test_greedy_takes_the_likeliest_token_each_step(model):
    audio = features(model, seed=4)
    found = search(model, SearchOptions(beam_size=1, max_new_tokens=8), audio)[0].hypotheses[0]
    tokens: list[int] = []
    for _ in range(8):
        ids = torch.tensor([PROMPT + tokens])
        with torch.no_grad():
            logits = model.decoder(ids, model.decoder.new_cache(audio))[0, -1]
        logits[list(SPECIALS)] = -math.inf
        nxt = int(logits.argmax())
        if nxt == TOKENS.eot:
            break
        tokens.append(nxt)
    assert found.tokens == tuple(tokens)


def test_items_of_a_batch_are_searched_independently(model):
    audio = features(model, n_audio=3, seed=5)
    options = SearchOptions(beam_size=3, num_hypotheses=2, max_new_tokens=7)
    together = search(model, options, audio)
    for i in range(3):
        alone = search(model, options, audio[i : i + 1])[0]
        assert [h.tokens for h in together[i].hypotheses] == [h.tokens for h in alone.hypotheses]
        assert together[i].no_speech_prob == pytest.approx(alone.no_speech_prob, abs=1e-6)


def test_suppressed_tokens_never_appear_and_blank_not_first(model):
    audio = features(model, seed=6)
    filters = [SuppressTokens((*SPECIALS, 2)), SuppressAtBegin((3, TOKENS.eot))]
    found = search(model, SearchOptions(beam_size=4, num_hypotheses=4, max_new_tokens=6),
                   audio, filters=filters)  # fmt: skip
    for h in found[0].hypotheses:
        assert 2 not in h.tokens
        assert h.tokens and h.tokens[0] != 3


def test_the_kv_cache_follows_reordered_beams(model):
    audio = features(model, n_audio=2, seed=7)
    rows = torch.tensor([[7, 9, 1, 2], [7, 9, 3, 4], [7, 9, 5, 0], [7, 9, 2, 2]])
    cache = model.decoder.new_cache(audio)
    cache.reorder(torch.tensor([0, 0, 1, 1]))  # two beams per item, grouped
    with torch.no_grad():
        model.decoder(rows[:, :3], cache)
        # Shuffle rows within their items (as a beam step does), then one more token.
        order = torch.tensor([1, 1, 3, 2])
        cache.reorder(order)
        step = model.decoder(rows[order, 3:], cache)[:, -1]
        # The same rows decoded from scratch, each with its own audio.
        expected = torch.cat([
            model.decoder(rows[r : r + 1], model.decoder.new_cache(audio[r // 2 : r // 2 + 1]))
            for r in order.tolist()])[:, -1]  # fmt: skip
    # Rows 2 and 3 hold (row 3, row 2): audio item 1 for both, in swapped order.
    torch.testing.assert_close(step, expected, atol=1e-4, rtol=1e-4)


def test_uneven_beams_read_their_own_audio(model):
    audio = features(model, n_audio=2, seed=8)
    cache = model.decoder.new_cache(audio)
    cache.reorder(torch.tensor([0, 1, 1]))  # one row for item 0, two for item 1
    tokens = torch.tensor([[7, 1], [7, 2], [7, 3]])
    with torch.no_grad():
        out = model.decoder(tokens, cache)
        alone = [model.decoder(tokens[r : r + 1], model.decoder.new_cache(audio[a : a + 1]))
                 for r, a in enumerate([0, 1, 1])]  # fmt: skip
    torch.testing.assert_close(out, torch.cat(alone), atol=1e-4, rtol=1e-4)


class _Graph:
    """A one-phrase context graph with hand-checkable scores (the real one is tested
    in tests/context/test_graph.py): phrase (4, 5), 1.0 per matched token."""

    root = 0

    def __len__(self) -> int:
        return 1

    def next_tokens(self, state):
        return {0: (4,), 1: (5,)}[state]

    def forward_one_step(self, state, token):
        # States: 0 root (phi 0), 1 after "4" (phi 1). Completing "4 5" earns its last
        # token (+1) and locks the phrase in: phi(45) - phi(4) + output 2 - phi(45) = +1.
        if state == 1 and token == 5:
            return 1.0, 0, (0,)
        if token == 4:
            return (1.0 if state == 0 else 0.0), 1, ()  # "4 4": the second 4 restarts
        return -float(state), 0, ()  # an abandoned "4" gives its bonus back

    def finalize(self, state):
        return -float(state)


def test_fusion_pulls_a_term_in_and_its_bonus_is_kept_only_when_finished(model):
    audio = features(model, seed=9)
    options = SearchOptions(beam_size=3, num_hypotheses=3, max_new_tokens=6)
    plain = search(model, options, audio)[0].hypotheses[0]
    fused = search(model, options, audio, ContextFusion(_Graph(), 5.0, TOKENS.eot))[0]
    best = fused.hypotheses[0]
    pairs = [best.tokens[i : i + 2] for i in range(len(best.tokens) - 1)]
    assert (4, 5) in pairs and (4, 5) not in [plain.tokens[i : i + 2]
                                             for i in range(len(plain.tokens) - 1)]  # fmt: skip
    for h in fused.hypotheses:
        # Kept: 2.0 per completed (4, 5); an unfinished trailing 4 was taken back.
        completed = sum(1 for i in range(len(h.tokens) - 1) if h.tokens[i : i + 2] == (4, 5))
        assert h.fusion == pytest.approx(5.0 * 2.0 * completed)
        expected = sequence_logprobs(model, audio,
                                     [*h.tokens] + ([TOKENS.eot] if len(h.tokens) < 6 else []))  # fmt: skip
        assert h.logprob == pytest.approx(sum(expected), abs=1e-4)  # the model's own score
        assert h.score == pytest.approx((h.logprob + h.fusion) / max(1, len(h.tokens)), abs=1e-6)


def test_zero_weight_fusion_changes_nothing(model):
    audio = features(model, seed=10)
    options = SearchOptions(beam_size=3, num_hypotheses=2, max_new_tokens=6)
    plain = search(model, options, audio)[0]
    fused = search(model, options, audio, ContextFusion(_Graph(), 0.0, TOKENS.eot))[0]
    assert [h.tokens for h in fused.hypotheses] == [h.tokens for h in plain.hypotheses]


def test_sampling_is_reproducible_with_a_seed(model):
    audio = features(model, seed=11)
    options = SearchOptions(beam_size=1, temperature=1.0, num_hypotheses=4, max_new_tokens=6,
                            seed=123)  # fmt: skip
    first = search(model, options, audio)[0].hypotheses
    again = search(model, options, audio)[0].hypotheses
    assert len(first) == 4
    assert [h.tokens for h in first] == [h.tokens for h in again]


def test_options_are_checked():
    with pytest.raises(ValueError, match="num_hypotheses"):
        SearchOptions(beam_size=2, num_hypotheses=3)
    with pytest.raises(ValueError, match="beam_size 1"):
        SearchOptions(beam_size=2, temperature=0.5)
    with pytest.raises(ValueError, match="fusion weight"):
        ContextFusion(_Graph(), -1.0, TOKENS.eot)


# Timestamp rules, one step at a time: which tokens stay allowed after a history.
def allowed(history: list[int], max_initial: int | None = 1) -> set[int]:
    logits = torch.zeros(1, TOKENS.n_vocab)
    TimestampRules(TOKENS, max_initial).apply(logits, [history], len(history))
    return {i for i in range(TOKENS.n_vocab) if logits[0, i] > -math.inf}


def test_timestamp_rules_at_the_start_allow_only_early_timestamps():
    assert allowed([], max_initial=0) == {10}
    assert allowed([], max_initial=None) == {10, 11}


def test_after_the_opening_timestamp_text_follows():
    # The first timestamp counts as a pair (nothing before it): no timestamp next.
    assert allowed([10]) == {0, 1, 2, 3, 4, 5, 6, 7, 8}


def test_after_a_closed_pair_no_timestamp_may_follow():
    assert allowed([10, 1, 11, 11]) == {0, 1, 2, 3, 4, 5, 6, 7, 8}


def test_after_text_then_a_timestamp_only_a_timestamp_or_the_end():
    # [10, 1, 11]: a lone timestamp after text; next a timestamp no earlier than 11, or
    # end-of-text and the other specials (this filter alone does not suppress those).
    assert allowed([10, 1, 11]) == {6, 7, 8, 11}


def test_timestamps_take_over_when_likelier_than_any_text_token():
    logits = torch.full((1, TOKENS.n_vocab), -5.0)
    logits[0, 10:] = 0.0  # both timestamps far likelier than any text token
    TimestampRules(TOKENS, None).apply(logits, [[10, 1]], 2)
    assert (logits[0, :10] == -math.inf).all()


def test_generate_searches_items_with_different_prompts_apart(model):
    from ctxasr.whisper.backend import TorchWhisper
    from ctxasr.whisper.weights import LoadedWhisper

    backend = TorchWhisper(LoadedWhisper(model, "test", "<tiny>", (), (), ()), TOKENS)
    audio = features(model, n_audio=2, seed=12)
    prompts = [PROMPT, [3, 4, *PROMPT]]  # the second with previous text before sot
    both = backend.generate(audio, prompts, beam_size=2, suppress_tokens=list(SPECIALS))
    alone = [backend.generate(audio[i : i + 1], [p], beam_size=2,
                              suppress_tokens=list(SPECIALS))[0]
             for i, p in enumerate(prompts)]  # fmt: skip
    assert [r.sequences_ids for r in both] == [r.sequences_ids for r in alone]
    for a, b in zip(both, alone, strict=True):
        assert a.scores == pytest.approx(b.scores)
