"""The MADEON decoder: speech prefixing, padding, decoding state and the loss."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from ctxasr.madeon.config import ModelConfig
from ctxasr.madeon.decode import beam_search
from ctxasr.madeon.model import Madeon

VARIANTS = [("mamba", "none"), ("mamba", "serial"), ("mamba", "parallel"),
            ("mamba2", "parallel"), ("mamba2", "serial"), ("transformer", "none")]  # fmt: skip


def tiny(kind: str, prefix: str, **kw) -> Madeon:
    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, prefix=prefix, d_model=32, layers=2, headdim=16, heads=4,
                      dropout=0.0, chunk=4, vocab=40, max_len=64, **kw)  # fmt: skip
    return Madeon(cfg).eval().double()


def ids_of(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 40, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("kind", "prefix"), VARIANTS)
def test_prefill_then_steps_equal_the_parallel_forward(kind, prefix):
    model, ids, P = tiny(kind, prefix), ids_of(17, 1), 11
    with torch.no_grad():
        full = model(ids, torch.tensor([P])).log_softmax(-1)  # (1, 17, V)
    logp, states = model.prefill(ids[:, :P])
    assert torch.allclose(logp, full[:, P - 1], atol=1e-9)
    for t in range(P, ids.shape[1]):
        logp, states = model.step(ids[0, t : t + 1], states, t)
        assert torch.allclose(logp, full[:, t], atol=1e-9), t


@pytest.mark.parametrize(("kind", "prefix"), VARIANTS)
def test_a_batch_equals_each_sequence_alone(kind, prefix):
    model = tiny(kind, prefix)
    a, b = ids_of(15, 2), ids_of(9, 3)
    ids = torch.zeros(2, 15, dtype=torch.long)
    ids[0], ids[1, :9] = a[0], b[0]
    with torch.no_grad():
        both = model(ids, torch.tensor([10, 4]))
        alone = [model(a, torch.tensor([10])), model(b, torch.tensor([4]))]
    assert torch.allclose(both[0], alone[0][0], atol=1e-9)
    assert torch.allclose(both[1, :9], alone[1][0], atol=1e-9)  # padding never leaks in


@pytest.mark.parametrize(("kind", "prefix"), VARIANTS)
def test_the_prefix_is_read_both_ways_only_with_prefixing_and_the_text_left_to_right(kind, prefix):
    model, ids, P = tiny(kind, prefix), ids_of(16, 4), 10
    later_speech, later_text = ids.clone(), ids.clone()
    later_speech[0, P - 2] = (ids[0, P - 2] + 1) % 40
    later_text[0, 13] = (ids[0, 13] + 1) % 40
    with torch.no_grad():
        base = model(ids, torch.tensor([P]))
        speech = model(later_speech, torch.tensor([P]))
        text = model(later_text, torch.tensor([P]))
    earlier = (base[0, : P - 2] - speech[0, : P - 2]).abs().max()
    assert (earlier > 1e-6) == (prefix != "none")
    assert torch.allclose(base[0, :13], text[0, :13], atol=1e-12)  # text stays causal


def test_the_loss_scores_the_text_and_eos_only():
    model, ids, P = tiny("mamba", "parallel"), ids_of(14, 5), 8
    lengths = torch.tensor([12])  # two padding positions at the end
    loss = model.loss(ids, torch.tensor([P]), lengths)
    with torch.no_grad():
        logits = model(ids, torch.tensor([P]))
    want = F.cross_entropy(logits[0, P - 1 : 11], ids[0, P:12])
    assert torch.allclose(loss, want)


def test_beam_search_writes_only_allowed_tokens_and_beam_1_is_greedy():
    model, P = tiny("mamba", "serial"), ids_of(9, 6)[0].tolist()
    banned = torch.zeros(40, dtype=torch.bool)
    banned[:20] = True  # "speech pieces"
    eos = 39
    out = beam_search(model, P, eos, banned, max_new_tokens=12, beam_size=1)
    assert all(20 <= t < 39 for t in out)
    # greedy by hand
    logp, states, want = *model.prefill(torch.tensor([P])), []
    for t in range(12):
        token = int(logp[0].masked_fill(banned, -float("inf")).argmax())
        if token == eos:
            break
        want.append(token)
        logp, states = model.step(torch.tensor([token]), states, len(P) + t)
    assert out == want
    wide = beam_search(model, P, eos, banned, max_new_tokens=12, beam_size=4)
    assert all(20 <= t < 39 for t in wide)


def test_a_hook_steers_the_search():
    model, P = tiny("mamba2", "parallel"), ids_of(9, 7)[0].tolist()
    banned = torch.zeros(40, dtype=torch.bool)

    class Favour:
        def adjust(self, tokens, logp):
            logp[25] += 100.0

    out = beam_search(model, P, 39, banned, max_new_tokens=5, beam_size=2, hook=Favour())
    assert out == [25] * 5


def test_the_transformer_decodes_with_unique_page_sparse_attention():
    from ctxasr.attention.unique import PageSparseOptions

    model, P = tiny("transformer", "none"), ids_of(60, 8)[0].tolist()
    banned = torch.zeros(40, dtype=torch.bool)
    dense = beam_search(model, P, 39, banned, max_new_tokens=4, beam_size=2)
    # every page kept: the same search, exactly
    model.use_page_sparse_attention(PageSparseOptions(page_size=4, top_k=64))
    assert beam_search(model, P, 39, banned, max_new_tokens=4, beam_size=2) == dense
    # 3 of the cache's 16 pages a step: it runs, and the step's log-probabilities stay close
    _, states = model.prefill(torch.tensor([P]))
    model.use_page_sparse_attention(PageSparseOptions(page_size=4, top_k=1, recent_pages=1))
    sparse, _ = model.step(torch.tensor([25]), states, len(P))
    model.use_page_sparse_attention(None)
    exact, _ = model.step(torch.tensor([25]), states, len(P))
    assert not torch.equal(sparse, exact)
    assert F.cosine_similarity(sparse.exp(), exact.exp()).item() > 0.9


def test_config_checks():
    with pytest.raises(ValueError, match="prefix"):
        ModelConfig(kind="transformer", prefix="serial")
    with pytest.raises(ValueError, match="kind"):
        ModelConfig(kind="rnn")
    with pytest.raises(ValueError, match="vocab"):
        Madeon(ModelConfig())
    cfg = ModelConfig(kind="mamba2", vocab=10)
    assert cfg.state == 64 and dataclasses.replace(cfg, kind="mamba").state == 16
    assert ModelConfig.from_json(cfg.to_json()) == cfg
