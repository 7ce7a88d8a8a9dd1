"""The MADEON decoder: one stack of blocks reads ``[bos] speech [sep]`` and writes the text.

Every sequence is ``[bos] s_1 .. s_S [sep] t_1 .. t_T [eos]`` in the tokenizer's joint
vocabulary; the first ``S + 2`` tokens are the *prefix*, known before decoding starts.
The loss is the cross-entropy of the text tokens and ``eos`` only: the speech is a
condition, not a target.

Blocks are pre-norm residual: a Mamba or Mamba-2 mixer (``ctxasr.madeon.ssm``), or
causal self-attention and a feed-forward layer for the Transformer baseline. With
speech prefixing, a Mamba block also runs a backward mixer over the prefix (each
sequence reversed within its own prefix length, so padding never leaks in); the text
positions see only the forward mixer, so decoding stays left to right: :meth:`prefill`
runs the prefix in parallel and returns each layer's recurrent state (or the
Transformer's keys and values), :meth:`step` then advances one token at a time.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ctxasr.attention.unique import PageSparseOptions, PageSummaries, page_sparse_attention
from ctxasr.madeon.config import ModelConfig
from ctxasr.madeon.ssm import Mamba, Mamba2


def _mixer(cfg: ModelConfig) -> nn.Module:
    if cfg.kind == "mamba":
        return Mamba(cfg.d_model, d_state=cfg.state, expand=cfg.expand, chunk=cfg.chunk)
    return Mamba2(cfg.d_model, d_state=cfg.state, expand=cfg.expand, headdim=cfg.headdim,
                  chunk=cfg.chunk)  # fmt: skip


def _reverse_index(prefix: torch.Tensor, width: int) -> torch.Tensor:
    """``(B, width)`` indices that reverse each row's first ``prefix[b]`` positions and
    keep the rest in place (an involution: applying it twice is the identity)."""
    j = torch.arange(width, device=prefix.device)[None]  # (1, W)
    p = prefix[:, None]  # (B, 1)
    return torch.where(j < p, p - 1 - j, j)


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


class SSMBlock(nn.Module):
    """A Mamba (or Mamba-2) block, with a backward mixer over the prefix when prefixing."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.prefix = cfg.prefix
        self.norm = nn.RMSNorm(cfg.d_model)
        self.mixer = _mixer(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.prefix != "none":
            self.backward_mixer = _mixer(cfg)
            if cfg.prefix == "serial":
                self.backward_norm = nn.RMSNorm(cfg.d_model)

    def _backward(self, x: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """The backward mixer's output on the prefix positions, zero elsewhere."""
        width = int(prefix.max())
        index = _reverse_index(prefix, width)  # (B, W)
        y = _gather(self.backward_mixer(_gather(x[:, :width], index)), index)  # (B, W, D)
        keep = (torch.arange(width, device=x.device)[None] < prefix[:, None])[..., None]
        return F.pad(y * keep, (0, 0, 0, x.shape[1] - width))  # (B, L, D)

    def forward(self, x: torch.Tensor, prefix: torch.Tensor,
                return_state: bool = False) -> tuple[torch.Tensor, Any]:  # fmt: skip
        """``x`` (B, L, D), ``prefix`` (B,) prefix lengths -> (B, L, D) and, with
        ``return_state``, the forward mixer's state after position L - 1."""
        if self.prefix == "serial":
            x = x + self.drop(self._backward(self.backward_norm(x), prefix))
        h = self.norm(x)
        y, state = self.mixer(h, return_state=True) if return_state else (self.mixer(h), None)
        if self.prefix == "parallel":
            y = y + self._backward(h, prefix)
        return x + self.drop(y), state

    def step(self, x: torch.Tensor, state: Any, pos: int) -> tuple[torch.Tensor, Any]:
        """One text token: ``x`` (N, D) -> (N, D); the prefix's backward pass is done."""
        y, state = self.mixer.step(self.norm(x), state)
        return x + y, state


class AttentionBlock(nn.Module):
    """The Transformer baseline's block: causal self-attention, then a GELU MLP."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.norm1, self.norm2 = nn.RMSNorm(cfg.d_model), nn.RMSNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        ffn = cfg.ffn or 4 * cfg.d_model
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, ffn), nn.GELU(), nn.Linear(ffn, cfg.d_model)
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.sparse: tuple[PageSparseOptions, PageSummaries] | None = None  # decode steps

    def _split(self, x: torch.Tensor) -> list[torch.Tensor]:
        b, t, _ = x.shape
        return [z.view(b, t, self.heads, -1).transpose(1, 2) for z in self.qkv(x).chunk(3, -1)]

    def _attend(self, x: torch.Tensor, cache: tuple | None, causal: bool):
        q, k, v = self._split(self.norm1(x))  # (B, H, T, hd) each
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        if cache is not None and self.sparse is not None:  # a decode step over a long cache
            options, summaries = self.sparse
            summaries.sync(k)
            y = page_sparse_attention(q, k, v, summaries, options)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        x = x + self.drop(self.out(y.transpose(1, 2).flatten(2)))
        return x + self.drop(self.mlp(self.norm2(x))), (k, v)

    def forward(self, x: torch.Tensor, prefix: torch.Tensor,
                return_state: bool = False) -> tuple[torch.Tensor, Any]:  # fmt: skip
        y, kv = self._attend(x, None, causal=True)
        return y, kv if return_state else None

    def step(self, x: torch.Tensor, state: Any, pos: int) -> tuple[torch.Tensor, Any]:
        y, kv = self._attend(x[:, None], state, causal=False)  # one query sees the whole cache
        return y[:, 0], kv


class Madeon(nn.Module):
    """Embedding, ``layers`` blocks, a final norm and a head tied to the embedding."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.vocab < 1:
            raise ValueError("ModelConfig.vocab must be set (the tokenizer's vocabulary size)")
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.d_model)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model) if cfg.kind == "transformer" else None
        block = AttentionBlock if cfg.kind == "transformer" else SSMBlock
        self.blocks = nn.ModuleList(block(cfg) for _ in range(cfg.layers))
        self.norm = nn.RMSNorm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def use_page_sparse_attention(self, options: PageSparseOptions | None) -> None:
        """Decode steps of the Transformer's blocks attend to UNIQUE's top-k pages of their
        KV cache (``ctxasr.attention.unique``; training-free) with ``options``, or, with
        None, to the whole cache again. The prefill and training stay dense. Mamba blocks
        have no cache to sparsify: a no-op for them."""
        for block in self.blocks:
            if isinstance(block, AttentionBlock):
                block.sparse = None if options is None else (options,
                                                             PageSummaries(options.page_size))  # fmt: skip

    def _inputs(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        x = self.embed(ids)  # (B, L, D)
        if self.pos is not None:
            end = start + ids.shape[1]
            if end > self.config.max_len:
                raise ValueError(f"a sequence of {end} tokens is longer than the model's "
                                 f"max_len ({self.config.max_len})")  # fmt: skip
            x = x + self.pos(torch.arange(start, end, device=ids.device))
        return self.drop(x)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h) @ self.embed.weight.T  # (..., V)

    def forward(self, ids: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """``ids`` (B, L) right-padded, ``prefix`` (B,) prefix lengths -> logits (B, L, V)."""
        x = self._inputs(ids)
        for block in self.blocks:
            x, _ = block(x, prefix)
        return self.logits(x)

    def loss(self, ids: torch.Tensor, prefix: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of each sequence's text and ``eos`` (positions ``prefix`` ..
        ``lengths - 1``), in nats per token."""
        logits = self.forward(ids, prefix)[:, :-1]  # (B, L-1, V): position t predicts t+1
        t = torch.arange(1, ids.shape[1], device=ids.device)[None]  # (1, L-1)
        scored = (t >= prefix[:, None]) & (t < lengths[:, None])
        ce = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # (B, L-1)
        return (ce * scored).sum() / scored.sum().clamp(min=1)

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor) -> tuple[torch.Tensor, list]:
        """One prefix ``ids`` (1, P) -> log-probabilities of the first text token (1, V)
        and each layer's state after it."""
        prefix = torch.tensor([ids.shape[1]], device=ids.device)
        x, states = self._inputs(ids), []
        for block in self.blocks:
            x, state = block(x, prefix, return_state=True)
            states.append(state)
        return self.logits(x[:, -1]).log_softmax(-1), states

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, states: list, pos: int) -> tuple[torch.Tensor, list]:
        """Tokens ``(N,)`` at position ``pos`` of N hypotheses -> log-probabilities of the
        next token (N, V) and the new states."""
        x = self._inputs(tokens[:, None], pos)[:, 0]  # (N, D)
        new = []
        for block, state in zip(self.blocks, states):
            x, state = block.step(x, state, pos)
            new.append(state)
        return self.logits(x).log_softmax(-1), new


def select_states(states: Any, index: torch.Tensor) -> Any:
    """``states`` (nested lists/tuples of tensors, batch first) at rows ``index``."""
    if isinstance(states, torch.Tensor):
        return states.index_select(0, index)
    if isinstance(states, (list, tuple)):
        return type(states)(select_states(s, index) for s in states)
    if states is None:
        return None
    raise TypeError(f"cannot select rows of a {type(states).__name__}")


def parameters(model: nn.Module) -> int:
    """Trainable parameters, for the comparison table."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
