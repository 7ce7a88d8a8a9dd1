"""What the speech LLM needs of a speech encoder, and a random one for tests.

A speech encoder is frozen: it maps 16 kHz mono samples to frames and is never trained,
so its outputs can be computed once and cached (``ctxasr.speechllm.data``). Real
encoders (Whisper, Moonshine) live in ``ctxasr.speechllm.encoders``;
:func:`load_encoder` resolves a name to one:

* ``"random"`` or ``"random:DIM:RATE"`` (e.g. ``"random:48:25"``): :class:`RandomEncoder`;
* anything else goes to ``ctxasr.speechllm.encoders.encoder_from_name(name)``
  (``"whisper:tiny.en"``, ``"whisper:base"``, ``"moonshine:base"``).
"""

from __future__ import annotations

import math
import zlib
from typing import Protocol, runtime_checkable

import numpy as np

from ctxasr.errors import ModelError

SAMPLE_RATE = 16_000  # Hz, what every encoder takes


@runtime_checkable
class SpeechEncoder(Protocol):
    """A frozen speech encoder: ``(n,)`` float32 samples at 16 kHz -> ``(T, dim)`` float32.

    ``T`` is about ``n / SAMPLE_RATE * frame_rate`` (an encoder may round or pad);
    no gradient flows through it and calling it twice gives the same frames.
    """

    name: str  # the name it was loaded by; keys the frame cache and the checkpoint
    dim: int  # width of a frame
    frame_rate: float  # frames per second of audio

    def __call__(self, samples: np.ndarray) -> np.ndarray: ...


class RandomEncoder:
    """A deterministic stand-in: log power spectra of ``2 / frame_rate`` s Hann windows
    every ``1 / frame_rate`` s, standardised, through a fixed random projection and tanh.
    Different sounds give different frames, so a model can learn from them."""

    def __init__(self, dim: int = 64, frame_rate: float = 50.0, name: str = "") -> None:
        if dim < 1 or not 1.0 <= frame_rate <= SAMPLE_RATE / 4:
            raise ValueError(f"a random encoder needs dim >= 1 and 1..4000 fps, got {dim}, "
                             f"{frame_rate}")  # fmt: skip
        self.name = name or f"random:{dim}:{frame_rate:g}"
        self.dim = dim
        self.frame_rate = float(frame_rate)
        self.hop = round(SAMPLE_RATE / frame_rate)  # samples between frames
        bins = self.hop + 1  # rfft of a 2-hop window
        rng = np.random.default_rng(zlib.crc32(self.name.encode()))
        self.weight = (rng.standard_normal((bins, dim)) / math.sqrt(bins)).astype(np.float32)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        T = max(1, math.ceil(len(x) / self.hop))
        win = 2 * self.hop
        x = np.pad(x, (self.hop // 2, T * self.hop + win - len(x) - self.hop // 2))
        frames = np.lib.stride_tricks.sliding_window_view(x, win)[:: self.hop][:T]  # (T, win)
        power = np.abs(np.fft.rfft(frames * np.hanning(win), axis=-1)) ** 2  # (T, hop + 1)
        feats = np.log10(power + 1e-10)
        feats = (feats - feats.mean()) / (feats.std() + 1e-5)
        return np.tanh(feats @ self.weight).astype(np.float32)  # (T, dim)


def load_encoder(name: str) -> SpeechEncoder:
    """The encoder ``name`` stands for (see the module doc).

    Raises:
        ModelError: the name is malformed or names no encoder this install has.
    """
    if name == "random" or name.startswith("random:"):
        parts = name.split(":")[1:]
        try:
            dim, rate = (int(parts[0]), float(parts[1])) if parts else (64, 50.0)
            if len(parts) not in (0, 2):
                raise ValueError
            return RandomEncoder(dim, rate, name=name)
        except (ValueError, IndexError):
            raise ModelError(name, "expected 'random' or 'random:DIM:RATE'") from None
    from ctxasr.speechllm.encoders import encoder_from_name

    return encoder_from_name(name)
