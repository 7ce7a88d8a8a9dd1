"""Compressing the context: speech-driven attention-based pooling (SAP, SAP²-ASR).

The keywords' token embeddings ``(B, L, H)`` are cut into windows of ``w`` tokens (the
tail padded) and each window becomes one embedding: ``(B, ceil(L / w), H)``, so a long
keyword list costs the LLM ``w`` times fewer positions.

``"sap"``: the weights within a window come from the speech. Per head ``h`` (of
``heads``, each owning ``H / heads`` channels), queries come from the projected speech
frames and keys from the context tokens, both through learned projections; token ``j``'s
score is a soft maximum over the valid speech frames ``t`` of ``q_t . k_j / sqrt(d)``
(``logsumexp_t - log T``, so a keyword that matches one stretch of speech stands out);
the scores are soft-maxed within each window and weight the context embeddings
themselves (the values). The query projection starts at zero, so an untrained SAP is the
window mean.

``"mean"``: the plain window mean (what the released SAP² code reduces to);
``"none"``: no pooling, the ablation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ctxasr.speechllm.config import PoolingConfig


class ContextPooling(nn.Module):
    def __init__(self, config: PoolingConfig, dim: int) -> None:
        super().__init__()
        self.kind, self.w = config.kind, config.window
        self.heads = config.heads if config.kind == "sap" else 1
        if dim % self.heads:
            raise ValueError(f"pooling heads ({self.heads}) must divide the LLM's width {dim}")
        if self.kind == "sap":
            self.query = nn.Linear(dim, dim, bias=False)
            self.key = nn.Linear(dim, dim, bias=False)
            nn.init.zeros_(self.query.weight)  # start as the window mean

    def forward(
        self, ctx: torch.Tensor, ctx_mask: torch.Tensor, speech: torch.Tensor,
        speech_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """``ctx (B, L, H)``, ``ctx_mask (B, L)`` bool, ``speech (B, S, H)``, ``speech_mask
        (B, S)`` -> pooled ``(B, ceil(L/w), H)`` and its mask (a window with any token)."""
        if self.kind == "none":
            return ctx, ctx_mask
        B, L, H = ctx.shape
        nh, pad = self.heads, -L % self.w
        ctx = F.pad(ctx, (0, 0, 0, pad))  # (B, L', H)
        mask = F.pad(ctx_mask.float(), (0, pad)) > 0  # (B, L')
        n = ctx.shape[1] // self.w
        if self.kind == "sap":
            scores = self.scores(ctx, speech, speech_mask)  # (B, nh, L')
        else:
            scores = ctx.new_zeros(B, nh, ctx.shape[1])
        scores = scores.masked_fill(~mask[:, None], float("-inf")).view(B, nh, n, self.w)
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # (B, nh, n, w); empty: 0
        values = ctx.view(B, n, self.w, nh, H // nh).permute(0, 3, 1, 2, 4)  # (B, nh, n, w, hd)
        pooled = (weights[..., None] * values).sum(dim=-2)  # (B, nh, n, hd)
        return pooled.transpose(1, 2).reshape(B, n, H), mask.view(B, n, self.w).any(-1)

    def scores(self, ctx: torch.Tensor, speech: torch.Tensor, speech_mask: torch.Tensor):
        """Each context token's score per head from the speech: ``(B, nh, L)``."""
        B, L, H = ctx.shape
        S, nh, hd = speech.shape[1], self.heads, H // self.heads
        q = self.query(speech).view(B, S, nh, hd).transpose(1, 2)  # (B, nh, S, hd)
        k = self.key(ctx).view(B, L, nh, hd).transpose(1, 2)  # (B, nh, L, hd)
        att = q @ k.transpose(-1, -2) / math.sqrt(hd)  # (B, nh, S, L)
        att = att.masked_fill(~speech_mask[:, None, :, None], float("-inf"))
        frames = speech_mask.sum(-1).clamp(min=1).float()  # (B,)
        return torch.logsumexp(att, dim=2) - frames.log()[:, None, None]  # (B, nh, L)
