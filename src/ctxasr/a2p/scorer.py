"""Scoring context terms against speech with a trained A2P model, in numpy.

Per 30 s stretch, :meth:`A2PScorer.listen` turns the Whisper encoder's output into keys
and values once; :meth:`A2PScorer.score` then gives, for any terms of a
:class:`TermTable`, the probability that each was spoken there. This is the network of
``ctxasr.a2p.model`` without torch: the package ships it with numpy and safetensors only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctxasr.a2p.config import A2PConfig, term_tokens
from ctxasr.errors import ModelError
from ctxasr.files import read_json_object

DEFAULT_NAME = "a2p-tiny.en"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "MODEL_CARD.md"
BATCH_TERMS = 64  # terms scored per matrix product: keeps the (H, B*L, T) scores in cache
_EPS = 1e-5  # LayerNorm's, as in torch


def packaged_weights_dir(name: str = DEFAULT_NAME) -> Path:
    """Where the package keeps the trained weights called ``name``."""
    return Path(__file__).parent / "weights" / name


@dataclass(frozen=True)
class TermTable:
    """Terms as padded token rows: ``tokens`` (N, L) int16, ``lengths`` (N,) int32."""

    tokens: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return int(self.lengths.shape[0])


@dataclass(frozen=True)
class Memory:
    """One stretch of speech, ready to be attended: keys (H, dh, T), values (H, T, dh)."""

    keys: np.ndarray
    values: np.ndarray


def shapes(c: A2PConfig) -> dict[str, tuple[int, ...]]:
    """Every weight's name and shape (the torch module's ``state_dict``)."""
    d, e, f, g = c.d_model, c.encoder_dim, c.ffn, c.head_hidden
    out: dict[str, tuple[int, ...]] = {
        "tok_emb.weight": (c.vocab, d),
        "pos_emb": (c.max_tokens, d),
        "key.weight": (d, e), "key.bias": (d,),
        "value.weight": (d, e), "value.bias": (d,),
        "query.weight": (d, d), "query.bias": (d,),
        "out.weight": (d, d), "out.bias": (d,),
        "conv.weight": (d, d, 3), "conv.bias": (d,),
        "ffn1.weight": (f, d), "ffn1.bias": (f,),
        "ffn2.weight": (d, f), "ffn2.bias": (d,),
        "head1.weight": (g, d + (4 if c.order else 2) * c.heads), "head1.bias": (g,),
        "head2.weight": (1, g), "head2.bias": (1,),
    }  # fmt: skip
    for norm, width in (("mem_norm", e), ("q_norm", d), ("conv_norm", d), ("ffn_norm", d),
                        ("head_norm", d)):  # fmt: skip
        out[f"{norm}.weight"] = (width,)
        out[f"{norm}.bias"] = (width,)
    return out


class A2PScorer:
    """The probability that each context term is spoken in a 30 s stretch of speech.

    >>> scorer = A2PScorer.load()
    >>> table = scorer.term_table(Pronouncer().terms(["Quilter"]))  # doctest: +SKIP
    >>> scorer.score(scorer.listen(frames), table, np.arange(len(table)))  # doctest: +SKIP
    """

    def __init__(self, config: A2PConfig, weights: dict[str, np.ndarray]) -> None:
        self.config = config
        self._w = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
        w = self._w
        # Weights laid out for x @ W; the conv's three taps as (3, d_in, d_out).
        self._t = {k[:-7]: w[k].T.copy() for k in w if k.endswith(".weight") and w[k].ndim == 2
                   and not k.startswith(("tok_emb",))}  # fmt: skip
        self._conv = np.ascontiguousarray(w["conv.weight"].transpose(2, 1, 0))  # (3, d, d)

    @property
    def encoder_dim(self) -> int:
        return self.config.encoder_dim

    @property
    def encoder(self) -> str:
        """The speech encoder the model was trained on."""
        return self.config.encoder

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> A2PScorer:
        """Weights from a folder holding ``model.safetensors`` and ``config.json``, or the
        packaged model when ``path`` is None.

        Raises:
            ModelError: naming the file that is missing, corrupt, truncated or mismatched.
        """
        folder = packaged_weights_dir() if path is None else Path(path)
        if not folder.is_dir():
            raise ModelError(str(folder), "no such model folder")
        config = _read_config(folder / CONFIG_FILE)
        return cls(config, _read_weights(folder / WEIGHTS_FILE, config))

    # -- terms -----------------------------------------------------------------------------

    def term_table(self, prons: Sequence[Sequence[Sequence[int]]]) -> TermTable:
        """Padded tokens of one pronunciation per term (its words, each of phone ids)."""
        rows = [term_tokens(p, self.config.max_tokens) for p in prons]
        tokens = np.zeros((len(rows), self.config.max_tokens), dtype=np.int16)
        lengths = np.zeros(len(rows), dtype=np.int32)
        for i, row in enumerate(rows):
            tokens[i, : len(row)] = row
            lengths[i] = len(row)
        return TermTable(tokens, lengths)

    # -- speech ----------------------------------------------------------------------------

    def listen(self, frames: np.ndarray) -> Memory:
        """Keys and values of one stretch: ``frames`` (1500, E) encoder output, padding
        included; already pooled frames (1500 / pool, E) are accepted too."""
        c = self.config
        x = np.asarray(frames, dtype=np.float32)
        if x.ndim == 3 and x.shape[0] == 1:
            x = x[0]
        if x.ndim != 2 or x.shape[1] != c.encoder_dim or x.shape[0] not in (c.frames, c.slots):
            raise ValueError(
                f"frames must be ({c.frames}, {c.encoder_dim}) encoder output, got {x.shape}"
            )
        if x.shape[0] == c.frames:
            x = x.reshape(c.slots, c.pool, c.encoder_dim).mean(1)  # (T, E)
        x = self._norm(x, "mem_norm")  # (T, E)
        H, T = c.heads, x.shape[0]
        k = self._linear(x, "key").reshape(T, H, -1).transpose(1, 2, 0)  # (H, dh, T)
        v = self._linear(x, "value").reshape(T, H, -1).transpose(1, 0, 2)  # (H, T, dh)
        return Memory(np.ascontiguousarray(k), np.ascontiguousarray(v))

    def score(self, memory: Memory, table: TermTable, ids: np.ndarray) -> np.ndarray:
        """Probabilities (len(ids),) in [0, 1] that the terms ``ids`` of ``table`` are
        spoken in ``memory``'s stretch; 0 for a term with nothing to say."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.zeros(ids.shape[0], dtype=np.float32)
        lengths = table.lengths[ids]
        order = np.argsort(lengths, kind="stable")  # similar lengths batch with little padding
        order = order[lengths[order] > 0]
        for start in range(0, order.shape[0], BATCH_TERMS):
            pick = order[start : start + BATCH_TERMS]
            width = int(lengths[pick].max())
            logits = self._logits(memory, table.tokens[ids[pick], :width])
            out[pick] = 1.0 / (1.0 + np.exp(-logits))
        return out

    def _logits(self, memory: Memory, tokens: np.ndarray) -> np.ndarray:
        """Logits (N,) of terms (N, L) tokens."""
        c, w = self.config, self._w
        N, L = tokens.shape
        H, d = c.heads, c.d_model
        mask = (tokens != 0)[..., None]  # (N, L, 1)
        e = w["tok_emb.weight"][tokens] + w["pos_emb"][:L]  # (N, L, d)
        q = self._linear(self._norm(e, "q_norm"), "query")  # (N, L, d)
        q = q.reshape(N * L, H, -1).transpose(1, 0, 2) * (1.0 / math.sqrt(d // H))  # (H, NL, dh)
        s = q @ memory.keys  # (H, NL, T)
        peak = s.max(-1)  # (H, NL)
        a = np.exp(s - peak[..., None], out=s)  # (H, NL, T)
        a /= a.sum(-1, keepdims=True)
        ctx = (a @ memory.values).transpose(1, 0, 2).reshape(N, L, d)  # (N, L, d)
        h = (e + self._linear(ctx, "out")) * mask  # (N, L, d)
        x = self._norm(h, "conv_norm") * mask  # (N, L, d)
        x = np.pad(x, ((0, 0), (1, 1), (0, 0)))  # (N, L + 2, d)
        conv = x[:, :-2] @ self._conv[0] + x[:, 1:-1] @ self._conv[1] + x[:, 2:] @ self._conv[2]
        h = (h + conv + w["conv.bias"]) * mask  # (N, L, d)
        h = h + self._linear(_gelu(self._linear(self._norm(h, "ffn_norm"), "ffn1")), "ffn2")
        peak = peak.reshape(H, N, L).transpose(1, 2, 0)  # (N, L, H)
        count = np.maximum(mask.sum(1), 1)  # (N, 1)
        mean = (self._norm(h, "head_norm") * mask).sum(1) / count  # (N, d)
        peak_min = np.where(mask, peak, np.inf).min(1)  # (N, H)
        z = np.concatenate([mean, (peak * mask).sum(1) / count, peak_min], axis=-1)  # (N, d+2H)
        if c.order:  # as ``ctxasr.a2p.model._order``
            where = (a @ np.arange(a.shape[-1], dtype=a.dtype)).reshape(H, N, L).transpose(1, 2, 0)
            pair = mask[:, 1:] & mask[:, :-1]  # (N, L-1, 1)
            step = where[:, 1:] - where[:, :-1]  # (N, L-1, H)
            n = np.maximum(pair.sum(1), 1)  # (N, 1)
            jump = (np.log1p(np.abs(step)) * pair).sum(1) / n  # (N, H)
            back = (np.log1p(np.maximum(-step, 0.0)) * pair).sum(1) / n  # (N, H)
            z = np.concatenate([z, jump, back], axis=-1)  # (N, d + 4H)
        return self._linear(_gelu(self._linear(z, "head1")), "head2")[:, 0]  # (N,)

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self._t[name] + self._w[f"{name}.bias"]

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + _EPS) * self._w[f"{name}.weight"] + self._w[f"{name}.bias"]


def _gelu(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation (as ``F.gelu(approximate="tanh")``)."""
    inner = x * x
    inner *= 0.044715 * 0.7978845608028654
    inner += 0.7978845608028654
    inner *= x
    return 0.5 * x * (1.0 + np.tanh(inner, out=inner))


def _read_config(path: Path) -> A2PConfig:
    if not path.is_file():
        raise ModelError(str(path), "no such file")
    data = read_json_object(path, ModelError)
    try:
        return A2PConfig.from_json(data)
    except (TypeError, ValueError) as err:
        raise ModelError(str(path), str(err)) from None


def _read_weights(path: Path, config: A2PConfig) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise ModelError(str(path), "no such file")
    from safetensors.numpy import load_file

    try:
        weights = load_file(str(path))
    except Exception as err:  # noqa: BLE001 - safetensors' errors have no common base
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ModelError(str(path), f"corrupt or truncated safetensors file ({reason})") from None
    wanted = shapes(config)
    for name, shape in wanted.items():
        if name not in weights:
            raise ModelError(str(path), f"no weight {name!r}: not an A2P model of this config")
        if tuple(weights[name].shape) != shape:
            raise ModelError(
                str(path), f"weight {name!r} has shape {tuple(weights[name].shape)}, "
                f"config.json says {shape}",
            )  # fmt: skip
    extra = sorted(set(weights) - set(wanted))
    if extra:
        raise ModelError(str(path), f"unexpected weight {extra[0]!r}: not an A2P model")
    return {k: weights[k] for k in wanted}
