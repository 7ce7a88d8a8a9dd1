"""The tiny random-weight Whisper that the torch backend's unit tests search over."""

from __future__ import annotations

import torch

from ctxasr.whisper.decoding import WhisperTokens
from ctxasr.whisper.model import ModelDims, Whisper

# Text tokens 0..5, then Whisper's specials in their usual order, then two timestamps.
TOKENS = WhisperTokens(eot=6, sot=7, no_speech=8, no_timestamps=9, timestamp_begin=10,
                       n_vocab=12)  # fmt: skip
SPECIALS = (TOKENS.sot, TOKENS.no_speech, TOKENS.no_timestamps, 10, 11)
PROMPT = [TOKENS.sot, TOKENS.no_timestamps]  # no timestamps: text tokens only
DIMS = ModelDims(n_mels=8, n_audio_ctx=6, n_audio_state=16, n_audio_head=2,
                 n_audio_layer=1, n_vocab=12, n_text_ctx=16, n_text_state=16,
                 n_text_head=2, n_text_layer=2)  # fmt: skip


def tiny_model() -> Whisper:
    """Seeded random weights, large enough (std 0.5) that the search has choices."""
    torch.manual_seed(0)
    m = Whisper(DIMS).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    return m


def features(model: Whisper, n_audio: int = 1, seed: int = 1) -> torch.Tensor:
    """(n_audio, n_audio_ctx, D) encoder output of seeded random log-Mel features."""
    g = torch.Generator().manual_seed(seed)
    mel = torch.randn(n_audio, DIMS.n_mels, 2 * DIMS.n_audio_ctx, generator=g)
    with torch.no_grad():
        return model.encoder(mel)
