"""The A2P retriever as a PyTorch module, for training (inference runs in ``scorer``).

Attention2Probability in short: each context term is spelled as phones; every phone,
embedded, asks the speech (the frozen Whisper encoder's output, pooled) where it sounds
(cross-attention), and from what the phones found -- the attended audio and how sharply
each phone matched -- a small head says how likely the term was spoken in the stretch.
The encoder itself is not part of the model: its frames come in as input.

``ctxasr.a2p.scorer.A2PScorer`` computes exactly this network in numpy; a test holds the
two to 1e-4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ctxasr.a2p.config import A2PConfig


class A2PModel(nn.Module):
    """Scores terms (phone tokens) against pooled speech-encoder frames."""

    def __init__(self, config: A2PConfig) -> None:
        super().__init__()
        c = self.config = config
        d = c.d_model
        self.mem_norm = nn.LayerNorm(c.encoder_dim)
        self.key = nn.Linear(c.encoder_dim, d)
        self.value = nn.Linear(c.encoder_dim, d)
        self.tok_emb = nn.Embedding(c.vocab, d)
        self.pos_emb = nn.Parameter(torch.randn(c.max_tokens, d) * 0.02)
        self.q_norm = nn.LayerNorm(d)
        self.query = nn.Linear(d, d)
        self.out = nn.Linear(d, d)
        self.conv_norm = nn.LayerNorm(d)
        self.conv = nn.Conv1d(d, d, kernel_size=3, padding=1)  # neighbouring phones agree?
        self.ffn_norm = nn.LayerNorm(d)
        self.ffn1 = nn.Linear(d, c.ffn)
        self.ffn2 = nn.Linear(c.ffn, d)
        self.head_norm = nn.LayerNorm(d)
        self.head1 = nn.Linear(d + (4 if c.order else 2) * c.heads, c.head_hidden)
        self.head2 = nn.Linear(c.head_hidden, 1)

    def listen(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of pooled frames (B, T, E): each (B, H, T, dh)."""
        B, T, _ = pooled.shape
        H = self.config.heads
        x = self.mem_norm(pooled)  # (B, T, E)
        k = self.key(x).view(B, T, H, -1).transpose(1, 2)  # (B, H, T, dh)
        v = self.value(x).view(B, T, H, -1).transpose(1, 2)  # (B, H, T, dh)
        return k, v

    def forward(self, pooled: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, M) of M terms (B, M, L) tokens, each against its own stretch (B, T, E)."""
        k, v = self.listen(pooled)
        return self.score(k, v, tokens)

    def score(self, k: torch.Tensor, v: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        B, M, L = tokens.shape
        H, d = self.config.heads, self.config.d_model
        mask = (tokens != 0).unsqueeze(-1)  # (B, M, L, 1)
        e = self.tok_emb(tokens) + self.pos_emb[:L]  # (B, M, L, d)
        q = self.query(self.q_norm(e)).view(B, M * L, H, -1).transpose(1, 2)  # (B, H, ML, dh)
        s = q @ k.transpose(-1, -2) / math.sqrt(d // H)  # (B, H, ML, T)
        a = s.softmax(-1)  # (B, H, ML, T)
        ctx = a @ v  # (B, H, ML, dh)
        ctx = ctx.transpose(1, 2).reshape(B, M, L, d)  # (B, M, L, d)
        peak = s.amax(-1).view(B, H, M, L).permute(0, 2, 3, 1)  # (B, M, L, H)
        h = (e + self.out(ctx)) * mask  # (B, M, L, d)
        c = self.conv_norm(h).view(B * M, L, d).transpose(1, 2)  # (BM, d, L)
        c = self.conv(c * mask.view(B * M, L, 1).transpose(1, 2))  # (BM, d, L)
        h = (h + c.transpose(1, 2).view(B, M, L, d)) * mask  # (B, M, L, d)
        h = h + self.ffn2(F.gelu(self.ffn1(self.ffn_norm(h)), approximate="tanh"))
        z = _pool(self.head_norm(h), peak, mask)  # (B, M, d + 2H)
        if self.config.order:
            slots = torch.arange(a.shape[-1], dtype=a.dtype)
            where = (a @ slots).view(B, H, M, L).permute(0, 2, 3, 1)  # (B, M, L, H)
            z = torch.cat([z, _order(where, mask)], dim=-1)  # (B, M, d + 4H)
        return self.head2(F.gelu(self.head1(z), approximate="tanh")).squeeze(-1)  # (B, M)


def _pool(h: torch.Tensor, peak: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per term: mean of phone states, mean and minimum of phone match peaks."""
    count = mask.sum(2).clamp(min=1)  # (B, M, 1)
    mean = (h * mask).sum(2) / count  # (B, M, d)
    peak_mean = (peak * mask).sum(2) / count  # (B, M, H)
    peak_min = peak.masked_fill(~mask, math.inf).amin(2)  # (B, M, H)
    peak_min = torch.where(torch.isfinite(peak_min), peak_min, torch.zeros_like(peak_min))
    return torch.cat([mean, peak_mean, peak_min], dim=-1)  # (B, M, d + 2H)


def _order(where: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per term: how far (log slots) each phone's attended moment is from the previous
    phone's, and how far it goes back in time, averaged over successive phone pairs."""
    pair = mask[:, :, 1:] & mask[:, :, :-1]  # (B, M, L-1, 1)
    step = where[:, :, 1:] - where[:, :, :-1]  # (B, M, L-1, H)
    count = pair.sum(2).clamp(min=1)  # (B, M, 1)
    jump = (torch.log1p(step.abs()) * pair).sum(2) / count  # (B, M, H)
    back = (torch.log1p(F.relu(-step)) * pair).sum(2) / count  # (B, M, H)
    return torch.cat([jump, back], dim=-1)  # (B, M, 2H)


def pool_frames(frames: torch.Tensor, pool: int) -> torch.Tensor:
    """Average ``pool`` consecutive frames: (B, T0, E) -> (B, T0 // pool, E)."""
    B, T0, E = frames.shape
    return frames.view(B, T0 // pool, pool, E).mean(2)
