"""The projector: speech frames to LLM input embeddings (SLAM-LLM's linear projector).

``k`` consecutive frames are concatenated (the tail padded with zeros), cutting the
sequence ``k`` times, then mapped to the LLM's hidden size by a linear layer or a
2-layer MLP: ``(B, T, D) -> (B, ceil(T / k), H)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ctxasr.speechllm.config import ProjectorConfig


def stack_frames(x: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, T, D)``, ``(B, T)`` -> ``(B, ceil(T/k), k*D)``, ``(B, ceil(T/k))``; a stacked
    frame is valid when its first frame is."""
    B, T, D = x.shape
    pad = -T % k
    x = F.pad(x * mask[..., None], (0, 0, 0, pad))  # (B, T + pad, D), padding zeroed
    mask = F.pad(mask, (0, pad))  # (B, T + pad)
    return x.reshape(B, -1, k * D), mask[:, ::k]  # (B, T', k*D), (B, T')


class Projector(nn.Module):
    def __init__(self, config: ProjectorConfig, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.k = config.stack
        if config.kind == "linear":
            self.net: nn.Module = nn.Linear(self.k * in_dim, out_dim)
        else:
            hidden = config.hidden or out_dim
            self.net = nn.Sequential(
                nn.Linear(self.k * in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim)
            )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, D)`` frames, ``(B, T)`` bool -> ``(B, ceil(T/k), H)``, ``(B, ceil(T/k))``."""
        x, mask = stack_frames(x, mask, self.k)  # (B, T', k*D)
        return self.net(x), mask  # (B, T', H)
