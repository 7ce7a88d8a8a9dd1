"""MoSE, a mixture of speech encoders: several frozen encoders' frames as one stream.

Each encoder's frames are first brought to a common frame rate, the lowest among them,
by linear interpolation along time (:func:`align_frames`, numpy, not trained, so the
result can be cached), and concatenated: ``(T, D_1 + ... + D_n)``. The trainable
:class:`MoSE` projects each encoder's part to a common width and mixes them with a gate:
a softmax over encoders per frame, computed from the concatenated projections. With one
encoder it is only the projection.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def resample_frames(frames: np.ndarray, rate: float, target: float) -> np.ndarray:
    """``(T, D)`` frames at ``rate`` fps -> ``(round(T * target / rate), D)`` at ``target``
    fps (at least one), each new frame linearly interpolated at its centre's time."""
    T = len(frames)
    n = max(1, round(T * target / rate))
    if n == T:
        return frames
    t = np.clip((np.arange(n) + 0.5) * (rate / target) - 0.5, 0, T - 1)  # (n,) in old frames
    lo = np.floor(t).astype(np.int64)
    hi = np.minimum(lo + 1, T - 1)
    a = (t - lo)[:, None].astype(frames.dtype)  # (n, 1)
    return (1 - a) * frames[lo] + a * frames[hi]  # (n, D)


def align_frames(per_encoder: Sequence[np.ndarray], rates: Sequence[float]) -> np.ndarray:
    """Each encoder's ``(T_i, D_i)`` frames at the lowest rate, cut to the shortest and
    concatenated: ``(T, sum D_i)`` float32. One encoder's frames pass through."""
    if len(per_encoder) == 1:
        return np.asarray(per_encoder[0], dtype=np.float32)
    low = min(rates)
    same = [resample_frames(np.asarray(f, np.float32), r, low) for f, r in zip(per_encoder, rates)]
    T = min(len(f) for f in same)
    return np.concatenate([f[:T] for f in same], axis=-1)  # (T, sum D_i)


class MoSE(nn.Module):
    """``(B, T, sum D_i)`` aligned frames -> ``(B, T, dim)``: per-encoder linear maps,
    mixed per frame by a learned softmax gate (no gate for one encoder)."""

    def __init__(self, dims: Sequence[int], dim: int) -> None:
        super().__init__()
        self.dims = [int(d) for d in dims]
        self.proj = nn.ModuleList(nn.Linear(d, dim) for d in self.dims)
        self.gate = nn.Linear(len(self.dims) * dim, len(self.dims)) if len(self.dims) > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [p(c) for p, c in zip(self.proj, x.split(self.dims, dim=-1))]  # n x (B, T, d)
        if self.gate is None:
            return parts[0]
        weights = torch.softmax(self.gate(torch.cat(parts, dim=-1)), dim=-1)  # (B, T, n)
        return (weights[..., None] * torch.stack(parts, dim=-2)).sum(dim=-2)  # (B, T, d)
