"""Whisper as PyTorch modules: audio encoder, text decoder with a KV cache.

Only ``nn.Module``s and their cache live here; searching (``ctxasr.whisper.decoding``)
and weight files (``ctxasr.whisper.weights``) import this module, never the reverse.
Parameter names follow openai-whisper's checkpoints, so those load as they are and the
other formats are renamed onto them.

Shapes: B = decoder rows (audio x beams), A = audio items, T = tokens, S = audio frames
after the encoder (1500 for 30 s), D = ``n_state``, H = heads, V = vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ModelDims:
    """The shape of a Whisper model (tiny.en: 80, 1500, 384, 6, 4, 51864, 448, 384, 6, 4)."""

    n_mels: int
    n_audio_ctx: int  # encoder positions: 1500 frames of 20 ms
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int  # decoder positions: 448 tokens
    n_text_state: int
    n_text_head: int
    n_text_layer: int


class LayerNorm(nn.LayerNorm):
    def forward(self, x: Tensor) -> Tensor:
        # Half-precision weights still normalise in float32, as Whisper was trained.
        return super().forward(x.float()).type(x.dtype)


class Linear(nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


def sinusoids(length: int, channels: int, max_timescale: float = 10_000.0) -> Tensor:
    """The encoder's fixed positions, (length, channels): sines then cosines."""
    assert channels % 2 == 0
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-increment * torch.arange(channels // 2))
    scaled = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


@dataclass
class LayerCache:
    """One decoder layer's keys and values: self-attention grows, cross is fixed."""

    self_k: Tensor | None = None  # (B, T, D)
    self_v: Tensor | None = None
    cross_k: Tensor | None = None  # (A, S, D)
    cross_v: Tensor | None = None


@dataclass
class KVCache:
    """The decoder's state between steps; ``length`` tokens are cached so far.

    ``row_audio`` (B,) names each decoder row's audio item, whose cross keys it reads.
    """

    layers: list[LayerCache]
    row_audio: Tensor  # (B,) int64

    @property
    def length(self) -> int:
        k = self.layers[0].self_k if self.layers else None
        return 0 if k is None else k.shape[1]

    @property
    def n_audio(self) -> int:
        return self.layers[0].cross_k.shape[0]

    def reorder(self, index: Tensor) -> None:
        """Keep decoder rows ``index`` (B',), e.g. the beams that survived a step."""
        self.row_audio = self.row_audio.index_select(0, index)
        for layer in self.layers:
            if layer.self_k is not None:
                layer.self_k = layer.self_k.index_select(0, index)
                layer.self_v = layer.self_v.index_select(0, index)

    def select_audio(self, keep: Tensor) -> None:
        """Keep only audio items ``keep`` (A',); rows of the others must be dropped next."""
        remap = torch.full((self.n_audio,), -1, dtype=torch.long)
        remap[keep] = torch.arange(keep.numel())
        self.row_audio = remap[self.row_audio]
        for layer in self.layers:
            layer.cross_k = layer.cross_k.index_select(0, keep)
            layer.cross_v = layer.cross_v.index_select(0, keep)

    def rows_per_audio(self) -> int | None:
        """K when the rows are K per item in item order (then beams share keys), else None."""
        b, a = self.row_audio.numel(), self.n_audio
        if b % a:
            return None
        grouped = torch.arange(a).repeat_interleave(b // a)
        return b // a if torch.equal(self.row_audio, grouped) else None


class MultiHeadAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.query = Linear(n_state, n_state)
        self.key = Linear(n_state, n_state, bias=False)  # Whisper's keys have no bias
        self.value = Linear(n_state, n_state)
        self.out = Linear(n_state, n_state)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, causal: bool = False) -> Tensor:
        """Attend (N, Tq, D) queries to (N, Tk, D) keys and values -> (N, Tq, D).

        With ``causal``, query i sees keys up to ``Tk - Tq + i`` (cached keys come first).
        """
        n, tq, d = q.shape
        tk = k.shape[1]
        h = self.n_head
        q = q.view(n, tq, h, d // h).transpose(1, 2)  # (N, H, Tq, D/H)
        k = k.view(n, tk, h, d // h).transpose(1, 2)  # (N, H, Tk, D/H)
        v = v.view(n, tk, h, d // h).transpose(1, 2)
        mask = None
        if causal and tq > 1:
            mask = torch.ones(tq, tk, dtype=torch.bool, device=q.device).tril(tk - tq)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, H, Tq, D/H)
        return self.out(out.transpose(1, 2).reshape(n, tq, d))

    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        """Attention logits (N, H, Tq, Tk) of (N, Tq, D) on (N, Tk, D), before the softmax."""
        n, tq, d = q.shape
        h = self.n_head
        q = q.view(n, tq, h, d // h).transpose(1, 2)
        k = k.view(n, k.shape[1], h, d // h).transpose(1, 2)
        return (q @ k.transpose(-1, -2)).float() / math.sqrt(d // h)


class EncoderBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = LayerNorm(n_state)
        self.mlp = nn.Sequential(Linear(n_state, 4 * n_state), nn.GELU(),
                                 Linear(4 * n_state, n_state))  # fmt: skip
        self.mlp_ln = LayerNorm(n_state)

    def forward(self, x: Tensor) -> Tensor:
        y = self.attn_ln(x)
        x = x + self.attn(self.attn.query(y), self.attn.key(y), self.attn.value(y))
        return x + self.mlp(self.mlp_ln(x))


class AudioEncoder(nn.Module):
    def __init__(self, dims: ModelDims) -> None:
        super().__init__()
        d = dims.n_audio_state
        self.conv1 = nn.Conv1d(dims.n_mels, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(dims.n_audio_ctx, d))
        self.blocks = nn.ModuleList(
            EncoderBlock(d, dims.n_audio_head) for _ in range(dims.n_audio_layer)
        )
        self.ln_post = LayerNorm(d)

    def forward(self, mel: Tensor) -> Tensor:
        """Log-Mel features (A, n_mels, 2 * S) -> audio features (A, S, D)."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).permute(0, 2, 1)  # (A, S, D)
        if x.shape[1] > self.positional_embedding.shape[0]:
            raise ValueError(
                f"audio features have {x.shape[1]} frames; the model takes at most "
                f"{self.positional_embedding.shape[0]} (30 s)"
            )
        x = x + self.positional_embedding[: x.shape[1]].to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x)


class DecoderBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = LayerNorm(n_state)
        self.cross_attn = MultiHeadAttention(n_state, n_head)
        self.cross_attn_ln = LayerNorm(n_state)
        self.mlp = nn.Sequential(Linear(n_state, 4 * n_state), nn.GELU(),
                                 Linear(4 * n_state, n_state))  # fmt: skip
        self.mlp_ln = LayerNorm(n_state)

    def forward(self, x: Tensor, cache: LayerCache, group: int | Tensor,
                cross_scores: list[Tensor] | None = None) -> Tensor:  # fmt: skip
        """(B, T, D) new positions -> (B, T, D); appends their keys and values to ``cache``,
        and with ``cross_scores`` (one row per audio item) its cross-attention logits."""
        x = self.self_attend(x, cache)
        y = self.cross_attn_ln(x)
        if cross_scores is not None:
            cross_scores.append(self.cross_attn.scores(self.cross_attn.query(y), cache.cross_k))
        x = x + self.cross_attend(y, cache, group)
        return x + self.mlp(self.mlp_ln(x))

    def self_attend(self, x: Tensor, cache: LayerCache) -> Tensor:
        y = self.attn_ln(x)
        k, v = self.attn.key(y), self.attn.value(y)
        if cache.self_k is not None:
            k = torch.cat([cache.self_k, k], dim=1)  # (B, T_cached + T, D)
            v = torch.cat([cache.self_v, v], dim=1)
        cache.self_k, cache.self_v = k, v
        return x + self.attn(self.attn.query(y), k, v, causal=True)

    def cross_attend(self, y: Tensor, cache: LayerCache, group: int | Tensor) -> Tensor:
        """Cross-attention of (B, T, D) to the rows' audio; ``group``: K or (B,) items."""
        b, t, d = y.shape
        q = self.cross_attn.query(y)
        if isinstance(group, int):
            # K beams of an item share its keys: their queries are folded into one row
            # per item, (A, K * T, D), instead of copying 1500 keys for every beam.
            a = cache.cross_k.shape[0]
            out = self.cross_attn(q.reshape(a, group * t, d), cache.cross_k, cache.cross_v)
            return out.reshape(b, t, d)
        k = cache.cross_k.index_select(0, group)  # (B, S, D)
        return self.cross_attn(q, k, cache.cross_v.index_select(0, group))


class TextDecoder(nn.Module):
    def __init__(self, dims: ModelDims) -> None:
        super().__init__()
        d = dims.n_text_state
        self.token_embedding = nn.Embedding(dims.n_vocab, d)
        self.positional_embedding = nn.Parameter(torch.empty(dims.n_text_ctx, d))
        self.blocks = nn.ModuleList(
            DecoderBlock(d, dims.n_text_head) for _ in range(dims.n_text_layer)
        )
        self.ln = LayerNorm(d)

    def new_cache(self, audio_features: Tensor) -> KVCache:
        """A cache holding the cross-attention keys of (A, S, D) audio features."""
        layers = []
        for block in self.blocks:
            attn = block.cross_attn
            layers.append(LayerCache(cross_k=attn.key(audio_features),
                                     cross_v=attn.value(audio_features)))  # fmt: skip
        return KVCache(layers, torch.arange(audio_features.shape[0]))

    def forward(self, tokens: Tensor, cache: KVCache,
                cross_scores: list[Tensor] | None = None) -> Tensor:  # fmt: skip
        """Next-token logits (B, T, V) for (B, T) new tokens after ``cache.length`` cached.

        Row b reads the audio of ``cache.row_audio[b]``. A ``cross_scores`` list receives
        each block's cross-attention logits, (A, H, T, S), when rows are audio items (B ==
        A): word timestamps align tokens to audio with a few of these heads, softmaxed
        over the frames of real audio only, hence logits.
        """
        offset = cache.length
        if offset + tokens.shape[1] > self.positional_embedding.shape[0]:
            raise ValueError(
                f"{offset + tokens.shape[1]} tokens exceed the decoder's "
                f"{self.positional_embedding.shape[0]} positions"
            )
        pos = self.positional_embedding[offset : offset + tokens.shape[1]]
        x = self.token_embedding(tokens) + pos  # (B, T, D)
        x = x.to(cache.layers[0].cross_k.dtype)
        group = cache.rows_per_audio()
        if group is None:
            group = cache.row_audio
        if tokens.shape[0] != cache.row_audio.numel():
            raise ValueError(f"{tokens.shape[0]} token rows for a cache of "
                             f"{cache.row_audio.numel()} rows")  # fmt: skip
        if cross_scores is not None and not (isinstance(group, int) and group == 1):
            raise ValueError("cross-attention scores need one decoder row per audio item")
        for block, layer in zip(self.blocks, cache.layers, strict=True):
            x = block(x, layer, group, cross_scores)
        x = self.ln(x)
        # Output projection tied to the token embedding, in float32 for stable log-softmax.
        return (x @ self.token_embedding.weight.to(x.dtype).T).float()


class Whisper(nn.Module):
    def __init__(self, dims: ModelDims) -> None:
        super().__init__()
        self.dims = dims
        self.encoder = AudioEncoder(dims)
        self.decoder = TextDecoder(dims)

    @property
    def is_multilingual(self) -> bool:
        return self.dims.n_vocab >= 51865

    def forward(self, mel: Tensor, tokens: Tensor) -> Tensor:
        """Logits (A, T, V) of (A, T) tokens on (A, n_mels, 3000) features, no cache kept."""
        cache = self.decoder.new_cache(self.encoder(mel))
        return self.decoder(tokens, cache)
