"""Seeded augmentation that makes clean synthetic speech as hard as real recordings.

Text-to-speech audio is clean, evenly paced and studio-dry, so Whisper finds it far easier
than real LibriSpeech test-other. :func:`augment` applies a random chain of the
distortions real recordings carry, each with its own probability, in this order:

1. **speed** perturbation (0.9-1.15): resampling, so tempo and pitch change together
   (as Kaldi's speed perturbation); the length becomes ``round(n / factor)``.
2. **reverb**: convolution with a synthetic room impulse response, a unit direct path
   plus an exponentially decaying Gaussian-noise tail whose energy falls 60 dB in RT60
   seconds, at a chosen direct-to-reverberant ratio.
3. **babble**: several other utterances summed, at an SNR.
4. **noise**: white, pink (1/f power) or brown (1/f^2 power) noise, at an SNR.
5. **telephone**: resampled down to 8 kHz, band-passed to 300-3400 Hz, back up to 16 kHz.
6. **codec**: a low-bitrate MP3 or Opus encode and decode in memory, through PyAV.

SNRs are measured on *speech* power: the mean power of the 20 ms frames within 40 dB of
the loudest frame, so the pauses between words (silent in TTS audio) do not make the
speech look quieter than it is. Every choice comes from the caller's
``np.random.Generator``, so a seed gives the same audio and the same description.

The resampling is done in the frequency domain (the real FFT of the whole signal is
truncated or zero-padded): band-limited, exact in length, numpy only.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import av
import numpy as np

SAMPLE_RATE = 16_000  # Hz, in and out (ctxasr.audio.SAMPLE_RATE)
TELEPHONE_RATE = 8_000  # Hz
TELEPHONE_BAND = (300.0, 3400.0)  # Hz: the classic telephone pass band
FRAME_SECONDS = 0.02  # seconds per frame when finding speech activity
ACTIVE_RANGE_DB = 40.0  # frames this far below the loudest one still count as speech
PEAK = 0.99  # the output is scaled down when its peak would exceed this
NOISE_COLOURS = ("white", "pink", "brown")
CODECS = ("mp3", "opus")


@dataclass(frozen=True)
class AugmentOptions:
    """Which distortions to apply (each with a probability) and the ranges drawn from.

    A range ``(low, high)`` is sampled uniformly; ``low == high`` fixes the value.
    """

    speed_p: float = 0.5
    speed_range: tuple[float, float] = (0.9, 1.15)  # factor: > 1 is faster and shorter
    reverb_p: float = 0.5
    rt60_range: tuple[float, float] = (0.2, 0.8)  # seconds for the tail to fall 60 dB
    drr_range_db: tuple[float, float] = (0.0, 10.0)  # direct-to-reverberant energy ratio
    babble_p: float = 0.3
    babble_talkers: tuple[int, int] = (3, 6)  # inclusive
    babble_snr_range_db: tuple[float, float] = (5.0, 20.0)
    noise_p: float = 0.5
    noise_colours: tuple[str, ...] = NOISE_COLOURS
    noise_snr_range_db: tuple[float, float] = (0.0, 20.0)
    telephone_p: float = 0.2
    codec_p: float = 0.3
    codecs: tuple[str, ...] = CODECS
    mp3_bitrates: tuple[int, ...] = (16_000, 24_000, 32_000)  # bits per second
    opus_bitrates: tuple[int, ...] = (8_000, 12_000, 16_000)  # bits per second

    def __post_init__(self) -> None:
        for name in ("speed_p", "reverb_p", "babble_p", "noise_p", "telephone_p", "codec_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: a probability, 0 to 1, got {getattr(self, name)}")
        for name in ("speed_range", "rt60_range", "drr_range_db", "babble_talkers",
                     "babble_snr_range_db", "noise_snr_range_db"):  # fmt: skip
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: low {low} is above high {high}")
        if self.speed_range[0] <= 0 or self.rt60_range[0] <= 0 or self.babble_talkers[0] < 1:
            raise ValueError("speed factors and RT60 must be positive, talkers at least 1")
        if unknown := set(self.noise_colours) - set(NOISE_COLOURS):
            raise ValueError(f"noise_colours: unknown {sorted(unknown)}; known {NOISE_COLOURS}")
        if unknown := set(self.codecs) - set(CODECS):
            raise ValueError(f"codecs: unknown {sorted(unknown)}; known {CODECS}")


# Named mixes for `ctxasr data synth --augment NAME`.
# - "hard": every distortion at its full range; for training data (the A2P retriever's
#   set), where variety matters more than realism. On evaluation sets it is far harsher
#   than real recordings: tiny.en's WER on espeak-ng/flite/festival voices was 52%.
# - "test-other": milder ranges and probabilities, calibrated so that tiny.en scores on
#   flite, festival and Piper voices about as on real LibriSpeech test-other (13-20% WER,
#   B-WER 30% or more); the numbers are in bench/results/synth_calibration.md.
PRESETS: dict[str, AugmentOptions] = {
    "none": AugmentOptions(
        speed_p=0.0, reverb_p=0.0, babble_p=0.0, noise_p=0.0, telephone_p=0.0, codec_p=0.0
    ),
    "hard": AugmentOptions(),
    "test-other": AugmentOptions(
        speed_p=0.3,
        reverb_p=0.3,
        rt60_range=(0.2, 0.5),
        drr_range_db=(5.0, 15.0),
        babble_p=0.15,
        babble_snr_range_db=(10.0, 25.0),
        noise_p=0.3,
        noise_snr_range_db=(10.0, 30.0),
        telephone_p=0.15,
        codec_p=0.2,
        mp3_bitrates=(24_000, 32_000),
        opus_bitrates=(12_000, 16_000),
    ),
}


def augment(
    samples: np.ndarray,
    rng: np.random.Generator,
    options: AugmentOptions = AugmentOptions(),
    babble: Sequence[np.ndarray] = (),
) -> tuple[np.ndarray, dict[str, object]]:
    """Distort ``samples`` by a random chain drawn from ``rng``.

    Args:
        samples: shape ``(n,)``, 16 kHz mono float32 in [-1, 1].
        rng: the only source of randomness.
        options: probabilities and ranges.
        babble: other utterances (16 kHz float32) to draw babble talkers from; with none,
            babble is never applied.

    Returns:
        ``(audio, applied)``: float32 ``(m,)`` in [-1, 1] (``m`` differs from ``n`` after
        speed perturbation or a codec), and a JSON-ready dict of the applied steps in
        order, e.g. ``{"speed": 1.07, "noise": {"colour": "pink", "snr_db": 8.1}}``.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"samples: expected shape (n,), got {x.shape}")
    o = options
    applied: dict[str, object] = {}
    if _coin(rng, o.speed_p):
        factor = _uniform(rng, o.speed_range)
        x = change_speed(x, factor)
        applied["speed"] = round(factor, 4)
    if _coin(rng, o.reverb_p):
        rt60, drr = _uniform(rng, o.rt60_range), _uniform(rng, o.drr_range_db)
        x = reverberate(x, rt60, drr, rng)
        applied["reverb"] = {"rt60": round(rt60, 3), "drr_db": round(drr, 2)}
    if _coin(rng, o.babble_p) and len(babble) > 0:
        talkers = int(rng.integers(o.babble_talkers[0], o.babble_talkers[1] + 1))
        snr = _uniform(rng, o.babble_snr_range_db)
        x = mix_at_snr(x, babble_noise(babble, x.shape[0], talkers, rng), snr)
        applied["babble"] = {"talkers": talkers, "snr_db": round(snr, 2)}
    if _coin(rng, o.noise_p):
        colour = str(rng.choice(o.noise_colours))
        snr = _uniform(rng, o.noise_snr_range_db)
        x = mix_at_snr(x, coloured_noise(x.shape[0], colour, rng), snr)
        applied["noise"] = {"colour": colour, "snr_db": round(snr, 2)}
    if _coin(rng, o.telephone_p):
        x = telephone(x)
        applied["telephone"] = True
    if _coin(rng, o.codec_p):
        x = _limit(x, applied)  # the encoder takes 16-bit samples: scale before, not clip
        codec = str(rng.choice(o.codecs))
        bitrate = int(rng.choice(o.mp3_bitrates if codec == "mp3" else o.opus_bitrates))
        x = codec_round_trip(x, codec, bitrate)
        applied["codec"] = {"name": codec, "bitrate": bitrate}
    return _limit(x, applied).astype(np.float32), applied


def _limit(x: np.ndarray, applied: dict[str, object]) -> np.ndarray:
    """Scale ``x`` down to a peak of :data:`PEAK` if it is louder (noise and reverb can
    push past full scale: scaling keeps the SNR, clipping would not), adding the gain to
    ``applied["gain_db"]``."""
    peak = float(np.max(np.abs(x), initial=0.0))
    if peak <= PEAK:
        return x
    gain_db = float(applied.get("gain_db", 0.0)) + 20 * math.log10(PEAK / peak)  # type: ignore[arg-type]
    applied["gain_db"] = round(gain_db, 2)
    return x * (PEAK / peak)


def _coin(rng: np.random.Generator, p: float) -> bool:
    return bool(rng.random() < p)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


# --- the steps: pure functions of their arguments (and rng where noise is drawn) --------


def speech_power(x: np.ndarray) -> float:
    """Mean power of the active 20 ms frames: those within 40 dB of the loudest frame."""
    frame = int(FRAME_SECONDS * SAMPLE_RATE)
    count = max(1, x.shape[0] // frame)
    powers = np.square(x[: count * frame].astype(np.float64)).reshape(count, -1).mean(axis=1)
    if x.shape[0] < frame:
        powers = np.array([np.mean(np.square(x, dtype=np.float64))]) if x.size else np.zeros(1)
    loudest = float(powers.max(initial=0.0))
    if loudest == 0.0:
        return 0.0
    return float(powers[powers >= loudest * 10 ** (-ACTIVE_RANGE_DB / 10)].mean())


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech + g * noise`` with ``g`` set so that speech power over noise power
    (:func:`speech_power` over the noise's mean power) is ``snr_db``. Same shapes ``(n,)``."""
    if speech.shape != noise.shape:
        raise ValueError(f"speech {speech.shape} and noise {noise.shape} differ in shape")
    noise_power = float(np.mean(np.square(noise, dtype=np.float64)))
    signal = speech_power(speech)
    if noise_power == 0.0 or signal == 0.0:
        return speech.astype(np.float64)
    gain = math.sqrt(signal / (noise_power * 10 ** (snr_db / 10)))
    return speech + gain * noise


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise, shape ``(n,)``, unit power, with a 1/f^0 (white), 1/f (pink) or
    1/f^2 (brown) power spectrum, shaped in the frequency domain."""
    white = rng.standard_normal(n)
    if colour == "white" or n < 2:
        return white / max(np.std(white), 1e-12)
    exponent = {"pink": 0.5, "brown": 1.0}[colour]  # amplitude ~ f^-exponent
    spectrum = np.fft.rfft(white)
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    f[0] = f[1]  # the DC bin is removed below; this only avoids dividing by zero
    spectrum *= f**-exponent
    spectrum[0] = 0.0
    shaped = np.fft.irfft(spectrum, n)
    return shaped / max(float(np.sqrt(np.mean(np.square(shaped)))), 1e-12)


def babble_noise(
    utterances: Sequence[np.ndarray], n: int, talkers: int, rng: np.random.Generator
) -> np.ndarray:
    """``talkers`` utterances drawn from ``utterances``, each looped from a random start to
    ``n`` samples and scaled to unit speech power, summed: shape ``(n,)``."""
    out = np.zeros(n)
    for k in rng.choice(len(utterances), size=talkers, replace=len(utterances) < talkers):
        u = np.asarray(utterances[int(k)], dtype=np.float64)
        start = int(rng.integers(0, max(1, u.shape[0])))
        if u.size == 0:
            continue
        looped = np.resize(np.roll(u, -start), n)  # np.resize repeats the array to fill n
        power = speech_power(looped)
        if power > 0:
            out += looped / math.sqrt(power)
    return out


def reverberate(x: np.ndarray, rt60: float, drr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``x`` in a synthetic room, same length and speech power.

    The impulse response is a unit direct path at time 0 plus a Gaussian-noise tail with
    envelope ``exp(-6.91 t / rt60)`` (amplitude -60 dB at ``t = rt60``: ln(1000) = 6.91),
    ``1.2 * rt60`` long and scaled to ``drr_db`` below the direct path in energy.
    """
    length = max(2, int(1.2 * rt60 * SAMPLE_RATE))
    t = np.arange(length) / SAMPLE_RATE
    tail = rng.standard_normal(length) * np.exp(-math.log(1000.0) * t / rt60)
    tail[0] = 0.0
    tail *= math.sqrt(10 ** (-drr_db / 10) / float(np.sum(np.square(tail))))
    ir = tail
    ir[0] = 1.0
    size = x.shape[0] + length - 1
    fft_size = 1 << (size - 1).bit_length()  # a power of two: fast FFT
    wet = np.fft.irfft(np.fft.rfft(x, fft_size) * np.fft.rfft(ir, fft_size), fft_size)
    wet = wet[: x.shape[0]]  # keep the utterance's length; the last tail is cut
    before, after = speech_power(x), speech_power(wet)
    return wet * math.sqrt(before / after) if after > 0 else wet


def resample(x: np.ndarray, m: int) -> np.ndarray:
    """Band-limited resampling of ``x`` (shape ``(n,)``) to exactly ``m`` samples, by
    truncating or zero-padding its real FFT (so the new rate is ``m / n`` times the old)."""
    n = x.shape[0]
    if m == n or n == 0:
        return np.asarray(x, dtype=np.float64).copy()
    spectrum = np.fft.rfft(x)
    bins = m // 2 + 1
    if bins <= spectrum.shape[0]:
        spectrum = spectrum[:bins].copy()
        if m % 2 == 0:
            spectrum[-1] = spectrum[-1].real  # the new Nyquist bin must be real
    else:
        spectrum = np.concatenate([spectrum, np.zeros(bins - spectrum.shape[0], complex)])
    return np.fft.irfft(spectrum, m) * (m / n)


def change_speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (pitch too): ``round(n / factor)`` samples."""
    return resample(x, max(1, round(x.shape[0] / factor)))


def telephone(x: np.ndarray) -> np.ndarray:
    """Narrow-band telephone speech: down to 8 kHz, 300-3400 Hz band-pass, back to 16 kHz.

    Both the resampling and the band-pass are done on the FFT, so nothing above 3.4 kHz
    survives; the length stays ``n``.
    """
    n = x.shape[0]
    narrow = resample(x, max(1, round(n * TELEPHONE_RATE / SAMPLE_RATE)))
    spectrum = np.fft.rfft(narrow)
    f = np.fft.rfftfreq(narrow.shape[0], 1.0 / TELEPHONE_RATE)
    spectrum[(f < TELEPHONE_BAND[0]) | (f > TELEPHONE_BAND[1])] = 0.0
    return resample(np.fft.irfft(spectrum, narrow.shape[0]), n)


def codec_round_trip(x: np.ndarray, codec: str, bitrate: int) -> np.ndarray:
    """Encode ``x`` as MP3 (libmp3lame) or Opus (libopus, in Ogg) at ``bitrate`` bits per
    second, in memory, and decode it back to 16 kHz float: the length stays within a codec
    frame of ``n`` (the containers record the encoder delay, which the decoder removes)."""
    if codec not in CODECS:
        raise ValueError(f"codec: expected one of {CODECS}, got {codec!r}")
    encoder, container_format = {"mp3": ("libmp3lame", "mp3"), "opus": ("libopus", "ogg")}[codec]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as out:
        stream = out.add_stream(encoder, rate=SAMPLE_RATE, layout="mono")
        stream.bit_rate = bitrate
        pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    buffer.seek(0)
    chunks = []
    with av.open(buffer, "r") as inp:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        for decoded in inp.decode(audio=0):
            decoded.pts = None
            chunks.extend(r.to_ndarray()[0] for r in resampler.resample(decoded))
        chunks.extend(r.to_ndarray()[0] for r in resampler.resample(None))
    return np.concatenate(chunks).astype(np.float64) if chunks else np.zeros(0)
