"""MADEON recipes: frozen dataclasses with defaults and checks, read from YAML or TOML.

A recipe has a ``train`` table (``TrainConfig``), a ``model`` table (``ModelConfig``) and,
unless ``train.tokenizer`` names a trained tokenizer folder, a ``tokenizer`` table that
the run fits first (``ctxasr.madeon.tokens``). Unknown keys and bad values are one-line
``CtxasrError``\\ s naming the file, the table and the key; relative paths are taken
from the config file's folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctxasr.errors import CtxasrError
from ctxasr.training import at_least, build_table, check_known, one_of, read_recipe

KINDS = ("mamba", "mamba2", "transformer")
PREFIXING = ("none", "serial", "parallel")


@dataclass(frozen=True)
class ModelConfig:
    """The decoder: ``layers`` blocks of one ``kind`` over the joint vocabulary.

    Speech prefixing (``prefix``) runs a second, backward mixer over the speech prefix
    (``[bos] speech [sep]``) in every layer, so the prefix's hidden states carry what
    comes after as well as before: ``serial`` runs it first, as a residual sublayer of
    its own, then the forward mixer over everything; ``parallel`` adds the two mixers'
    outputs on the prefix. The text is decoded left to right in every form.
    """

    kind: str = "mamba"  # "mamba" | "mamba2" | "transformer"
    prefix: str = "none"  # "none" | "serial" | "parallel" (Mamba kinds only)
    d_model: int = 256
    layers: int = 6
    d_state: int = 0  # SSM state per channel; 0: 16 for Mamba, 64 for Mamba-2
    expand: int = 2  # the mixers' inner width, times d_model
    headdim: int = 32  # Mamba-2's head width
    heads: int = 4  # the Transformer's attention heads
    ffn: int = 0  # the Transformer's feed-forward width; 0: 4 x d_model
    max_len: int = 2048  # the Transformer's learned positions (Mamba has none)
    dropout: float = 0.1
    chunk: int = 64  # time steps per chunk of the SSMs' chunked scan
    vocab: int = 0  # set from the tokenizer when the model is built

    def __post_init__(self) -> None:
        one_of(self, "kind", KINDS)
        one_of(self, "prefix", PREFIXING)
        if self.kind == "transformer" and self.prefix != "none":
            raise ValueError("prefix must be 'none' for kind 'transformer' (speech prefixing "
                             "is a backward SSM over the speech)")  # fmt: skip
        for name in ("d_model", "layers", "expand", "headdim", "heads", "max_len", "chunk"):
            at_least(self, name, 1)
        at_least(self, "d_state", 0)
        at_least(self, "ffn", 0)
        at_least(self, "vocab", 0)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.kind == "transformer" and self.d_model % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide d_model ({self.d_model})")
        if self.kind == "mamba2" and (self.expand * self.d_model) % self.headdim:
            raise ValueError(f"headdim ({self.headdim}) must divide expand x d_model "
                             f"({self.expand * self.d_model})")  # fmt: skip

    @property
    def state(self) -> int:
        return self.d_state or (64 if self.kind == "mamba2" else 16)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ModelConfig:
        return cls(**obj)


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe: the ``train`` table, and the ``model`` it trains."""

    train: str  # NeMo-style JSONL manifest: audio_filepath, text
    out: str  # the run's folder: tokenizer (when fitted here), state, then the checkpoint
    dev: str = ""  # manifest scored every ``eval_every`` steps and at the end ("": none)
    tokenizer: str = ""  # a fitted tokenizer's folder ("": fit the recipe's ``tokenizer``)
    cache: str = ""  # the encoder's frames ("": the tokenizer table's cache, else OUT/cache)
    seed: int = 0
    steps: int = 2000  # optimizer updates
    batch: int = 16  # utterances per micro-batch
    grad_accum: int = 1  # micro-batches per update
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 100  # steps of linear warm-up, then cosine decay to 0
    eval_every: int = 500
    save_every: int = 500
    bucket: int = 20  # micro-batches per duration bucket
    max_new_tokens: int = 200  # dev decoding
    lowercase: bool = True
    threads: int = 2  # CPU threads of torch
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "grad_accum", "eval_every", "save_every", "threads",
                     "bucket", "max_new_tokens"):  # fmt: skip
            at_least(self, name, 1)
        at_least(self, "warmup", 0)
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


def read_config(path: str | Path, *, steps: int | None = None,
                out: str | Path | None = None) -> tuple[TrainConfig, dict | None]:  # fmt: skip
    """The recipe in ``path``: its ``TrainConfig`` and its raw ``tokenizer`` table (None
    when ``train.tokenizer`` names a fitted one). ``steps`` and ``out`` override the
    file's (the CLI's ``--max-steps`` and ``-o``).

    Raises:
        CtxasrError: ``"<file>: [table] key: problem"`` for a bad file, table or value.
    """
    p = Path(path)
    raw = read_recipe(p)
    check_known(p, "the file", raw, {"train", "model", "tokenizer"})
    model = build_table(p, "model", ModelConfig, raw.get("model", {}) or {})
    train = dict(raw.get("train", {}) or {})
    if out is not None:
        train["out"] = str(Path(out).resolve())
    if steps is not None:
        train["steps"] = steps
    for key in ("train", "out"):
        if key not in train:
            raise CtxasrError(str(p), f"[train] needs '{key}'")
    for key in ("train", "out", "dev", "tokenizer", "cache"):
        if isinstance(train.get(key), str) and train[key]:
            train[key] = str((p.parent / train[key]).resolve())
    cfg = build_table(p, "train", TrainConfig, {**train, "model": model}, skip={"model"})
    tokenizer = raw.get("tokenizer")
    if cfg.tokenizer and tokenizer is not None:
        raise CtxasrError(str(p), "give either [train] tokenizer (a fitted folder) or a "
                          "[tokenizer] table to fit, not both")  # fmt: skip
    if not cfg.tokenizer and tokenizer is None:
        raise CtxasrError(str(p), "needs [train] tokenizer (a folder made by `ctxasr train "
                          "tokenizer`) or a [tokenizer] table to fit one")  # fmt: skip
    return cfg, tokenizer
