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
    temperature: float = 0.0  # sampling temperature of the decode that gave the text


@dataclass(frozen=True)
class TermEvidence:
    """Why a context term was (or was nearly) picked for a stretch of speech."""

    term: str
    score: float  # 0..1: the retriever's confidence that the term was spoken
    span: str  # the first-pass words the term matched
    in_text: bool  # the first pass already spelled the term as given
    # The evidence behind ``score``, where the retriever computed it:
    phonetic: float | None = None  # 0..1: sound match against the first pass's words
    audio: float | None = None  # 0..1: the trained audio scorer's probability (A2P)
    # Log-probability (nats) of the second pass's version of the span minus the first
    # pass's, both scored by a prompt-free forced decode; set once the pick is verified.
    verify: float | None = None


@dataclass(frozen=True)
class ContextPick:
    """The terms picked for one decoder window: its first-pass text and the evidence."""

    start: float  # seconds: the window the first pass decoded
    end: float
    heard: str  # the first pass's best text for one 30 s stretch of the window
    selected: tuple[TermEvidence, ...]  # best first
    rejected: tuple[TermEvidence, ...]  # close to the threshold, not picked
    second_pass: bool  # whether the stretch was decoded again with the picked terms
    seconds: float  # time the retrieval took


@dataclass(frozen=True)
class DomainLM:
    """The language model built from the context's documents (``--context-text``)."""

    words: int  # whitespace-separated words of the documents
    tokens: int  # decoder tokens counted (punctuation-only tokens left out)
    order: int  # n-gram order, in tokens
    ngrams: int  # distinct n-grams of all orders
    classes: int  # distinct (case-folded) tokens the documents use
    seconds: float  # it took to build (once: later calls with the same text reuse it)
    sha256: str  # of the documents' text: the cache key
    lm_weight: float  # its weight in the search
    ilm_weight: float  # the weight of the decoder's internal LM, subtracted


@dataclass(frozen=True)
class Transcript:
    """The transcript of one recording."""

    text: str
    segments: tuple[Segment, ...]
    duration: float  # seconds of audio decoded
    model: str  # the model's name or path as resolved
    language: str
    context_used: tuple[str, ...] = field(default_factory=tuple)  # terms given to the decoder
    # With speech-aware pruning: per 30 s stretch, which terms were picked and why.
    picks: tuple[ContextPick, ...] = field(default_factory=tuple)
    # The documents' language model the search used (None: no document, or off).
    domain_lm: DomainLM | None = None

    @property
    def words(self) -> tuple[Word, ...]:
        """All words of all segments, in order (empty without word timestamps)."""
        return tuple(w for s in self.segments for w in (s.words or ()))
