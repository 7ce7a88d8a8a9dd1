"""Audio input: anything FFmpeg (through PyAV) decodes becomes 16 kHz mono float32.

Decoding is a pipeline of small generators over PyAV frames so that a recording of any
length is read in bounded memory: callers pull blocks of samples and never hold the
whole file unless they ask for it (:func:`load_audio`).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from ctxasr.errors import AudioError
from ctxasr.files import check_input_file

SAMPLE_RATE = 16_000  # Hz: what Whisper and Silero VAD expect
BLOCK_SECONDS = 10.0  # seconds of audio per block yielded by stream_audio
_S32_SCALE = np.float32(1 / 2**31)  # int32 sample -> [-1, 1)


@dataclass(frozen=True)
class AudioInfo:
    """What the container says about a recording before it is decoded."""

    path: str
    duration: float | None  # seconds, from container metadata; None when unknown
    codec: str
    sample_rate: int  # Hz of the source stream
    channels: int


def _check_path(path: str | os.PathLike[str]) -> str:
    p = check_input_file(path, AudioError, "an audio file")
    if p.stat().st_size == 0:
        raise AudioError(str(path), "file is empty (0 bytes)")
    return str(p)


def _open(path: str) -> av.container.InputContainer:
    try:
        container = av.open(path, mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as err:
        raise AudioError(path, f"cannot be decoded as audio ({_ffmpeg_reason(err)})") from None
    if not container.streams.audio:
        container.close()
        raise AudioError(path, "has no audio stream")
    return container


def _ffmpeg_reason(err: av.error.FFmpegError) -> str:
    return getattr(err, "strerror", None) or str(err)


def probe(path: str | os.PathLike[str]) -> AudioInfo:
    """Read a recording's metadata without decoding it.

    Raises:
        AudioError: the file is missing, unreadable, not media, or has no audio stream.
    """
    checked = _check_path(path)
    with _open(checked) as container:
        stream = container.streams.audio[0]
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        ctx = stream.codec_context
        return AudioInfo(
            path=checked,
            duration=duration,
            codec=ctx.name or "unknown",
            sample_rate=int(ctx.sample_rate or 0),
            channels=int(ctx.channels or 0),
        )


def stream_audio(
    path: str | os.PathLike[str], block_seconds: float = BLOCK_SECONDS
) -> Iterator[np.ndarray]:
    """Decode a recording incrementally into 16 kHz mono float32 blocks.

    Yields arrays of shape ``(n,)`` in [-1, 1], each ``block_seconds`` long except the
    last. Memory stays bounded by one block whatever the recording's length.

    Raises:
        AudioError: missing, unreadable or corrupt file, no audio stream, or no samples
            at all (raised after the stream ends, so nothing is yielded first).
    """
    checked = _check_path(path)
    block = int(block_seconds * SAMPLE_RATE)
    total = 0
    pending: list[np.ndarray] = []
    pending_len = 0
    with _open(checked) as container:
        stream = container.streams.audio[0]
        # Integer output makes FFmpeg normalise its downmix matrix (stereo becomes
        # (L + R) / 2, as in Whisper's own `ffmpeg -ac 1`); float output would not, and
        # full-scale stereo or 5.1 would come out beyond [-1, 1].
        resampler = av.AudioResampler(format="s32", layout="mono", rate=SAMPLE_RATE)
        for frame in _resample(_decoded_frames(container, stream, checked), resampler):
            samples = frame.to_ndarray().reshape(-1).astype(np.float32) * _S32_SCALE
            pending.append(samples)
            pending_len += samples.shape[0]
            while pending_len >= block:
                joined = np.concatenate(pending)
                yield joined[:block]
                total += block
                rest = joined[block:]
                pending, pending_len = [rest], rest.shape[0]
    if pending_len:
        total += pending_len
        yield np.concatenate(pending)
    if total == 0:
        raise AudioError(checked, "contains no audio samples (zero-length audio)")


def _decoded_frames(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream, path: str
) -> Iterator[av.AudioFrame]:
    # A damaged packet in the middle of a long recording should cost that packet, not the
    # whole transcript (FFmpeg's own tools behave the same). A file whose first packets
    # are all bad, though, is corrupt, and the caller must hear about it.
    decoded_any = False
    bad = 0
    frames = container.decode(stream)
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            break
        except av.error.InvalidDataError as err:
            bad += 1
            if not decoded_any and bad > 50:
                raise AudioError(path, f"cannot be decoded ({_ffmpeg_reason(err)})") from None
            continue
        except av.error.FFmpegError as err:
            if decoded_any:
                break  # truncated file: keep what decoded
            raise AudioError(path, f"cannot be decoded ({_ffmpeg_reason(err)})") from None
        decoded_any = True
        frame.pts = None  # the resampler need not check timestamps of a single stream
        yield frame
    if not decoded_any and bad:
        raise AudioError(path, "cannot be decoded (no valid audio packet)")


def _resample(
    frames: Iterator[av.AudioFrame], resampler: av.AudioResampler
) -> Iterator[av.AudioFrame]:
    for frame in itertools.chain(frames, [None]):  # None flushes the resampler
        yield from resampler.resample(frame)


def load_audio(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a whole recording at once: shape ``(n,)``, 16 kHz mono float32."""
    return np.concatenate(list(stream_audio(path)))
