"""MADEON's mixers against plain per-step recurrences: the chunked scans, the whole mixers,
decoding state, causality, gradients, and a copy task the mixers must learn."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ctxasr.madeon import ssm
from ctxasr.madeon.ssm import Mamba, Mamba2, Mamba2Config, MambaConfig, selective_scan, ssd

F64 = torch.float64
MIXERS = {
    "mamba": lambda **kw: Mamba(16, d_state=4, **kw),
    "mamba2": lambda **kw: Mamba2(16, d_state=8, headdim=8, ngroups=2, **kw),
}


@pytest.fixture(autouse=True)
def one_thread():
    """The tensors here are tiny: a second thread only adds synchronisation, which costs
    seconds when the machine is busy (the copy task: 1 s on one thread, 9-16 s on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def scan_reference(x, dt, A, B, C, h0):
    """Mamba, one step at a time: ``h (b, d, n) <- exp(dt A) h + dt x B``, ``y = h . C``."""
    h, ys = h0.transpose(1, 2), []
    for t in range(x.shape[1]):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[..., None] * B[:, t, None]
        ys.append((h * C[:, t, None]).sum(-1))
    return torch.stack(ys, 1), h.transpose(1, 2)


def ssd_reference(x, dt, A, B, C, h0):
    """Mamba-2, one step at a time: ``h (b, h, p, n) <- exp(dt A) h + dt x B^T``, ``y = h C``."""
    per_group = x.shape[2] // B.shape[2]
    B, C = B.repeat_interleave(per_group, 2), C.repeat_interleave(per_group, 2)
    h, ys = h0, []
    for t in range(x.shape[1]):
        decay = torch.exp(dt[:, t] * A)[..., None, None]
        h = decay * h + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None]
        ys.append((h * C[:, t, :, None]).sum(-1))
    return torch.stack(ys, 1), h


def scan_inputs(b, l, d, n, scale=1.0, dtype=F64):
    g = torch.Generator().manual_seed(b * 1000 + l * 10 + d + n)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)
    dt = F.softplus(r(b, l, d) * 2) * scale
    return r(b, l, d), dt, -torch.exp(r(d, n)) * scale, r(b, l, n), r(b, l, n), r(b, n, d)


def ssd_inputs(b, l, h, p, g, n, scale=1.0, dtype=F64):
    gen = torch.Generator().manual_seed(b * 1000 + l * 10 + h + p + n)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)
    dt = F.softplus(r(b, l, h) * 2) * scale
    return r(b, l, h, p), dt, -torch.exp(r(h)) * scale, r(b, l, g, n), r(b, l, g, n), r(b, h, p, n)


@pytest.mark.parametrize("chunk", [1, 3, 8, 37, 64])
@pytest.mark.parametrize("with_h0", [False, True])
def test_selective_scan_is_the_recurrence(chunk, with_h0):
    x, dt, A, B, C, h0 = scan_inputs(2, 37, 5, 4)
    y, h = selective_scan(x, dt, A, B, C, h0 if with_h0 else None, chunk)
    y_ref, h_ref = scan_reference(x, dt, A, B, C, h0 if with_h0 else torch.zeros_like(h0))
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(h, h_ref)


@pytest.mark.parametrize("chunk", [1, 3, 8, 37, 64])
@pytest.mark.parametrize("groups, with_h0", [(1, False), (1, True), (2, True)])
def test_ssd_is_the_recurrence(chunk, groups, with_h0):
    x, dt, A, B, C, h0 = ssd_inputs(2, 37, 4, 3, groups, 5)
    y, h = ssd(x, dt, A, B, C, h0 if with_h0 else None, chunk)
    y_ref, h_ref = ssd_reference(x, dt, A, B, C, h0 if with_h0 else torch.zeros_like(h0))
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(h, h_ref)


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 3), l=st.integers(1, 40), d=st.integers(1, 6), n=st.integers(1, 5),
       groups=st.sampled_from([1, 2]), chunk=st.integers(1, 48))  # fmt: skip
def test_scans_on_random_shapes(b, l, d, n, groups, chunk):
    x, dt, A, B, C, h0 = scan_inputs(b, l, d, n)
    got, want = selective_scan(x, dt, A, B, C, h0, chunk), scan_reference(x, dt, A, B, C, h0)
    torch.testing.assert_close(got, want)
    x, dt, A, B, C, h0 = ssd_inputs(b, l, 2 * groups, d, groups, n)
    got, want = ssd(x, dt, A, B, C, h0, chunk), ssd_reference(x, dt, A, B, C, h0)
    torch.testing.assert_close(got, want)


def test_scans_stay_finite_under_strong_decay():
    """dt * A down to about -1e3 per step: a cumulative product would underflow and its
    inverse overflow in float32; the scans only exponentiate non-positive sums."""
    x, dt, A, B, C, h0 = scan_inputs(2, 50, 4, 3, scale=30.0, dtype=torch.float32)
    y, h = selective_scan(x, dt, A, B, C, h0, 16)
    y_ref, h_ref = scan_reference(*(v.double() for v in (x, dt, A, B, C, h0)))
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    torch.testing.assert_close(y, y_ref.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(h, h_ref.float(), rtol=1e-4, atol=1e-4)
    x, dt, A, B, C, h0 = ssd_inputs(2, 50, 2, 3, 1, 4, scale=30.0, dtype=torch.float32)
    y, h = ssd(x, dt, A, B, C, h0, 16)
    y_ref, h_ref = ssd_reference(*(v.double() for v in (x, dt, A, B, C, h0)))
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    torch.testing.assert_close(y, y_ref.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(h, h_ref.float(), rtol=1e-4, atol=1e-4)


def plain_mamba(m: Mamba, u: torch.Tensor) -> torch.Tensor:
    """Mamba as mamba_ssm lays out its weights: x then z, a padded conv cut to L, dt B C."""
    L, cfg = u.shape[1], m.config
    x, z = m.in_proj(u).chunk(2, -1)
    x = F.silu(m.conv1d(x.transpose(1, 2))[..., :L].transpose(1, 2))
    dt, B, C = m.x_proj(x).split([cfg.rank, cfg.d_state, cfg.d_state], -1)
    dt = F.softplus(dt @ m.dt_proj.weight.T + m.dt_proj.bias)
    h0 = u.new_zeros(len(u), cfg.d_state, cfg.d_inner)
    y, _ = scan_reference(x, dt, -torch.exp(m.A_log), B, C, h0)
    return m.out_proj((y + m.D * x) * F.silu(z))


def plain_mamba2(m: Mamba2, u: torch.Tensor) -> torch.Tensor:
    """Mamba-2 as mamba_ssm lays out its weights: z, xBC, dt; norm(y * silu(z)) per group."""
    (b, L, _), cfg = u.shape, m.config
    gn = cfg.ngroups * cfg.d_state
    z, xbc, dt = m.in_proj(u).split([cfg.d_inner, cfg.d_inner + 2 * gn, cfg.nheads], -1)
    xbc = F.silu(m.conv1d(xbc.transpose(1, 2))[..., :L].transpose(1, 2))
    x, B, C = xbc.split([cfg.d_inner, gn, gn], -1)
    x = x.view(b, L, cfg.nheads, cfg.headdim)
    B, C = B.view(b, L, cfg.ngroups, -1), C.view(b, L, cfg.ngroups, -1)
    dt = F.softplus(dt + m.dt_bias)
    h0 = u.new_zeros(b, cfg.nheads, cfg.headdim, cfg.d_state)
    y, _ = ssd_reference(x, dt, -torch.exp(m.A_log), B, C, h0)
    y = ((y + m.D[:, None] * x).flatten(2) * F.silu(z)).view(b, L, cfg.ngroups, -1)
    y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-5)
    return m.out_proj(y.flatten(2) * m.norm.weight)


@pytest.mark.parametrize("chunk", [4, 64])
def test_mixers_match_a_plain_per_step_mixer(chunk):
    torch.manual_seed(0)
    u = torch.randn(3, 29, 16, dtype=F64)
    m = MIXERS["mamba"](chunk=chunk).double()
    torch.testing.assert_close(m(u), plain_mamba(m, u))
    m = MIXERS["mamba2"](chunk=chunk).double()
    torch.testing.assert_close(m(u), plain_mamba2(m, u))


@pytest.mark.parametrize("kind", MIXERS)
def test_steps_from_the_start_equal_forward(kind):
    torch.manual_seed(1)
    m, u = MIXERS[kind](chunk=5).double(), torch.randn(2, 23, 16, dtype=F64)
    y, (conv, h) = m(u, return_state=True)
    state, ys = m.initial_state(2, dtype=F64), []
    for t in range(u.shape[1]):
        y_t, state = m.step(u[:, t], state)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y)
    torch.testing.assert_close(state[0], conv)
    torch.testing.assert_close(state[1], h)


@pytest.mark.parametrize("kind", MIXERS)
@pytest.mark.parametrize("cut", [1, 2, 11, 20])
def test_a_prefix_then_steps_or_a_second_forward_equal_the_whole(kind, cut):
    torch.manual_seed(2)
    m, u = MIXERS[kind](chunk=4).double(), torch.randn(2, 21, 16, dtype=F64)
    whole = m(u)
    y, state = m(u[:, :cut], return_state=True)
    rest = m(u[:, cut:], state)
    torch.testing.assert_close(torch.cat([y, rest], 1), whole)
    ys = [y]
    for t in range(cut, u.shape[1]):
        y_t, state = m.step(u[:, t], state)
        ys.append(y_t[:, None])
    torch.testing.assert_close(torch.cat(ys, 1), whole)


@pytest.mark.parametrize("kind", MIXERS)
def test_outputs_do_not_depend_on_later_inputs(kind):
    torch.manual_seed(3)
    m, u = MIXERS[kind](chunk=8).double(), torch.randn(2, 30, 16, dtype=F64)
    v = u.clone()
    v[:, 13:] = torch.randn(2, 17, 16, dtype=F64) * 10
    y, w = m(u), m(v)
    torch.testing.assert_close(y[:, :13], w[:, :13], rtol=0, atol=1e-12)
    assert not torch.allclose(y[:, 13:], w[:, 13:])


@pytest.mark.parametrize("kind", MIXERS)
def test_gradients_are_finite_and_reach_every_parameter(kind):
    torch.manual_seed(4)
    m, u = MIXERS[kind](chunk=8), torch.randn(2, 30, 16, requires_grad=True)
    m(u).square().mean().backward()
    for name, p in [*m.named_parameters(), ("input", u)]:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_mamba_takes_longer_chunks_for_wide_batches():
    """One step of all chunks stays within _STEP_BUDGET values; narrow steps keep `chunk`."""
    m = Mamba(256)  # d_inner 512, d_state 16: 8K values a step per sequence
    assert ssm._STEP_BUDGET == 1 << 16
    assert m._chunk(torch.empty(8, 300, 512)) == 300  # wide already: one chunk
    assert m._chunk(torch.empty(2, 300, 512)) == 75  # 4 chunks
    assert m._chunk(torch.empty(1, 300, 512)) == 64  # 8 would do; chunk is the shortest


def test_configs_reject_bad_dims():
    assert MambaConfig(256).rank == 16 and MambaConfig(100).rank == 7
    assert MambaConfig(256, dt_rank=4).rank == 4
    assert Mamba2Config(256).nheads == 16
    for bad in ({"chunk": 0}, {"dt_rank": "big"}, {"dt_rank": 0}, {"dt_min": 0.2}):
        with pytest.raises(ValueError):
            MambaConfig(64, **bad)
    for bad in ({"headdim": 48}, {"ngroups": 3}, {"d_state": 0}, {"a_init": (2.0, 1.0)}):
        with pytest.raises(ValueError):
            Mamba2Config(64, **bad)


def test_parameters_are_laid_out_as_in_mamba_ssm():
    shapes = {k: tuple(v.shape) for k, v in Mamba(64).state_dict().items()}
    assert shapes == {
        "in_proj.weight": (256, 64), "conv1d.weight": (128, 1, 4), "conv1d.bias": (128,),
        "x_proj.weight": (4 + 32, 128), "dt_proj.weight": (128, 4), "dt_proj.bias": (128,),
        "A_log": (128, 16), "D": (128,), "out_proj.weight": (64, 128),
    }  # fmt: skip
    shapes = {k: tuple(v.shape) for k, v in Mamba2(64).state_dict().items()}
    conv = 128 + 2 * 64
    assert shapes == {
        "in_proj.weight": (128 + conv + 4, 64), "conv1d.weight": (conv, 1, 4),
        "conv1d.bias": (conv,), "dt_bias": (4,), "A_log": (4,), "D": (4,),
        "norm.weight": (128,), "out_proj.weight": (64, 128),
    }  # fmt: skip


@pytest.mark.parametrize("kind", MIXERS)
def test_a_mixer_learns_to_copy_a_shifted_sequence(kind):
    """Predict the previous token, with a convolution of width 1 so that only the SSM's
    state can carry it: the loss falls from chance (log 8 = 2.08) to near zero."""
    torch.manual_seed(0)
    embed, mixer, head = nn.Embedding(8, 16), MIXERS[kind](chunk=16, d_conv=1), nn.Linear(16, 8)
    params = [*embed.parameters(), *mixer.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=2e-2)
    losses = []
    while len(losses) < 400 and (len(losses) < 5 or sum(losses[-5:]) / 5 > 0.2):
        ids = torch.randint(0, 8, (16, 32))
        logits = head(mixer(embed(ids)))[:, 1:]  # position t predicts ids[t - 1]
        loss = F.cross_entropy(logits.flatten(0, 1), ids[:, :-1].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[:5]) / 5 > 2.0
    assert sum(losses[-5:]) / 5 < 0.5, (len(losses), losses[-5:])


@pytest.mark.skipif(
    not torch.cuda.is_available() or ssm.selective_scan_fn is None,
    reason="needs CUDA and mamba_ssm",
)
@pytest.mark.parametrize("kind", MIXERS)
def test_fused_kernels_agree_with_the_pytorch_path(kind):
    torch.manual_seed(6)
    m, u = MIXERS[kind](chunk=16).cuda(), torch.randn(2, 50, 16, device="cuda")
    y, (_, h) = m(u, return_state=True)
    plain = MIXERS[kind](chunk=16, fused=False).cuda()
    plain.load_state_dict(m.state_dict())
    y_ref, (_, h_ref) = plain(u, return_state=True)
    torch.testing.assert_close(y, y_ref, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(h, h_ref, rtol=1e-3, atol=1e-3)
