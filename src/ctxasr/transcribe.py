"""Transcribing a recording of any length with a context of terms.

The pipeline, one step each: decode audio in blocks (``audio``), find speech and cut
windows of at most 30 s at pauses (``vad``), put the context terms into the decoder
prompt of every window (``context.prompt``), decode each window with faster-whisper
(CTranslate2), and shift the window's timestamps back onto the recording's clock.
Only the audio of windows not yet decoded is held, so memory does not grow with the
recording's length.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ctxasr.audio import BLOCK_SECONDS, SAMPLE_RATE, probe, stream_audio
from ctxasr.context.prompt import EMPTY_PROMPT, PROMPT_BUDGET, Prompt, build_prompt
from ctxasr.context.spelling import TermSpeller, respell_text
from ctxasr.context.terms import ContextTerm, dedupe_terms
from ctxasr.errors import AudioError
from ctxasr.models import ResolvedModel, resolve_model
from ctxasr.results import Segment, Transcript, Word
from ctxasr.vad import SileroVad, VadOptions, Window, WindowPlanner

# (done_seconds, total_seconds or None when the container does not say)
ProgressCallback = Callable[[float, "float | None"], None]


@dataclass(frozen=True)
class TranscribeOptions:
    """How each window is decoded. Override per call with ``dataclasses.replace``."""

    language: str | None = "en"  # None: detected per window (multilingual models only)
    beam_size: int = 5
    word_timestamps: bool = False
    # Whisper's own fallback: re-decode at a higher temperature when the text looks like
    # a loop (compression ratio) or the model is unsure (log-probability).
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float = 2.4
    log_prob_threshold: float = -1.0
    no_speech_threshold: float = 0.6
    # Whether the previous text follows the context terms in the prompt. Off by default:
    # on long recordings, feeding Whisper its own output lets one bad window (a list
    # style, a skipped stretch) derail the next ones. Measured on 12 min of real speech
    # (bench/transcribe_speed.py's long file): WER 18.5% with it, 11.6% without, and
    # 25% less time; plain faster-whisper, which conditions, scored 10.9% there.
    condition_on_previous_text: bool = False
    # Tokens of the prompt the context terms may take (Whisper's whole prompt is capped
    # at 223 tokens; the previous window's text gets what the terms leave).
    prompt_budget: int = PROMPT_BUDGET
    # Respell decoded near-misses of the offered terms ("there under" -> "thereunder").
    respell_terms: bool = True
    vad: VadOptions = field(default_factory=VadOptions)


@dataclass(frozen=True)
class ModelOptions:
    """Where and how the CTranslate2 model runs."""

    device: str = "cpu"
    compute_type: str = "int8"  # int8 weights: about 2x faster than float32 on CPUs
    cpu_threads: int = 0  # 0: CTranslate2's default
    num_workers: int = 1


class Transcriber:
    """Transcribes recordings with a Whisper model and a context of terms.

    >>> t = Transcriber()  # the packaged tiny.en model, on the CPU
    >>> result = t.transcribe("talk.flac", context=["Kubernetes", "etcd"])
    >>> result.text, result.context_used
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        options: TranscribeOptions = TranscribeOptions(),
        model_options: ModelOptions = ModelOptions(),
    ) -> None:
        self.resolved: ResolvedModel = resolve_model(model)
        self.options = options
        self._model = _prompted_model_class()(
            self.resolved.path,
            device=model_options.device,
            compute_type=model_options.compute_type,
            cpu_threads=model_options.cpu_threads,
            num_workers=model_options.num_workers,
        )

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` in the model's vocabulary (no special tokens)."""
        return self._model.hf_tokenizer.encode(text, add_special_tokens=False).ids

    def prompt_for(
        self, context: Iterable[ContextTerm | str], options: TranscribeOptions | None = None
    ) -> Prompt:
        """The decoder prompt that ``context`` yields within the options' prompt budget."""
        terms = dedupe_terms(_as_term(t) for t in context)
        if not terms:
            return EMPTY_PROMPT
        return build_prompt(terms, self.encode, (options or self.options).prompt_budget)

    def transcribe(
        self,
        audio: str | os.PathLike[str] | np.ndarray,
        context: Iterable[ContextTerm | str] = (),
        *,
        options: TranscribeOptions | None = None,
        progress: ProgressCallback | None = None,
    ) -> Transcript:
        """Transcribe a recording (a path, or 16 kHz mono float32 samples of shape (n,)).

        Raises:
            AudioError: the recording is missing, unreadable, corrupt or empty.
        """
        opts = options or self.options
        prompt = self.prompt_for(context, opts)
        if isinstance(audio, np.ndarray):
            if audio.size == 0:
                raise AudioError("<samples>", "contains no audio samples (zero-length audio)")
            blocks: Iterable[np.ndarray] = _blocks_of(audio)
            total: float | None = audio.shape[0] / SAMPLE_RATE
        else:
            total = probe(audio).duration
            blocks = stream_audio(audio)
        run = _Run(self, opts, prompt, progress, total)
        for window, samples in _windows(blocks, opts.vad, run.note_samples):
            run.decode(window, samples)
        return run.result()


@functools.lru_cache(maxsize=1)
def _prompted_model_class() -> type:
    from faster_whisper import WhisperModel

    class PromptedWhisperModel(WhisperModel):
        """faster-whisper with the context terms in the prompt of every 30 s seek.

        faster-whisper puts an initial prompt only before the first seek, where later
        text soon pushes it out, and adds ``hotwords`` beside up to 223 tokens of
        previous text, over Whisper's prompt length. Here the ``hotwords`` string
        carries the rendered context, which always comes first; the previous text
        fills only what the 223-token budget leaves.
        """

        def get_prompt(self, tokenizer, previous_tokens, without_timestamps=False,
                       prefix=None, hotwords=None):  # fmt: skip
            if not hotwords or prefix:
                return super().get_prompt(tokenizer, previous_tokens, without_timestamps,
                                          prefix, hotwords)  # fmt: skip
            context = tokenizer.encode(" " + hotwords.strip())[:PROMPT_BUDGET]
            room = PROMPT_BUDGET - len(context)
            tail = list(previous_tokens[-room:]) if room > 0 and previous_tokens else []
            prompt = [tokenizer.sot_prev, *context, *tail, *tokenizer.sot_sequence]
            if without_timestamps:
                prompt.append(tokenizer.no_timestamps)
            return prompt

    return PromptedWhisperModel


def _as_term(term: ContextTerm | str) -> ContextTerm:
    return term if isinstance(term, ContextTerm) else ContextTerm(" ".join(str(term).split()))


def _blocks_of(
    audio: np.ndarray, block: int = int(BLOCK_SECONDS * SAMPLE_RATE)
) -> Iterator[np.ndarray]:
    if audio.ndim != 1:
        raise ValueError(f"audio samples must have shape (n,), got {audio.shape}")
    for i in range(0, audio.shape[0], block):
        yield audio[i : i + block].astype(np.float32, copy=False)


def _windows(
    blocks: Iterable[np.ndarray],
    vad_options: VadOptions,
    note_samples: Callable[[int], None],
) -> Iterator[tuple[Window, np.ndarray]]:
    """Pair each decoder window with its samples, holding only audio still needed."""
    vad, planner = SileroVad(), WindowPlanner(vad_options)
    buffer = np.zeros(0, dtype=np.float32)
    buffer_start = 0  # sample index of buffer[0] in the recording
    seen = 0
    for block in blocks:
        buffer = np.concatenate([buffer, block])
        seen += block.shape[0]
        note_samples(seen)
        for window in planner.push(vad.push(block)):
            yield window, buffer[window.start - buffer_start : window.end - buffer_start]
        keep = min(planner.needed_from, seen)
        buffer, buffer_start = buffer[keep - buffer_start :], keep
    last = planner.push(vad.flush()) + planner.finish(seen)
    for window in last:
        yield window, buffer[window.start - buffer_start : window.end - buffer_start]


class _Run:
    """The state of one transcription: prompt, previous text, segments so far."""

    def __init__(
        self,
        owner: Transcriber,
        opts: TranscribeOptions,
        prompt: Prompt,
        progress: ProgressCallback | None,
        total: float | None,
    ) -> None:
        self.owner, self.opts, self.prompt = owner, opts, prompt
        self.progress, self.total = progress, total
        self.segments: list[Segment] = []
        self.speller = TermSpeller(prompt.terms) if opts.respell_terms and prompt.terms else None
        self.previous: list[int] = []  # tokens of the previous window's text
        self.samples = 0
        self.language = opts.language

    def note_samples(self, seen: int) -> None:
        self.samples = seen

    def decode(self, window: Window, samples: np.ndarray) -> None:
        offset = window.start / SAMPLE_RATE
        opts = self.opts
        decoded, info = self.owner._model.transcribe(
            samples,
            language=opts.language,
            beam_size=opts.beam_size,
            temperature=list(opts.temperatures),
            compression_ratio_threshold=opts.compression_ratio_threshold,
            log_prob_threshold=opts.log_prob_threshold,
            no_speech_threshold=opts.no_speech_threshold,
            condition_on_previous_text=opts.condition_on_previous_text,
            hotwords=self.prompt.text.strip() or None,
            initial_prompt=self._previous_tail() or None,
            word_timestamps=opts.word_timestamps,
            vad_filter=False,
        )
        window_text: list[str] = []
        hot = False  # decoded only at a high fallback temperature: not worth repeating
        for seg in decoded:
            if _echoes_prompt(seg.text, self.prompt.terms):
                continue
            shifted = _shift(seg, offset, window.end / SAMPLE_RATE)
            if self.speller is not None:
                shifted = _respell(shifted, self.speller)
            self.segments.append(shifted)
            window_text.append(shifted.text)
            hot = hot or (seg.temperature or 0.0) > 0.5
            if self.progress is not None:
                self.progress(offset + seg.end, self.total)
        self.language = self.language or info.language
        if opts.condition_on_previous_text and window_text and not hot:
            self.previous = self.owner.encode("".join(window_text))
        else:
            self.previous = []
        if self.progress is not None:
            self.progress(window.end / SAMPLE_RATE, self.total)

    def _previous_tail(self) -> list[int]:
        room = PROMPT_BUDGET - len(self.prompt.tokens)  # Whisper's limit for the whole prompt
        return self.previous[-room:] if room > 0 and self.previous else []

    def result(self) -> Transcript:
        duration = self.samples / SAMPLE_RATE
        if self.progress is not None:
            self.progress(duration, duration)
        text = " ".join(s.text.strip() for s in self.segments if s.text.strip())
        return Transcript(
            text=text,
            segments=tuple(self.segments),
            duration=duration,
            model=self.owner.resolved.name,
            language=self.language or "",
            context_used=self.prompt.terms,
        )


def _shift(seg, offset: float, limit: float) -> Segment:  # seg: faster_whisper Segment
    words = None
    if seg.words is not None:
        words = tuple(
            Word(
                start=min(round(w.start + offset, 3), limit),
                end=min(round(w.end + offset, 3), limit),
                word=w.word,
                probability=float(w.probability),
            )
            for w in seg.words
        )
    return Segment(
        start=min(round(seg.start + offset, 3), limit),
        end=min(round(seg.end + offset, 3), limit),
        text=seg.text,
        words=words,
        avg_logprob=float(seg.avg_logprob),
        no_speech_prob=float(seg.no_speech_prob),
    )


def _respell(segment: Segment, speller: TermSpeller) -> Segment:
    if segment.words is None:
        return dataclasses.replace(segment, text=respell_text(segment.text, speller))
    words = list(segment.words)
    for r in reversed(speller.respell([w.word for w in words])):
        span = words[r.start : r.end]
        merged = Word(
            start=span[0].start,
            end=span[-1].end,
            word=" " + r.text,
            probability=min(w.probability for w in span),
        )
        words[r.start : r.end] = [merged]
    return dataclasses.replace(segment, text="".join(w.word for w in words), words=tuple(words))


def _echoes_prompt(text: str, terms: Sequence[str]) -> bool:
    """True when a segment is the prompt's term list read back rather than speech.

    On noise or music a prompted Whisper may "transcribe" its prompt: a comma-separated
    run of context terms. Three or more terms in a row with nothing but separators
    between them, making up most of the segment, is that failure, not speech.
    """
    if len(terms) < 3 or text.count(",") < 2:
        return False
    known = {t.casefold() for t in terms}
    items = [i.strip(" .;:!?\"'").casefold() for i in text.split(",")]
    hits = sum(1 for i in items if i in known)
    return hits >= 3 and hits >= 0.6 * len(items)
