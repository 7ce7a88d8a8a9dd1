"""Shapes of the speech LLM's trainable modules: projector, SAP pooling and MoSE."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ctxasr.speechllm.config import PoolingConfig, ProjectorConfig
from ctxasr.speechllm.interfaces import RandomEncoder, SpeechEncoder, load_encoder
from ctxasr.speechllm.mose import MoSE, align_frames, resample_frames
from ctxasr.speechllm.pooling import ContextPooling
from ctxasr.speechllm.projector import Projector


def _mask(lengths: list[int], T: int) -> torch.Tensor:
    return torch.arange(T)[None] < torch.tensor(lengths)[:, None]  # (B, T)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_the_projector_stacks_k_frames(kind: str) -> None:
    proj = Projector(ProjectorConfig(stack=4, kind=kind, hidden=32), in_dim=20, out_dim=64)
    x, mask = proj(torch.randn(3, 10, 20), _mask([10, 9, 4], 10))
    assert x.shape == (3, 3, 64)  # ceil(10 / 4)
    assert mask.tolist() == [[True, True, True], [True, True, True], [True, False, False]]


def test_padding_frames_do_not_leak_into_the_projection() -> None:
    proj = Projector(ProjectorConfig(stack=4), in_dim=8, out_dim=16)
    x = torch.randn(1, 6, 8)
    noisy = x.clone()
    noisy[:, 5:] = 1e3  # beyond the mask
    mask = _mask([5], 6)
    assert torch.allclose(proj(x, mask)[0], proj(noisy, mask)[0])


@pytest.mark.parametrize("kind", ["sap", "mean", "none"])
def test_pooling_shapes(kind: str) -> None:
    pool = ContextPooling(PoolingConfig(kind=kind, window=2, heads=4), dim=64)
    ctx, speech = torch.randn(2, 7, 64), torch.randn(2, 5, 64)
    out, mask = pool(ctx, _mask([7, 3], 7), speech, _mask([5, 2], 5))
    if kind == "none":
        assert out.shape == (2, 7, 64) and mask.sum().item() == 10
    else:
        assert out.shape == (2, 4, 64)  # ceil(7 / 2)
        assert mask.tolist() == [[True] * 4, [True, True, False, False]]
        assert torch.isfinite(out).all()


def test_untrained_sap_is_the_window_mean_and_trained_sap_follows_the_speech() -> None:
    sap = ContextPooling(PoolingConfig(kind="sap", window=2, heads=4), dim=64)
    mean = ContextPooling(PoolingConfig(kind="mean", window=2), dim=64)
    ctx, speech = torch.randn(1, 5, 64), torch.randn(1, 6, 64)
    cm, sm = _mask([5], 5), _mask([6], 6)
    assert torch.allclose(sap(ctx, cm, speech, sm)[0], mean(ctx, cm, speech, sm)[0], atol=1e-6)
    assert torch.allclose(mean(ctx, cm, speech, sm)[0][0, 2], ctx[0, 4])  # a window of one
    torch.nn.init.normal_(sap.query.weight)
    a = sap(ctx, cm, speech, sm)[0]
    b = sap(ctx, cm, torch.randn(1, 6, 64), sm)[0]
    assert not torch.allclose(a, b)  # other speech, other weights
    # each head's output is a convex mix of its channels within the window
    lo = torch.minimum(ctx[0, 0], ctx[0, 1])
    hi = torch.maximum(ctx[0, 0], ctx[0, 1])
    assert ((a[0, 0] >= lo - 1e-5) & (a[0, 0] <= hi + 1e-5)).all()


def test_pooling_heads_must_divide_the_width() -> None:
    with pytest.raises(ValueError, match="heads"):
        ContextPooling(PoolingConfig(kind="sap", heads=3), dim=64)


def test_random_encoders_follow_the_protocol() -> None:
    enc = load_encoder("random:48:25")
    assert isinstance(enc, SpeechEncoder) and isinstance(enc, RandomEncoder)
    samples = np.random.default_rng(0).standard_normal(16_000).astype(np.float32)
    frames = enc(samples)
    assert frames.shape == (25, 48) and frames.dtype == np.float32
    assert np.array_equal(frames, load_encoder("random:48:25")(samples))  # deterministic
    assert load_encoder("random")(samples).shape == (50, 64)


def test_resampling_is_linear_in_time() -> None:
    ramp = np.arange(10, dtype=np.float32)[:, None]  # (10, 1) at 50 fps
    half = resample_frames(ramp, 50, 25)
    assert half.shape == (5, 1)
    assert np.allclose(half[:, 0], [0.5, 2.5, 4.5, 6.5, 8.5])  # centres of frame pairs


def test_mose_mixes_two_encoders_at_the_lower_frame_rate() -> None:
    a, b = RandomEncoder(dim=48, frame_rate=50), RandomEncoder(dim=32, frame_rate=25)
    samples = np.random.default_rng(1).standard_normal(32_000).astype(np.float32)
    aligned = align_frames([a(samples), b(samples)], [a.frame_rate, b.frame_rate])
    assert aligned.shape == (50, 80)  # 2 s at 25 fps, 48 + 32 channels
    mose = MoSE([48, 32], dim=40)
    x = torch.from_numpy(np.stack([aligned, aligned]))  # (2, 50, 80)
    assert mose(x).shape == (2, 50, 40)
    assert mose.gate is not None and MoSE([48], dim=40).gate is None
    proj = Projector(ProjectorConfig(stack=4), in_dim=40, out_dim=64)
    out, _ = proj(mose(x), torch.ones(2, 50, dtype=torch.bool))
    assert out.shape == (2, 13, 64)  # ceil(50 / 4)
