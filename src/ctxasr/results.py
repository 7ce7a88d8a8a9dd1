"""Typed results of a transcription. JSON lives only at the edges (see ``writers``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Word:
    """One recognised word. Times in seconds from the start of the recording."""

    start: float
    end: float
    word: str  # as decoded, usually with its leading space
    probability: float  # the decoder's probability of the word's tokens, 0..1


@dataclass(frozen=True)
class Segment:
    """A stretch of text with its time span (seconds from the start of the recording)."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...] | None = None  # only when word timestamps were asked for
    avg_logprob: float = 0.0  # mean token log-probability (nats) of the decoded text
    no_speech_prob: float = 0.0  # the model's probability that the window holds no speech


@dataclass(frozen=True)
class Transcript:
    """The transcript of one recording."""

    text: str
    segments: tuple[Segment, ...]
    duration: float  # seconds of audio decoded
    model: str  # the model's name or path as resolved
    language: str
    context_used: tuple[str, ...] = field(default_factory=tuple)  # terms given to the decoder

    @property
    def words(self) -> tuple[Word, ...]:
        """All words of all segments, in order (empty without word timestamps)."""
        return tuple(w for s in self.segments for w in (s.words or ()))
