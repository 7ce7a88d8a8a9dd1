"""UNIQUE page-sparse attention: the page summaries against statistics from scratch, the
page selection against brute force, the sparse step against dense attention restricted to
the chosen pages, the soft training mask at low temperature, and generation through
transformers' attention interface against dense SDPA."""

from __future__ import annotations

import inspect
import math

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxasr.attention.unique import (
    PageSparseOptions,
    PageSummaries,
    page_sparse_attention,
    register_unique_attention,
    select_pages,
    soft_page_attention,
    soft_page_mask,
    unique_attention,
)


def _qkv(B: int, Hq: int, Hkv: int, Tq: int, T: int, D: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, Hq, Tq, D, generator=g), torch.randn(B, Hkv, T, D, generator=g),
            torch.randn(B, Hkv, T, D, generator=g))  # fmt: skip


def _summaries(k: torch.Tensor, page_size: int) -> PageSummaries:
    s = PageSummaries(page_size)
    s.append(k)
    return s


def _scratch(keys: torch.Tensor, page_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each page's mean and population std, one page at a time."""
    stats = [torch.std_mean(keys[:, :, p : p + page_size], dim=2, unbiased=False)
             for p in range(0, keys.shape[2], page_size)]  # fmt: skip
    return torch.stack([m for _, m in stats], 2), torch.stack([s for s, _ in stats], 2)


def _brute_pages(q, k, options: PageSparseOptions, scale: float) -> list[list[set[int] | None]]:
    """Per batch row and selecting head: the sink pages, the recent pages and the top-k of
    the pages between them, each page scored by the formula on its own keys, a row's scores
    turned into shares (softmax) and the shares of the selection's rows (query heads and
    queries) summed. None where the k-th and the (k+1)-th are within 1e-4 (a tie)."""
    ps, o = options.page_size, options
    B, Hq, Tq, _ = q.shape
    Hkv, T = k.shape[1], k.shape[2]
    P, g = -(-T // ps), Hq // Hkv
    mid = range(o.sink_pages, P - o.recent_pages)
    out = []
    for b in range(B):
        row = []
        for h in range(Hkv if o.share_pages else Hq):
            heads = range(h * g, h * g + g) if o.share_pages else [h]
            total = torch.zeros(len(mid), dtype=torch.float64)
            for x in heads:
                for t in range(Tq):
                    scores = []
                    for p in mid:
                        page = k[b, x // g, p * ps : p * ps + ps].double()
                        std, mean = torch.std_mean(page, 0, unbiased=False)
                        qx = q[b, x, t].double()
                        scores.append(scale * (qx @ mean + o.std_weight * (qx.abs() @ std)))
                    total += torch.stack(scores).softmax(0)
            ranked = total.argsort(descending=True).tolist()
            kth, nxt = total.log()[ranked[o.top_k - 1]], total.log()[ranked[o.top_k]]
            kept = set(range(o.sink_pages)) | set(range(P - o.recent_pages, P))
            top = {mid[i] for i in ranked[: o.top_k]}
            row.append(kept | top if kth - nxt > 1e-4 else None)
        out.append(row)
    return out


def _restricted_dense(q, k, v, pages: torch.Tensor, page_size: int, mask=None):
    """Dense causal attention over the tokens of ``pages (B, Hs, n)`` only."""
    B, Hq, Tq, _ = q.shape
    T = k.shape[2]
    tokens = (pages[..., None] * page_size + torch.arange(page_size)).flatten(2).clamp(max=T - 1)
    keep = torch.zeros(B, pages.shape[1], T, dtype=torch.bool).scatter_(2, tokens, True)
    keep = keep.repeat_interleave(Hq // pages.shape[1], 1)[:, :, None]  # (B, Hq, 1, T)
    keep = keep & (torch.arange(T) <= (T - Tq + torch.arange(Tq))[:, None])
    if mask is not None:
        keep = keep & mask
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, enable_gqa=True)


# --- the page summaries ---------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(page_size=st.integers(1, 9), sizes=st.lists(st.integers(0, 23), min_size=1, max_size=8),
       seed=st.integers(0, 2**16))  # fmt: skip
def test_summaries_equal_statistics_from_scratch_after_any_appends(page_size, sizes, seed):
    keys = torch.randn(2, 3, sum(sizes), 5, generator=torch.Generator().manual_seed(seed)) * 3
    s, done = PageSummaries(page_size), 0
    for n in sizes:
        s.append(keys[:, :, done : done + n])
        done += n
        assert s.length == done and s.pages == -(-done // page_size)
        if done:
            mean, std = _scratch(keys[:, :, :done], page_size)
            torch.testing.assert_close(s.mean, mean, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(s.std, std, atol=1e-5, rtol=1e-5)


def test_full_pages_are_never_summarised_again():
    keys = torch.randn(1, 2, 70, 4)
    s = PageSummaries(8)
    s.sync(keys[:, :, :60])  # 7 full pages and 4 keys of the 8th
    before = s.mean[:, :, :7].clone()
    changed = keys.clone()
    changed[:, :, :56] = 1e6  # full pages summarised again would show it
    s.sync(changed)
    assert torch.equal(s.mean[:, :, :7], before)
    torch.testing.assert_close(s.mean[:, :, 7:], _scratch(keys[:, :, 56:], 8)[0])


def test_sync_follows_a_growing_cache_a_beam_reorder_and_a_new_sequence():
    keys = torch.randn(1, 2, 21, 4)
    s = PageSummaries(4)
    s.sync(keys[:, :, :13])
    s.sync(keys[:, :, :14])
    assert s.length == 14
    # beam search: the one row repeated into three, which then grow apart
    beams = torch.cat([keys[:, :, :14].expand(3, -1, -1, -1), torch.randn(3, 2, 3, 4)], dim=2)
    s.sync(beams)
    torch.testing.assert_close(s.mean, _scratch(beams, 4)[0])
    reordered = torch.cat([beams[[2, 0, 0]], torch.randn(3, 2, 1, 4)], dim=2)
    s.sync(reordered)
    torch.testing.assert_close(s.std, _scratch(reordered, 4)[1])
    other = torch.randn(3, 2, 30, 4)  # a longer, different sequence: started again
    s.sync(other)
    torch.testing.assert_close(s.mean, _scratch(other, 4)[0])
    s.sync(other[:, :, :5])  # shorter: started again
    assert s.length == 5
    torch.testing.assert_close(s.mean, _scratch(other[:, :, :5], 4)[0])


def test_appending_keys_of_another_shape_is_an_error():
    s = _summaries(torch.randn(1, 2, 9, 4), 4)
    with pytest.raises(ValueError, match="do not continue"):
        s.append(torch.randn(1, 3, 1, 4))


# --- the decode step ------------------------------------------------------------------


@pytest.mark.parametrize("Tq", [1, 3])
@pytest.mark.parametrize(("Hq", "Hkv"), [(4, 4), (6, 2), (9, 3)])
def test_top_k_covering_every_page_is_dense_attention(Hq, Hkv, Tq):
    q, k, v = _qkv(2, Hq, Hkv, Tq, 37, 16)
    options = PageSparseOptions(page_size=4, top_k=7, sink_pages=1, recent_pages=2)  # 10 pages
    out = page_sparse_attention(q, k, v, _summaries(k, 4), options, scale=0.3)
    causal = torch.arange(37) <= (37 - Tq + torch.arange(Tq))[:, None]
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=causal, scale=0.3, enable_gqa=True)
    torch.testing.assert_close(out, dense)


@settings(max_examples=25, deadline=None)
@given(share=st.booleans(), Tq=st.integers(1, 3), T=st.integers(30, 90),
       top_k=st.integers(1, 4), sinks=st.integers(0, 2), recent=st.integers(1, 3),
       std_weight=st.sampled_from([0.0, 1.0, 2.5]), seed=st.integers(0, 2**16))  # fmt: skip
def test_the_chosen_pages_are_the_top_k_by_score_plus_sinks_and_recent_ones(
    share, Tq, T, top_k, sinks, recent, std_weight, seed
):
    options = PageSparseOptions(page_size=4, top_k=top_k, sink_pages=sinks, recent_pages=recent,
                                std_weight=std_weight, share_pages=share)  # fmt: skip
    q, k, _ = _qkv(2, 6, 2, Tq, T, 8, seed)
    if -(-T // 4) <= options.kept_pages:
        return
    chosen = select_pages(q, _summaries(k, 4), options, scale=0.35)
    assert chosen.shape == (2, 2 if share else 6, options.kept_pages)
    for b, row in enumerate(_brute_pages(q, k, options, 0.35)):
        for h, expected in enumerate(row):
            if expected is not None:  # (None: a near tie, either page is right)
                assert set(chosen[b, h].tolist()) == expected


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("Tq", [1, 3])
def test_a_sparse_step_is_dense_attention_over_the_chosen_pages(share, Tq):
    q, k, v = _qkv(2, 6, 2, Tq, 61, 8, seed=3)
    options = PageSparseOptions(page_size=4, top_k=3, share_pages=share)
    s = _summaries(k, 4)
    pages = select_pages(q, s, options)
    mask = torch.rand(2, 1, Tq, 61, generator=torch.Generator().manual_seed(1)) > 0.3
    mask[..., -3:] = True
    for m in (None, mask):
        out = page_sparse_attention(q, k, v, s, options, mask=m)
        torch.testing.assert_close(out, _restricted_dense(q, k, v, pages, 4, m))


def test_a_sparse_step_reads_a_cache_in_any_layout():
    q, k, v = _qkv(2, 6, 2, 1, 61, 8, seed=4)
    options = PageSparseOptions(page_size=4, top_k=3)
    s = _summaries(k, 4)
    expected = page_sparse_attention(q, k, v, s, options)
    big_k, big_v = torch.randn(2, 2, 90, 8), torch.randn(2, 2, 90, 8)
    big_k[:, :, :61], big_v[:, :, :61] = k, v  # a slice of a longer buffer
    seq_k, seq_v = k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()  # (B, T, H, D)
    for layout_k, layout_v in ((big_k[:, :, :61], big_v[:, :, :61]),
                               (seq_k.transpose(1, 2), seq_v.transpose(1, 2))):  # fmt: skip
        torch.testing.assert_close(page_sparse_attention(q, layout_k, layout_v, s, options),
                                   expected)  # fmt: skip


def test_smollm2_shapes_grouped_query_attention():
    q, k, v = _qkv(2, 9, 3, 1, 5000, 64)
    options = PageSparseOptions()
    s = _summaries(k, options.page_size)
    assert s.mean.shape == s.std.shape == (2, 3, 79, 64)
    assert page_sparse_attention(q, k, v, s, options).shape == (2, 9, 1, 64)
    assert select_pages(q, s, options).shape == (2, 3, options.kept_pages)
    per_head = PageSparseOptions(share_pages=False)
    assert select_pages(q, s, per_head).shape == (2, 9, options.kept_pages)


def test_summaries_of_another_length_are_an_error():
    q, k, v = _qkv(1, 2, 2, 1, 20, 4)
    with pytest.raises(ValueError, match="cover 19 keys"):
        page_sparse_attention(q, k, v, _summaries(k[:, :, :19], 4), PageSparseOptions())


# --- the soft mask for training -------------------------------------------------------


@pytest.mark.parametrize("share", [True, False])
def test_the_soft_mask_at_low_temperature_is_the_hard_selection(share):
    T, ps = 48, 4
    q, k, v = _qkv(1, 4, 2, T, T, 8, seed=5)
    options = PageSparseOptions(page_size=ps, top_k=3, sink_pages=1, recent_pages=1,
                                share_pages=share, soft_temperature=1e-4)  # fmt: skip
    logw = soft_page_mask(q, k, options)  # (1, 4, T, T)
    for i in (13, 20, 31, 47):
        kept = logw[0, :, i, : i + 1] > -1e-3  # (4, i + 1)
        assert bool(((logw[0, :, i, : i + 1] < -20) | kept).all())  # nothing half-kept
        s = _summaries(k[:, :, : i + 1], ps)
        if s.pages <= options.kept_pages:
            assert bool(kept.all())
            continue
        pages = select_pages(q[:, :, i : i + 1], s, options)  # (1, Hs, kept)
        expected = torch.zeros_like(kept)
        for h in range(4):
            for p in pages[0, h // (2 if share else 1)].tolist():
                expected[h, p * ps : p * ps + ps] = True
        assert torch.equal(kept, expected)
    soft = soft_page_attention(q, k, v, options)[:, :, -1:]
    hard = page_sparse_attention(q[:, :, -1:], k, v, _summaries(k, ps), options)
    torch.testing.assert_close(soft, hard, atol=1e-4, rtol=1e-4)


def test_the_soft_mask_is_differentiable():
    q, k, v = (x.requires_grad_() for x in _qkv(2, 4, 2, 40, 40, 8, seed=7))
    options = PageSparseOptions(page_size=4, top_k=2, sink_pages=1, recent_pages=1)
    soft_page_mask(q, k, options).sum().backward()
    assert k.grad is not None and bool(k.grad.isfinite().all()) and k.grad.abs().sum() > 0
    q.grad = k.grad = None
    out = soft_page_attention(q, k, v, options)
    assert out.shape == (2, 4, 40, 8)
    out.square().sum().backward()
    for x in (q, k, v):
        assert bool(x.grad.isfinite().all()) and x.grad.abs().sum() > 0


def test_few_pages_leave_the_soft_mask_empty():
    q, k, _ = _qkv(1, 2, 2, 12, 12, 4)
    assert torch.equal(soft_page_mask(q, k, PageSparseOptions(page_size=4, top_k=5)),
                       torch.zeros(1, 2, 12, 12))  # fmt: skip


# --- options ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    {"page_size": 0}, {"top_k": 0}, {"sink_pages": -1}, {"recent_pages": 0},
    {"std_weight": -1.0}, {"std_weight": math.nan}, {"soft_temperature": 0.0},
    {"soft_temperature": math.inf}, {"top_k": 2.5}, {"page_size": True},
])  # fmt: skip
def test_bad_options_are_value_errors(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        PageSparseOptions(**bad)


def test_default_options():
    o = PageSparseOptions()
    assert (o.page_size, o.sink_pages, o.std_weight) == (64, 1, 1.0)
    assert o.kept_pages == o.sink_pages + o.top_k + o.recent_pages


# --- transformers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, vocab_size=100,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).eval()


def _generate(model, ids, new_tokens: int = 20, **kwargs):
    return model.generate(ids, max_new_tokens=new_tokens, do_sample=False, output_scores=True,
                          return_dict_in_generate=True, pad_token_id=0, **kwargs)  # fmt: skip


@torch.no_grad()
def _teacher_forced(model, ids: torch.Tensor, prompt: int) -> torch.Tensor:
    """The next-token logits of a prefill of ``prompt`` tokens and one decode step per
    further token of ``ids (1, N)``: ``(N - prompt + 1, V)``."""
    from transformers import DynamicCache

    # transformers 5.2x calls the KV cache ``cache``; earlier releases ``past_key_values``.
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    kwargs = {name: DynamicCache(), "use_cache": True}
    logits = [model(ids[:, :prompt], **kwargs).logits[:, -1]]
    for t in range(prompt, ids.shape[1]):
        logits.append(model(ids[:, t : t + 1], **kwargs).logits[:, -1])
    return torch.cat(logits)


def test_generation_with_every_page_kept_equals_dense(tiny_llama):
    ids = torch.randint(0, 100, (1, 30), generator=torch.Generator().manual_seed(1))
    dense = _generate(tiny_llama, ids)
    with unique_attention(tiny_llama, PageSparseOptions(page_size=4, top_k=16)):
        assert tiny_llama.config._attn_implementation == "unique"
        unique = _generate(tiny_llama, ids)
    assert tiny_llama.config._attn_implementation == "sdpa"
    assert torch.equal(unique.sequences, dense.sequences)
    for a, b in zip(unique.scores, dense.scores):
        torch.testing.assert_close(a, b)


def test_generation_with_a_small_k_is_sparse_and_close_to_dense(tiny_llama):
    ids = torch.randint(0, 100, (1, 44), generator=torch.Generator().manual_seed(2))
    dense = _teacher_forced(tiny_llama, ids, 20)
    options = PageSparseOptions(page_size=4, top_k=2, sink_pages=1, recent_pages=1)
    fn = register_unique_attention(options, name="unique-small")
    tiny_llama.set_attn_implementation("unique-small")
    try:
        sparse = _teacher_forced(tiny_llama, ids, 20)
    finally:
        tiny_llama.set_attn_implementation("sdpa")
    assert fn.sparse_steps == 2 * 24  # two layers, every decode step (21+ tokens: 6+ pages)
    assert not torch.equal(sparse, dense)
    cosine = F.cosine_similarity(sparse, dense, dim=-1)
    # A random model attends almost uniformly, the worst case for sparse attention.
    assert float(cosine.min()) > 0.8, cosine
    assert float((sparse.argmax(-1) == dense.argmax(-1)).float().mean()) >= 0.6


def test_padded_batches_and_beam_search_run(tiny_llama):
    ids = torch.randint(0, 100, (2, 30), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 30, dtype=torch.long)
    mask[1, :7] = 0  # left padding
    dense = _generate(tiny_llama, ids, 8, attention_mask=mask, num_beams=3)
    with unique_attention(tiny_llama, PageSparseOptions(page_size=4, top_k=16)):
        unique = _generate(tiny_llama, ids, 8, attention_mask=mask, num_beams=3)
    assert torch.equal(unique.sequences, dense.sequences)
    with unique_attention(tiny_llama, PageSparseOptions(page_size=4, top_k=1, recent_pages=1)):
        sparse = _generate(tiny_llama, ids, 8, attention_mask=mask, num_beams=3)
    assert sparse.sequences.shape == dense.sequences.shape


def test_training_uses_the_soft_mask_when_asked(tiny_llama):
    ids = torch.randint(0, 100, (2, 40), generator=torch.Generator().manual_seed(4))
    tiny_llama.train()
    try:
        dense = tiny_llama(ids).logits
        with unique_attention(tiny_llama, PageSparseOptions(page_size=4, top_k=16)):
            exact = tiny_llama(ids).logits  # training without soft_training: dense attention
        options = PageSparseOptions(page_size=4, top_k=2, soft_training=True)
        with unique_attention(tiny_llama, options):
            soft = tiny_llama(ids).logits
            soft.logsumexp(-1).mean().backward()
    finally:
        tiny_llama.eval()
    grads = [p.grad for p in tiny_llama.parameters() if p.grad is not None]
    tiny_llama.zero_grad(set_to_none=True)
    torch.testing.assert_close(exact, dense)
    assert not torch.allclose(soft, dense)
    assert grads and all(bool(g.isfinite().all()) for g in grads)
