"""Tests for ``ctxasr.vad``.

``WindowPlanner`` is pure: it is fed synthetic per-frame probabilities and the windows
are checked against spans computed by hand (a frame is 512 samples, 32 ms). ``SileroVad``
is checked against faster-whisper's own batch run of the same ONNX model.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxasr.audio import SAMPLE_RATE, load_audio
from ctxasr.vad import FRAME_SAMPLES, SileroVad, VadOptions, Window, WindowPlanner

FIXTURES = Path(__file__).parent / "fixtures" / "audio"
SPEECH = FIXTURES / "1272-128104-0000.wav"  # 5.9 s of LibriSpeech, 16 kHz

F = FRAME_SAMPLES  # samples per frame
PAD = round(VadOptions().speech_pad_s * SAMPLE_RATE)  # 4800 samples
THIRTY = VadOptions(max_window_s=30.0)  # Whisper's input length


def frames(n: int, spans: list[tuple[int, int]], p: float = 0.9) -> np.ndarray:
    """``n`` frames of silence (0.0) with speech probability ``p`` on ``[start, end)`` spans."""
    probs = np.zeros(n, dtype=np.float32)
    for start, end in spans:
        probs[start:end] = p
    return probs


def plan(
    probs: np.ndarray, total: int | None = None, options: VadOptions | None = None
) -> list[Window]:
    planner = WindowPlanner(options or VadOptions())
    total = probs.shape[0] * F if total is None else total
    return planner.push(probs) + planner.finish(total)


# --- golden cases ------------------------------------------------------------------------


def test_silence_only_gives_no_window():
    assert plan(frames(1000, [])) == []


def test_low_probabilities_below_threshold_give_no_window():
    assert plan(np.full(1000, 0.45, dtype=np.float32)) == []


def test_burst_shorter_than_min_speech_is_ignored():
    # min_speech 0.15 s is 5 frames; a 3-frame click is not speech.
    assert plan(frames(400, [(100, 103)])) == []


def test_single_utterance_gives_one_padded_window():
    assert plan(frames(400, [(100, 200)])) == [Window(100 * F - PAD, 200 * F + PAD)]


def test_short_lead_in_and_tail_are_kept_like_plain_whisper():
    # Speech from 1.0 s to 6.4 s of a 7.7 s recording: both pauses are under max_gap
    # (2 s), so the window is the whole recording, as plain Whisper would decode it.
    total = 240 * F
    assert plan(frames(240, [(31, 200)]), total=total) == [Window(0, total)]


def test_long_lead_in_and_tail_are_still_cut():
    # 3.2 s of silence before and 6.4 s after: longer than max_gap, so padded only.
    assert plan(frames(500, [(100, 300)])) == [Window(100 * F - PAD, 300 * F + PAD)]


def test_lead_in_is_not_kept_when_it_would_overflow_the_window():
    options = VadOptions(max_window_s=5.0)
    windows = plan(frames(400, [(50, 180)]), options=options)  # speech 1.6 s .. 5.76 s
    assert windows[0].start == 50 * F - PAD
    assert all(w.duration <= 5.0 for w in windows)


def test_padding_is_clamped_to_the_recording():
    total = 400 * F - 100  # the last frame is partial
    windows = plan(frames(400, [(2, 399)]), total=total)

    assert windows == [Window(0, total)]


def test_speech_running_to_the_end_closes_at_the_end():
    windows = plan(frames(400, [(100, 400)]))

    assert windows == [Window(100 * F - PAD, 400 * F)]


def test_short_dip_between_thresholds_does_not_end_speech():
    probs = frames(400, [(100, 300)])
    probs[150:170] = 0.4  # above neg_threshold 0.35: still speech

    assert plan(probs) == [Window(100 * F - PAD, 300 * F + PAD)]


def test_two_utterances_with_a_short_pause_share_a_window():
    # 30 frames (0.96 s) apart, under max_gap 2 s.
    assert plan(frames(600, [(100, 200), (230, 300)])) == [Window(100 * F - PAD, 300 * F + PAD)]


def test_a_long_pause_splits_windows_and_is_skipped():
    # 100 frames (3.2 s) apart, over max_gap 2 s.
    windows = plan(frames(600, [(100, 200), (300, 400)]))

    assert windows == [Window(100 * F - PAD, 200 * F + PAD), Window(300 * F - PAD, 400 * F + PAD)]
    pause = set(range(200 * F + PAD, 300 * F - PAD))
    assert not any(pause & set(range(w.start, w.end)) for w in windows)


def test_a_window_closes_during_the_pause_not_at_finish():
    planner = WindowPlanner()
    early = planner.push(frames(400, [(100, 200)]))

    assert early == [Window(100 * F - PAD, 200 * F + PAD)]
    assert planner.finish(400 * F) == []


def test_continuous_speech_is_cut_into_contiguous_windows_of_at_most_30_s():
    n = round(110 * SAMPLE_RATE / F)  # 110 s of audio
    speech = (round(5 * SAMPLE_RATE / F), round(105 * SAMPLE_RATE / F))  # 100 s of speech
    rng = np.random.default_rng(0)
    probs = frames(n, [speech])
    probs[speech[0] : speech[1]] = rng.uniform(0.6, 1.0, speech[1] - speech[0])

    windows = plan(probs, options=THIRTY)

    assert len(windows) >= 4
    assert all(w.duration <= 30.0 for w in windows)
    assert all(a.end == b.start for a, b in itertools.pairwise(windows))
    assert windows[0].start <= speech[0] * F and windows[-1].end >= speech[1] * F


def test_long_speech_with_pauses_is_cut_at_a_pause():
    # 1 s pauses every 10 s, all under max_gap: the cut must fall inside a pause.
    second = SAMPLE_RATE / F
    spans = [(round((i * 10 + 1) * second), round((i * 10 + 10) * second)) for i in range(8)]
    windows = plan(frames(round(82 * second), spans), options=THIRTY)

    assert len(windows) >= 3
    assert all(w.duration <= 30.0 for w in windows)
    for w in windows[:-1]:
        assert any(
            end * F <= w.end <= start * F for (_, end), (start, _) in itertools.pairwise(spans)
        )


def test_the_rest_of_a_cut_run_is_kept_however_short():
    # 5 s windows hold 138 frames of speech. Speech of unchanging probability on frames
    # [10, 151) is cut at frame 149; the 2 frames left are under min_speech (5 frames)
    # but are the end of real speech, not a click, so they still get a window.
    options = VadOptions(max_window_s=5.0)

    windows = plan(frames(300, [(10, 151)]), options=options)

    # (the first window starts at 0: its speech begins within a short pause of the start)
    assert windows == [Window(0, 149 * F), Window(149 * F, 151 * F + PAD)]


def test_default_window_limit_is_respected_too():
    n = round(600 * SAMPLE_RATE / F)  # 10 minutes of unbroken speech
    windows = plan(frames(n, [(0, n)]))

    assert sum(w.end - w.start for w in windows) == n * F
    assert all(w.duration <= VadOptions().max_window_s for w in windows)


# --- properties over random probability sequences ----------------------------------------

LEVELS = st.sampled_from([0.0, 0.1, 0.3, 0.4, 0.5, 0.7, 0.95])
# Runs of one level: long runs make realistic speech and pauses, short ones noise.
RUNS = st.lists(st.tuples(LEVELS, st.integers(1, 600)), min_size=1, max_size=40)
OPTIONS = st.builds(
    VadOptions,
    min_speech_s=st.sampled_from([0.05, 0.15, 0.5]),
    min_silence_s=st.sampled_from([0.05, 0.3, 1.0]),
    max_gap_s=st.sampled_from([0.5, 2.0, 5.0]),
    speech_pad_s=st.sampled_from([0.0, 0.1, 0.3, 0.5]),
    max_window_s=st.sampled_from([5.0, 10.0, 30.0]),
)


def probs_of(runs: list[tuple[float, int]]) -> np.ndarray:
    return np.repeat(np.array([p for p, _ in runs], dtype=np.float32), [n for _, n in runs])


@settings(max_examples=150, deadline=None)
@given(runs=RUNS, partial=st.integers(0, F - 1), options=OPTIONS)
def test_windows_are_ordered_disjoint_bounded_and_inside_the_recording(runs, partial, options):
    probs = probs_of(runs)
    total = max(1, probs.shape[0] * F - partial)

    windows = plan(probs, total, options)

    for w in windows:
        assert 0 <= w.start < w.end <= total
        assert w.end - w.start <= options.max_window_s * SAMPLE_RATE
    for a, b in itertools.pairwise(windows):
        assert a.end <= b.start


@settings(max_examples=150, deadline=None)
@given(runs=RUNS, options=OPTIONS)
def test_every_confident_speech_frame_is_in_a_window(runs, options):
    probs = probs_of(runs)

    windows = plan(probs, options=options)

    # A run of speech frames long enough to count must be decoded somewhere.
    min_speech = max(1, round(options.min_speech_s * SAMPLE_RATE / F))
    covered = np.zeros(probs.shape[0] * F, dtype=bool)
    for w in windows:
        covered[w.start : w.end] = True
    speech = probs >= options.threshold
    start = None
    for i, s in enumerate([*speech.tolist(), False]):
        if s and start is None:
            start = i
        elif not s and start is not None:
            if i - start >= min_speech + round(options.min_silence_s * SAMPLE_RATE / F):
                assert covered[start * F : i * F].all(), (start, i)
            start = None


@settings(max_examples=150, deadline=None)
@given(runs=RUNS, options=OPTIONS, data=st.data())
def test_any_chunking_gives_the_same_windows_and_needed_from_is_safe(runs, options, data):
    probs = probs_of(runs)
    n = probs.shape[0]
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=12)))
    total = n * F

    planner = WindowPlanner(options)
    windows: list[Window] = []
    marks: list[tuple[int, int]] = []  # (windows emitted so far, needed_from then)
    for a, b in zip([0, *cuts], [*cuts, n]):
        windows += planner.push(probs[a:b])
        marks.append((len(windows), planner.needed_from))
    windows += planner.finish(total)

    assert windows == plan(probs, total, options)
    for emitted, needed in marks:
        assert needed <= total
        assert all(w.start >= needed for w in windows[emitted:])


def test_needed_from_advances_through_silence():
    planner = WindowPlanner()
    planner.push(frames(300, [(100, 200)]))

    # The first window is out; nothing before its end is needed any more.
    assert planner.needed_from >= 200 * F + PAD


# --- Silero VAD ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(SPEECH)


def _stream(vad: SileroVad, audio: np.ndarray, sizes: list[int]) -> np.ndarray:
    out, i, k = [], 0, 0
    while i < audio.shape[0]:
        out.append(vad.push(audio[i : i + sizes[k % len(sizes)]]))
        i += sizes[k % len(sizes)]
        k += 1
    out.append(vad.flush())
    return np.concatenate(out)


def test_streaming_matches_faster_whisper_batch_model(speech):
    from faster_whisper.vad import get_vad_model

    # faster-whisper zeroes the last 64 samples of its last frame (in place); end the
    # audio 200 samples into a frame so that those samples are padding either way.
    audio = speech[: (speech.shape[0] // F - 1) * F + 200]
    padded = np.pad(audio, (0, F - audio.shape[0] % F))
    reference = np.asarray(get_vad_model()(padded.copy())).reshape(-1)

    streamed = _stream(SileroVad(), audio, [1, 511, 513, 1000, 7777, 3, 2048])

    assert streamed.shape[0] == -(-audio.shape[0] // F)  # one per frame, the last padded
    np.testing.assert_allclose(streamed, reference[: streamed.shape[0]], atol=1e-6)


def test_block_sizes_do_not_change_probabilities(speech):
    a = _stream(SileroVad(), speech, [F * 20])
    b = _stream(SileroVad(), speech, [37, 4096, 900])

    np.testing.assert_allclose(a, b, atol=1e-6)


def test_zeros_are_not_speech():
    probs = _stream(SileroVad(), np.zeros(3 * SAMPLE_RATE, dtype=np.float32), [SAMPLE_RATE])

    assert probs.shape[0] == -(-3 * SAMPLE_RATE // F)
    assert float(probs.max()) < 0.1


def test_recorded_speech_is_speech(speech):
    probs = _stream(SileroVad(), speech, [SAMPLE_RATE])

    assert float(probs.max()) > 0.5
    assert float(np.mean(probs > 0.5)) > 0.5  # a read sentence is mostly speech


def test_partial_frame_waits_for_flush():
    vad = SileroVad()

    assert vad.push(np.zeros(F - 1, dtype=np.float32)).shape == (0,)
    assert vad.flush().shape == (1,)
    assert vad.flush().shape == (0,)


def test_a_window_cut_at_a_partial_last_frame_ends_inside_the_recording():
    # Found by hypothesis: 126 frames of speech split at the window limit exactly at the
    # last frame, which holds one sample less than a frame.
    options = VadOptions(min_speech_s=0.05, min_silence_s=0.05, max_gap_s=0.5,
                         speech_pad_s=0.5, max_window_s=5.0)  # fmt: skip
    total = 126 * F - 1
    assert plan(probs_of([(0.5, 126)]), total, options) == [Window(0, total)]


def test_audio_of_a_held_window_is_still_needed():
    # The window cut at the newest frame is held back by push(); the caller must keep its
    # samples until the window comes out.
    options = VadOptions(min_speech_s=0.05, min_silence_s=0.05, max_gap_s=0.5,
                         speech_pad_s=0.5, max_window_s=5.0)  # fmt: skip
    planner = WindowPlanner(options)
    assert planner.push(np.concatenate([np.zeros(200, np.float32), probs_of([(0.9, 126)])])) == []
    assert planner.needed_from <= planner.finish(326 * F)[0].start
