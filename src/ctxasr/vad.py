"""Voice activity detection and the cutting of long recordings into decoder windows.

Silero VAD (the ONNX model that ships inside faster-whisper) gives a speech probability
for every 32 ms frame. :class:`SileroVad` runs it on a stream of blocks, carrying the
model's recurrent state across blocks, so an hour of audio never has to be in memory.
:class:`WindowPlanner` turns those probabilities into windows of bounded length, cut at
pauses, that skip long silences.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from dataclasses import dataclass

import numpy as np

from ctxasr.audio import SAMPLE_RATE

FRAME_SAMPLES = 512  # samples per Silero frame at 16 kHz (32 ms)
CONTEXT_SAMPLES = 64  # samples of the previous frame that Silero v5+ sees with each frame
_STATE_SHAPE = (1, 1, 128)


@dataclass(frozen=True)
class VadOptions:
    """How speech is detected and grouped into decoder windows."""

    threshold: float = 0.5  # probability at or above which a frame starts speech
    neg_threshold: float = 0.35  # probability below which a frame counts as silence
    min_speech_s: float = 0.15  # speech runs shorter than this (clicks, breaths) are ignored
    min_silence_s: float = 0.3  # silence shorter than this does not end a speech run
    max_gap_s: float = 2.0  # a pause longer than this ends a window; the pause is skipped
    speech_pad_s: float = 0.3  # audio kept on each side of speech so word edges survive
    # Longest window, decoded in one call (Whisper's own 30 s seek loop runs inside it,
    # cutting where the model's timestamps say a sentence ends). It bounds memory: the
    # features of 4 minutes cost about 100 MB while they are computed.
    max_window_s: float = 240.0


@dataclass(frozen=True)
class Window:
    """A span of the recording to decode, in samples at 16 kHz: ``[start, end)``."""

    start: int
    end: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return (self.end - self.start) / SAMPLE_RATE


@functools.lru_cache(maxsize=1)
def _session():  # -> onnxruntime.InferenceSession
    # The model file ships inside faster-whisper, so VAD works offline with no download.
    import onnxruntime
    from faster_whisper.utils import get_assets_path

    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 4
    path = os.path.join(get_assets_path(), "silero_vad_v6.onnx")
    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"], sess_options=opts)


class SileroVad:
    """Streaming Silero VAD: feed blocks of 16 kHz samples, get one probability per frame."""

    def __init__(self) -> None:
        self._session = _session()
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
        self._rest = np.zeros(0, dtype=np.float32)  # samples not yet making a whole frame

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add samples (shape ``(n,)``); return probabilities of the frames completed."""
        audio = np.concatenate([self._rest, samples.astype(np.float32, copy=False)])
        n_frames = audio.shape[0] // FRAME_SAMPLES
        self._rest = audio[n_frames * FRAME_SAMPLES :]
        if n_frames == 0:
            return np.zeros(0, dtype=np.float32)
        return self._run(audio[: n_frames * FRAME_SAMPLES])

    def flush(self) -> np.ndarray:
        """Pad the last partial frame with zeros and return its probability (if any)."""
        if self._rest.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        pad = np.zeros(FRAME_SAMPLES - self._rest.shape[0], dtype=np.float32)
        audio, self._rest = np.concatenate([self._rest, pad]), np.zeros(0, dtype=np.float32)
        return self._run(audio)

    def _run(self, audio: np.ndarray) -> np.ndarray:
        frames = audio.reshape(-1, FRAME_SAMPLES)  # (F, 512)
        # Each frame is given the last 64 samples of the frame before it.
        context = np.concatenate([self._context[None, :], frames[:-1, -CONTEXT_SAMPLES:]])
        self._context = frames[-1, -CONTEXT_SAMPLES:].copy()
        batch = np.concatenate([context, frames], axis=1)  # (F, 576)
        out, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        return np.asarray(out, dtype=np.float32).reshape(-1)  # (F,)


class WindowPlanner:
    """Groups per-frame speech probabilities into decoder windows, incrementally.

    ``push`` returns the windows that can be closed with the frames seen so far, so
    a caller can decode them and let their audio go; ``finish`` closes the rest.
    Windows come out in order, never overlap, and are at most ``max_window_s`` long.
    """

    def __init__(self, options: VadOptions = VadOptions()) -> None:
        frames = lambda seconds: max(1, round(seconds * SAMPLE_RATE / FRAME_SAMPLES))
        self._opts = options
        self._min_speech = frames(options.min_speech_s)
        self._min_silence = frames(options.min_silence_s)
        self._max_gap = frames(options.max_gap_s)
        self._pad = round(options.speech_pad_s * SAMPLE_RATE)
        # The window's speech must leave room for padding on both sides.
        self._max_len = frames(options.max_window_s - 2 * options.speech_pad_s)
        self._max_samples = round(options.max_window_s * SAMPLE_RATE)
        self._max_gap_samples = round(options.max_gap_s * SAMPLE_RATE)
        self._frame = 0  # index of the next frame to be pushed
        self._in_speech = False
        self._run_start = 0
        self._continued = False  # the open run is the rest of one cut at the window limit
        self._silence_start: int | None = None
        self._runs: list[tuple[int, int]] = []  # closed speech runs of the open window
        self._probs: deque[float] = deque(maxlen=self._max_len + 1)  # recent history
        self._last_end = 0  # sample where the previous window ended
        self._out: list[Window] = []

    @property
    def needed_from(self) -> int:
        """Sample index before which no future window can start: older audio may go."""
        if self._runs:
            first = self._runs[0][0]
        elif self._in_speech:
            first = self._run_start
        else:
            first = self._frame
        needed = max(self._last_end, first * FRAME_SAMPLES - self._pad)
        if self._last_end == 0 and needed <= self._max_gap_samples:
            return 0  # the first window may still start at the recording's start
        if self._out:  # windows held back by push(): their audio is still to be cut
            return min(needed, self._out[0].start)
        return needed

    def push(self, probs: np.ndarray) -> list[Window]:
        """Consume probabilities of the next frames; return windows now closed."""
        for p in probs.tolist():
            self._step(p)
        # A window cut at the newest frame would end past the recording if that frame is
        # its partial last one: it is held until more frames come, or until ``finish``
        # clips it to the recording's length.
        edge = self._frame * FRAME_SAMPLES
        out = [w for w in self._out if w.end < edge]
        self._out = [w for w in self._out if w.end >= edge]
        return out

    def finish(self, total_samples: int) -> list[Window]:
        """Close everything at the end of a recording of ``total_samples`` samples."""
        if self._in_speech:
            self._add_run(self._run_start, self._frame)
            self._in_speech = False
        self._emit(total_samples, end_pad=self._pad)
        out, self._out = self._out, []
        return [Window(w.start, min(w.end, total_samples)) for w in out if w.start < total_samples]

    def _step(self, p: float) -> None:
        f = self._frame
        self._frame += 1
        self._probs.append(p)
        o = self._opts
        if not self._in_speech:
            if p >= o.threshold:
                self._in_speech, self._run_start, self._silence_start = True, f, None
                self._continued = False
            elif self._runs and f - self._runs[-1][1] > self._max_gap:
                self._emit(None, end_pad=self._pad)  # a long pause: nothing will join
            return
        if p >= o.threshold:
            self._silence_start = None
        elif p < o.neg_threshold:
            if self._silence_start is None:
                self._silence_start = f
            elif f + 1 - self._silence_start >= self._min_silence:
                self._in_speech = False
                self._add_run(self._run_start, self._silence_start)
                return
        self._split_long_speech(f + 1)

    def _add_run(self, start: int, end: int) -> None:
        # The rest of a run cut at the window limit is speech however short it is.
        if end <= start or (end - start < self._min_speech and not self._continued):
            return
        if self._runs:
            window_start, last_end = self._runs[0][0], self._runs[-1][1]
            gap = start - last_end
            if gap > self._max_gap or end - window_start > self._max_len:
                # Cut in the middle of the pause so neither side loses a word edge.
                self._emit(None, end_pad=min(self._pad, gap * FRAME_SAMPLES // 2))
        self._runs.append((start, end))

    def _split_long_speech(self, now: int) -> None:
        window_start = self._runs[0][0] if self._runs else self._run_start
        if now - window_start <= self._max_len:
            return
        if self._runs:
            self._emit(
                None,
                end_pad=min(self._pad, (self._run_start - self._runs[-1][1]) * FRAME_SAMPLES // 2),
            )
            if now - self._run_start <= self._max_len:
                return
        # One run of speech with no pause for a whole window: cut where the model is
        # least sure there is speech in the last few seconds, usually a short breath.
        lookback = min(len(self._probs), round(5.0 * SAMPLE_RATE / FRAME_SAMPLES))
        recent = list(self._probs)[-lookback:]
        cut = now - lookback + int(np.argmin(recent))
        if cut <= self._run_start:
            cut = now
        self._runs = [(self._run_start, cut)]
        self._emit(None, end_pad=0)
        self._run_start, self._continued = cut, True

    def _emit(self, total_samples: int | None, end_pad: int) -> None:
        if not self._runs:
            return
        start = max(self._last_end, self._runs[0][0] * FRAME_SAMPLES - self._pad)
        end = self._runs[-1][1] * FRAME_SAMPLES + end_pad
        if total_samples is not None:
            end = min(end, total_samples)
            # Short silence before the recording's end is kept, as below for its start.
            if (
                total_samples - end <= self._max_gap_samples
                and total_samples - start <= self._max_samples
            ):
                end = total_samples
        # Whisper's sequential decoding is sensitive to where its input starts: trimming
        # a fraction of a second of lead-in can change a whole transcript. A recording
        # whose speech starts within a short pause is decoded from its very start, as
        # plain Whisper would, so cutting only ever removes long silences.
        if self._last_end == 0 and start <= self._max_gap_samples and end <= self._max_samples:
            start = 0
        self._runs = []
        if end > start:
            self._out.append(Window(start, end))
            self._last_end = end
