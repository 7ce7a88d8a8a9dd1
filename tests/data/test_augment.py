"""Tests for ``ctxasr.data.augment``: seeded, measured distortions on synthetic signals."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ctxasr.data.augment import (
    PRESETS,
    AugmentOptions,
    augment,
    change_speed,
    codec_round_trip,
    coloured_noise,
    mix_at_snr,
    reverberate,
    speech_power,
    telephone,
)

SR = 16_000
NONE = PRESETS["none"]


def speechlike(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Bursts of harmonics (a 'word' every 0.5 s) with silent gaps: float32 (n,)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    voiced = sum(
        np.sin(2 * np.pi * f0 * t) / k for k, f0 in enumerate((150, 300, 450, 900, 2500), 1)
    )
    gate = (t % 0.5) < 0.3
    return (0.2 * voiced * gate + 0.001 * rng.standard_normal(t.shape) * gate).astype(np.float32)


def band_energy(x: np.ndarray, low: float, high: float) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.shape[0], 1 / SR)
    return float(power[(f >= low) & (f < high)].sum())


ALL = AugmentOptions(
    speed_p=1.0, reverb_p=1.0, babble_p=1.0, noise_p=1.0, telephone_p=1.0, codec_p=1.0
)


def test_same_seed_same_audio_and_description():
    x, babble = speechlike(), [speechlike(2.0, 1), speechlike(1.0, 2)]
    a, da = augment(x, np.random.default_rng(7), ALL, babble)
    b, db = augment(x, np.random.default_rng(7), ALL, babble)
    _, dc = augment(x, np.random.default_rng(8), ALL, babble)
    assert np.array_equal(a, b) and da == db
    assert dc != da
    assert list(da)[:6] == ["speed", "reverb", "babble", "noise", "telephone", "codec"]


@pytest.mark.parametrize("seed", range(5))
def test_output_is_finite_float32_within_full_scale(seed):
    x = speechlike() * 8.0  # starts beyond full scale: augment scales, never clips
    y, _ = augment(x, np.random.default_rng(seed), ALL, [speechlike(1.0, 3)])
    assert y.dtype == np.float32 and y.ndim == 1 and np.isfinite(y).all()
    assert np.abs(y).max() <= 1.0


def test_loud_audio_is_scaled_not_clipped():
    x = speechlike() * 8.0
    y, applied = augment(x, np.random.default_rng(0), dataclasses.replace(NONE, noise_p=1.0))
    assert np.abs(y).max() == pytest.approx(0.99)
    assert applied["gain_db"] < -6
    assert np.corrcoef(x, y)[0, 1] > 0.9  # the same waveform, only quieter


def test_no_steps_is_the_identity():
    x = speechlike()
    y, applied = augment(x, np.random.default_rng(0), NONE)
    assert applied == {} and np.array_equal(y, x)


def test_babble_needs_utterances():
    only_babble = dataclasses.replace(NONE, babble_p=1.0)
    assert augment(speechlike(), np.random.default_rng(0), only_babble)[1] == {}
    assert (
        "babble" in augment(speechlike(), np.random.default_rng(0), only_babble, [speechlike()])[1]
    )


@pytest.mark.parametrize("colour", ["white", "pink", "brown"])
@pytest.mark.parametrize("snr_db", [0.0, 7.5, 20.0])
def test_snr_is_measured_on_speech(colour, snr_db):
    x = speechlike().astype(np.float64)
    noise = coloured_noise(x.shape[0], colour, np.random.default_rng(1))
    mixed = mix_at_snr(x, noise, snr_db)
    measured = 10 * np.log10(speech_power(x) / np.mean(np.square(mixed - x)))
    assert abs(measured - snr_db) < 0.5
    # The silent gaps do not count: speech power is that of the bursts alone.
    assert speech_power(x) == pytest.approx(np.mean(np.square(x[x != 0])), rel=0.1)


def test_augment_noise_snr_matches_the_description():
    x = speechlike().astype(np.float64)
    options = dataclasses.replace(NONE, noise_p=1.0)
    y, applied = augment(x, np.random.default_rng(3), options)
    measured = 10 * np.log10(speech_power(x) / np.mean(np.square(y.astype(np.float64) - x)))
    assert abs(measured - applied["noise"]["snr_db"]) < 0.5


def test_noise_colours_tilt_the_spectrum():
    rng = np.random.default_rng(0)
    lows = {
        c: band_energy(coloured_noise(SR * 4, c, rng), 50, 500)
        / band_energy(coloured_noise(SR * 4, c, np.random.default_rng(0)), 50, 8000)
        for c in ("white", "pink", "brown")
    }
    assert lows["white"] < lows["pink"] < lows["brown"]


def test_telephone_band_has_nothing_above_4_khz_or_below_300_hz():
    x = speechlike().astype(np.float64) + 0.05 * coloured_noise(
        SR * 3, "white", np.random.default_rng(0)
    )
    y = telephone(x)
    assert y.shape == x.shape
    total = band_energy(y, 0, 8000)
    assert band_energy(y, 4000, 8001) < 1e-9 * total
    assert band_energy(y, 3450, 8001) < 1e-9 * total
    assert band_energy(y, 0, 250) < 1e-6 * total
    assert band_energy(y, 300, 3400) > 0.99 * total


@pytest.mark.parametrize("factor", [0.9, 1.0, 1.07, 1.15])
def test_speed_changes_the_length_by_the_factor(factor):
    x = speechlike()
    y = change_speed(x, factor)
    assert y.shape[0] == round(x.shape[0] / factor)
    # Pitch moves with tempo: the 150 Hz fundamental lands at 150 * factor.
    spectrum = np.abs(np.fft.rfft(y))
    f = np.fft.rfftfreq(y.shape[0], 1 / SR)
    assert abs(f[np.argmax(spectrum * (f < 250))] - 150 * factor) < 2


@pytest.mark.parametrize(
    ("codec", "bitrate", "frame"), [("mp3", 16_000, 576), ("opus", 8_000, 320)]
)
def test_codec_round_trip_keeps_the_length_within_a_frame(codec, bitrate, frame):
    x = speechlike(2.7)
    y = codec_round_trip(x, codec, bitrate)
    assert abs(y.shape[0] - x.shape[0]) <= frame
    assert np.isfinite(y).all() and 0.05 < np.abs(y).max() <= 1.0
    # It is still the same signal, in time: correlation at lag 0 is high.
    n = min(x.shape[0], y.shape[0])
    assert np.corrcoef(x[:n], y[:n])[0, 1] > 0.5


def test_reverb_keeps_length_and_speech_power_and_smears_the_gaps():
    x = speechlike().astype(np.float64)
    y = reverberate(x, 0.6, 0.0, np.random.default_rng(0))
    assert y.shape == x.shape
    assert speech_power(y) == pytest.approx(speech_power(x), rel=1e-6)
    gap = slice(int(0.32 * SR), int(0.45 * SR))  # silent in x; the tail fills it
    assert np.mean(np.square(y[gap])) > 1e-3 * speech_power(x)


def test_options_are_checked():
    with pytest.raises(ValueError, match="speed_p"):
        AugmentOptions(speed_p=1.5)
    with pytest.raises(ValueError, match="noise_snr_range_db"):
        AugmentOptions(noise_snr_range_db=(20.0, 0.0))
    with pytest.raises(ValueError, match="codecs"):
        AugmentOptions(codecs=("aac",))
