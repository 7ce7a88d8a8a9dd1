"""The A2P retriever's dimensions and its term vocabulary (numpy only; no torch here).

A term is said as a sequence of *tokens*: ``0`` pads, ``1 + p`` is phone ``p`` of
``ctxasr.context.phonetic.PHONES``, and ``BOUNDARY`` separates the words of a term.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ctxasr.context.phonetic import PHONES

FORMAT_VERSION = 1  # bump when the weights' layout or meaning changes
PAD = 0
BOUNDARY = len(PHONES) + 1
VOCAB = len(PHONES) + 2  # pad, the phones, the word boundary
ENCODER = "whisper-tiny.en (CTranslate2 int8, faster-whisper features, 30 s padded)"


@dataclass(frozen=True)
class A2PConfig:
    """Dimensions of the network; saved as ``config.json`` next to the weights."""

    version: int = FORMAT_VERSION
    encoder: str = ENCODER  # the speech encoder whose output the model listens to
    encoder_dim: int = 384  # width of the encoder output (tiny.en: 384)
    frames: int = 1500  # encoder frames of one 30 s stretch, padding included
    pool: int = 4  # encoder frames averaged into one memory slot (x4: 80 ms)
    d_model: int = 64
    heads: int = 2
    ffn: int = 128
    head_hidden: int = 64
    max_tokens: int = 32  # longest term, in tokens (phones and word boundaries)
    # Also tell the head whether the phones were found in order: a term really said has
    # its phones attend to successive moments, a sound-alike's scatter over the stretch.
    order: bool = False
    vocab: int = VOCAB

    def __post_init__(self) -> None:
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of heads {self.heads}")
        if self.frames % self.pool:
            raise ValueError(f"frames {self.frames} is not a multiple of pool {self.pool}")

    @property
    def slots(self) -> int:
        """Memory slots per stretch: ``frames // pool``."""
        return self.frames // self.pool

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> A2PConfig:
        """Raises ``ValueError`` (naming the key) on unknown keys or a bad version."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config key {unknown[0]!r}")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"unknown format version {data.get('version')!r} (expected {FORMAT_VERSION})"
            )
        return cls(**data)  # type: ignore[arg-type]


def term_tokens(pron: tuple[tuple[int, ...], ...] | list, max_tokens: int) -> list[int]:
    """One pronunciation (words of phone ids) as tokens, cut at ``max_tokens``."""
    tokens: list[int] = []
    for i, word in enumerate(pron):
        if i:
            tokens.append(BOUNDARY)
        tokens.extend(1 + int(p) for p in word)
    return tokens[:max_tokens]
