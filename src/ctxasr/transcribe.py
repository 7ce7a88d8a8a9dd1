"""Transcribing a recording of any length with a context of terms.

The pipeline, one step each: decode audio in blocks (``audio``), find speech and cut
windows at pauses (``vad``), decode each window with faster-whisper (CTranslate2) with
the context in the decoder prompt of every 30 s stretch, and shift the window's
timestamps back onto the recording's clock. Only the audio of windows not yet decoded
is held, so memory does not grow with the recording's length.

How the context reaches the prompt is the ``retriever`` option: by default each
stretch is decoded in two passes, the second with only the terms the first one heard
(``twopass``, ``context.retrieval``); "all" puts the whole list in every prompt as far
as the budget goes (``context.prompt``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from ctxasr.audio import BLOCK_SECONDS, SAMPLE_RATE, probe, stream_audio
from ctxasr.context.graph import ContextGraph, Fusion
from ctxasr.context.hybrid import AudioRetriever, HybridRetriever
from ctxasr.context.ngram import (
    DomainScorer,
    NgramLM,
    TokenClasses,
    build_domain_lm,
    load_lm,
    save_lm,
)
from ctxasr.context.prompt import EMPTY_PROMPT, PROMPT_BUDGET, Prompt, build_prompt
from ctxasr.context.retrieval import (
    Evidence,
    PhoneticRetriever,
    Retrieval,
    Retriever,
    context_key,
    index_cache_dir,
)
from ctxasr.context.spelling import TermSpeller, respell_text
from ctxasr.context.terms import ContextTerm, dedupe_terms
from ctxasr.context.twopass import SeekPlan
from ctxasr.errors import AudioError
from ctxasr.models import ResolvedModel, resolve_model
from ctxasr.options import (  # noqa: F401 - TranscribeOptions and ModelOptions are re-exported
    BACKENDS,
    CLIP_BACKENDS,
    LISTENING,
    RETRIEVERS,
    TORCH_DTYPES,
    ModelOptions,
    TranscribeOptions,
    check_backend,
)
from ctxasr.recent import Recent
from ctxasr.results import DomainLM, Segment, Transcript, Word
from ctxasr.vad import SileroVad, VadOptions, Window, WindowPlanner

# (done_seconds, total_seconds or None when the container does not say)
ProgressCallback = Callable[[float, "float | None"], None]


CACHE_MIN_TERMS = 2000  # smaller contexts index in well under a second: not worth a file
# Documents' language models are stored from this size on (about 30,000 words, which
# build in about a second). Measured on a 1 MB document: 4.8 s to build, 1.7 s to load.
LM_CACHE_MIN_CHARS = 200_000


class Transcriber:
    """Transcribes recordings with a Whisper model and a context of terms.

    >>> t = Transcriber()  # the packaged tiny.en model, on the CPU
    >>> result = t.transcribe("talk.flac", context=["Kubernetes", "etcd"])
    >>> result.text, result.context_used
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        options: TranscribeOptions | None = None,
        model_options: ModelOptions | None = None,
    ) -> None:
        options = options or TranscribeOptions()
        model_options = model_options or ModelOptions()
        self.resolved: ResolvedModel = resolve_model(model)
        self.options = options
        # Retrievers of recent contexts: a server or a batch job reuses one context.
        self._retrievers: Recent[tuple, Retriever] = Recent(4)
        self._scorers: Recent[str | None, object] = Recent(2)
        self._graphs: Recent[tuple[tuple[str, float], ...], ContextGraph] = Recent(16)
        # Documents' language models: a server or a batch job reuses one document.
        self._lms: Recent[tuple[str, int], NgramLM] = Recent(4)
        self._classes: TokenClasses | None = None
        self.backend = model_options.backend
        from ctxasr.whisper.faster import PromptedWhisperModel

        self._model = PromptedWhisperModel(
            self.resolved.path,
            device=model_options.device,
            compute_type=model_options.compute_type,
            cpu_threads=model_options.cpu_threads,
            num_workers=model_options.num_workers,
        )
        if self.backend == "torch":
            self._model.use_torch(model_options.torch_weights or self.resolved.path,
                                  model_options.torch_dtype,
                                  model_options.cpu_threads)  # fmt: skip
        # The clip recognizer of backends "speechllm" and "madeon": Whisper cuts and hears.
        self._llm = None
        if self.backend == "speechllm":
            from ctxasr.speechllm.recognizer import SpeechLLMRecognizer

            self._llm = SpeechLLMRecognizer(model_options.checkpoint, model_options.cpu_threads)
        elif self.backend == "madeon":
            from ctxasr.madeon.recognizer import MadeonRecognizer

            self._llm = MadeonRecognizer(model_options.checkpoint, model_options.cpu_threads)

    @property
    def model_name(self) -> str:
        """The name results carry: the Whisper model's, or the speech LLM checkpoint's."""
        return self._llm.name if self._llm is not None else self.resolved.name

    @property
    def multilingual(self) -> bool:
        """Whether the model transcribes languages other than English."""
        return bool(self._model.model.is_multilingual)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` in the model's vocabulary (no special tokens)."""
        return self._model.hf_tokenizer.encode(text, add_special_tokens=False).ids

    def prompt_for(
        self, context: Iterable[ContextTerm | str], options: TranscribeOptions | None = None
    ) -> Prompt:
        """The whole-list decoder prompt of ``context`` within the options' prompt budget."""
        terms = dedupe_terms(_as_term(t) for t in context)
        if not terms:
            return EMPTY_PROMPT
        return build_prompt(terms, self.encode, (options or self.options).prompt_budget)

    def retriever_for(
        self, context: Sequence[ContextTerm], options: TranscribeOptions | None = None
    ) -> Retriever:
        """The options' retriever of a context, built once and kept for the next calls."""
        opts = options or self.options
        name = opts.retriever if opts.retriever in LISTENING else "phonetic"
        phonetic = self._phonetic_for(context, opts)
        if name == "phonetic":
            return phonetic
        scorer = self.scorer_for(opts.scorer)
        key = (name, context_key(context), opts.retrieval, opts.hybrid, opts.audio_retrieval,
               opts.scorer)  # fmt: skip
        if name == "hybrid":
            return self._retrievers.get(key, lambda: HybridRetriever(phonetic, scorer, opts.hybrid))
        return self._retrievers.get(
            key, lambda: AudioRetriever(phonetic, scorer, opts.audio_retrieval)
        )

    def _phonetic_for(
        self, context: Sequence[ContextTerm], opts: TranscribeOptions
    ) -> PhoneticRetriever:
        key = ("phonetic", context_key(context), opts.retrieval)
        cache = index_cache_dir() if opts.cache_index and len(context) >= CACHE_MIN_TERMS else None
        return self._retrievers.get(
            key, lambda: PhoneticRetriever(context, opts.retrieval, cache_dir=cache)
        )

    def scorer_for(self, weights: str | None = None):
        """The trained audio scorer (``ctxasr.a2p``): ``weights`` a directory, or None for
        the packaged one. Loaded once.

        Raises:
            ModelError: the weights are missing, corrupt, or made for another encoder.
        """
        from ctxasr.a2p.scorer import A2PScorer

        return self._scorers.get(weights, lambda: A2PScorer.load(weights))

    def listen(
        self,
        audio: str | os.PathLike[str] | np.ndarray,
        *,
        options: TranscribeOptions | None = None,
    ) -> list[tuple[float, float, Evidence]]:
        """The first pass alone: per 30 s stretch, its window (seconds) and what it heard
        (n-best texts and the encoder frames): the input of every retriever.

        For benchmarks and tools that compare retrievers on one decode of the audio.
        """
        opts = dataclasses.replace(options or self.options, retriever="phonetic")
        heard: list[tuple[float, float, Evidence]] = []
        plan = SeekPlan(
            retriever=_Listener(heard),
            terms={},
            encode=self.encode,
            nbest=min(opts.nbest, opts.beam_size),
        )
        plan.retriever.plan = plan
        self._run(audio, opts, EMPTY_PROMPT, plan, None, None)
        return heard

    def graph_for(self, terms: Sequence[ContextTerm]) -> ContextGraph:
        """The shallow-fusion context graph of ``terms``, built once and kept for reuse."""
        key = tuple((t.text, t.weight) for t in terms)
        return self._graphs.get(key, lambda: ContextGraph.from_terms(terms, self.encode, bonus=1.0))

    def domain_lm_for(self, document: str, options: TranscribeOptions | None = None) -> NgramLM:
        """The n-gram model of ``document`` over this model's tokens, built once and
        kept for the next calls (``ctxasr.context.ngram``).

        Raises:
            ValueError: the document has no word.
        """
        opts = options or self.options
        tokenizer = self._model.hf_tokenizer
        if self._classes is None:
            eot = tokenizer.token_to_id("<|endoftext|>")
            self._classes = TokenClasses.of_tokenizer(tokenizer, eot)
        classes = self._classes

        def encode(texts: list[str]) -> list[list[int]]:
            return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]

        digest = hashlib.sha256(document.encode("utf-8", "surrogatepass")).hexdigest()
        key = (digest, opts.lm_order)

        def build() -> NgramLM:
            if not opts.cache_index or len(document) < LM_CACHE_MIN_CHARS:
                return build_domain_lm(document, encode, classes, opts.lm_order)
            path = index_cache_dir() / f"lm-{digest[:32]}-{opts.lm_order}-{classes.fingerprint}.npz"
            try:
                return load_lm(path, classes)
            except (OSError, KeyError, ValueError):
                pass  # missing or stale: rebuild
            lm = build_domain_lm(document, encode, classes, opts.lm_order)
            try:
                save_lm(lm, path)
            except OSError:  # a read-only or full cache folder costs the next run a build
                pass
            return lm

        return self._lms.get(key, build)

    def transcribe(
        self,
        audio: str | os.PathLike[str] | np.ndarray,
        context: Iterable[ContextTerm | str] = (),
        *,
        document: str | None = None,
        options: TranscribeOptions | None = None,
        progress: ProgressCallback | None = None,
        on_segment: Callable[[Segment], None] | None = None,
    ) -> Transcript:
        """Transcribe a recording (a path, or 16 kHz mono float32 samples of shape (n,)).

        ``document``: free text the recording is about (slides, a paper, a chapter).
        Its terms are the caller's to extract (``ctxasr.context.extract``) and pass in
        ``context``; here it becomes a language model that re-ranks each search's n-best
        (the options' ``domain_lm`` and ``lm_in_search``; ct2 and torch backends;
        ``Transcript.domain_lm`` says what was built). ``on_segment`` is called with
        each segment as soon as it is final (timestamps on the recording's clock, terms
        respelled), in order: a server streams them.

        Raises:
            AudioError: the recording is missing, unreadable, corrupt or empty.
        """
        opts = options or self.options
        check_backend(opts, self.backend)
        domain, info = self._domain(document, opts)
        terms = dedupe_terms(_as_term(t) for t in context)
        prompt, plan, fusion = EMPTY_PROMPT, None, None
        if terms and opts.retriever == "all":
            if opts.context_prompt and self._llm is not None:  # the LLM's longer prompt
                from ctxasr.speechllm.recognizer import CONTEXT_BUDGET

                prompt = build_prompt(terms, self._llm.encode, CONTEXT_BUDGET)
            elif opts.context_prompt:
                prompt = build_prompt(terms, self.encode, opts.prompt_budget)
            if opts.fusion_weight > 0:  # the LLM builds its graph with its own tokenizer
                graph = self.graph_for(terms) if self._llm is None else None
                fusion = Fusion(opts.fusion_weight, self.graph_for, graph,
                                tuple(t.text for t in terms))  # fmt: skip
        elif terms and opts.retriever not in ("all", "none"):
            plan = SeekPlan(
                retriever=self.retriever_for(terms, opts),
                terms={t.text: t for t in terms},
                encode=self.encode,
                nbest=min(opts.nbest, opts.beam_size),
                budget=opts.prompt_budget if opts.context_prompt else 0,
                verify_margin=opts.verify_margin if opts.verifies(len(terms)) else None,
            )
            if opts.fusion_weight > 0:
                fusion = Fusion(opts.fusion_weight, self.graph_for)
        result = self._run(audio, opts, prompt, plan, fusion, progress, on_segment, domain)
        return dataclasses.replace(result, domain_lm=info) if info is not None else result

    def _domain(self, document: str | None,
                opts: TranscribeOptions) -> tuple[DomainScorer | None, DomainLM | None]:  # fmt: skip
        """The search's scorer of ``document`` and what it was built from, or (None,
        None): no document, a document without words, the option off, or a clip
        backend (its speech LLM has its own tokens and search)."""
        if (not document or not opts.domain_lm or self.backend in CLIP_BACKENDS
                or opts.lm_weight == 0 and opts.ilm_weight == 0):  # fmt: skip
            return None, None
        try:
            lm = self.domain_lm_for(document, opts)
        except ValueError:  # nothing to model: the terms (if any) still apply
            return None, None
        info = dataclasses.replace(lm.info, lm_weight=opts.lm_weight, ilm_weight=opts.ilm_weight)
        return DomainScorer(lm, opts.lm_weight, opts.ilm_weight, opts.lm_mix), info

    def _run(self, audio, opts, prompt, plan, fusion, progress, on_segment=None,
             domain: DomainScorer | None = None) -> Transcript:  # fmt: skip
        if isinstance(audio, np.ndarray):
            if audio.size == 0:
                raise AudioError("<samples>", "contains no audio samples (zero-length audio)")
            blocks: Iterable[np.ndarray] = _blocks_of(audio)
            total: float | None = audio.shape[0] / SAMPLE_RATE
        else:
            total = probe(audio).duration
            blocks = stream_audio(audio)
        run = _Run(self, opts, prompt, plan, fusion, progress, total)
        run.on_segment, run.domain = on_segment, domain
        for window, samples in _windows(blocks, opts.vad, run.note_samples):
            run.decode(window, samples)
        return run.result()


class _Listener:
    """A retriever that picks nothing and keeps what each stretch's first pass heard."""

    listens = True

    def __init__(self, heard: list[tuple[float, float, Evidence]]) -> None:
        self.heard = heard
        self.plan: SeekPlan | None = None

    def retrieve(self, evidence: Evidence) -> Retrieval:
        window = self.plan.window if self.plan is not None else (0.0, 0.0)
        self.heard.append((*window, evidence))
        return Retrieval((), (), 0.0)


class _Heard:
    """Pass 1's retriever for the speech LLM: asks the real one, records its picks in
    the real plan, and answers "nothing" so that Whisper decodes no second pass."""

    def __init__(self, plan: SeekPlan | None) -> None:
        self.plan = plan
        self.listens = bool(getattr(plan.retriever, "listens", False)) if plan else False
        self.latest: tuple[str, ...] = ()  # the terms of the stretch decoded last

    def retrieve(self, evidence: Evidence) -> Retrieval:
        assert self.plan is not None
        found = self.plan.retriever.retrieve(evidence)
        heard = evidence.hypotheses[0] if evidence.hypotheses else ""
        self.plan.record(found, heard, second_pass=True)  # the LLM always decodes
        self.latest = tuple(e.term for e in found.selected)
        return Retrieval((), (), 0.0)


# The speech LLM was trained on single sentences: pass 1's segments are joined into
# clips of at most this long, cut in the middle of the pauses between them.
LLM_CLIP_SECONDS = 12.0


def _clips(spans: Sequence[tuple[float, float, tuple[str, ...]]],
           total: float) -> list[tuple[float, float, tuple[str, ...]]]:  # fmt: skip
    """Pass 1's segments ``(start, end, terms)`` (seconds in the window) as clips: runs of
    segments up to ``LLM_CLIP_SECONDS`` (a longer segment alone, cut at 30 s), their
    bounds halfway between segments, the first from 0 and the last to ``total``; the
    terms of a clip are its segments' together."""
    from ctxasr.speechllm.recognizer import MAX_CLIP_SECONDS

    spans = sorted((max(0.0, a), min(total, max(a, b)), t) for a, b, t in spans)
    groups: list[list[tuple[float, float, tuple[str, ...]]]] = []
    for span in spans:
        if groups and span[1] - groups[-1][0][0] <= LLM_CLIP_SECONDS:
            groups[-1].append(span)
        else:
            groups.append([span])
    out = []
    for i, group in enumerate(groups):
        start = 0.0 if i == 0 else (groups[i - 1][-1][1] + group[0][0]) / 2
        stop = total if i == len(groups) - 1 else (group[-1][1] + groups[i + 1][0][0]) / 2
        terms = tuple(dict.fromkeys(t for _, _, ts in group for t in ts))
        while stop - start > MAX_CLIP_SECONDS:
            out.append((start, start + MAX_CLIP_SECONDS, terms))
            start += MAX_CLIP_SECONDS
        if stop > start:
            out.append((start, stop, terms))
    return out


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
        plan: SeekPlan | None,
        fusion: Fusion | None,
        progress: ProgressCallback | None,
        total: float | None,
    ) -> None:
        self.owner, self.opts, self.prompt, self.plan = owner, opts, prompt, plan
        self.fusion = fusion
        self.progress, self.total = progress, total
        self.segments: list[Segment] = []
        self.speller: TermSpeller | None = None
        self.offered: tuple[str, ...] = ()  # terms the decoder has been given so far
        self.respelled: tuple[str, ...] = ()  # terms near-misses are respelled into
        self._offer(prompt.terms)
        if fusion is not None:
            # Fusion already spells its terms; respelling against a whole (possibly huge)
            # list would cost time and misfire ("at one" -> "atone"), so it stays with
            # the terms that were prompted.
            self._offer(fusion.terms, respell=False)
        self.previous: list[int] = []  # tokens of the previous window's text
        self.samples = 0
        self.language = opts.language
        self.on_segment: Callable[[Segment], None] | None = None
        self.domain: DomainScorer | None = None

    def note_samples(self, seen: int) -> None:
        self.samples = seen

    def _offer(self, terms: Sequence[str], respell: bool = True) -> None:
        new = [t for t in terms if t not in self.offered]
        if new:
            self.offered = (*self.offered, *new)
        if respell and self.opts.respell_terms:
            fresh = [t for t in terms if t not in self.respelled]
            if fresh:
                self.respelled = (*self.respelled, *fresh)
                self.speller = TermSpeller(self.respelled)

    def decode(self, window: Window, samples: np.ndarray) -> None:
        offset = window.start / SAMPLE_RATE
        if self.owner._llm is not None:
            self._decode_llm(window, samples, offset)
        else:
            with self.owner._model.using(self.prompt, self.plan, self.fusion, self.domain,
                                         self.opts.lm_in_search):  # fmt: skip
                self._decode(window, samples, offset)
        if self.progress is not None:
            self.progress(window.end / SAMPLE_RATE, self.total)

    def _decode(self, window: Window, samples: np.ndarray, offset: float) -> None:
        opts = self.opts
        if self.plan is not None:
            self.plan.window = (round(offset, 3), round(window.end / SAMPLE_RATE, 3))
        decoded, info = self.owner._model.transcribe(
            samples,
            language=opts.language,
            initial_prompt=self._previous_tail() or None,
            word_timestamps=opts.word_timestamps,
            **self._search(),
        )
        window_text: list[str] = []
        hot = False  # decoded only at a high fallback temperature: not worth repeating
        for seg in decoded:  # the generator decodes as it goes: picks happen in here
            if self.plan is not None:
                self._offer(tuple(self.plan.used))
            if _echoes_prompt(seg.text, self.offered):
                continue
            shifted = _shift(seg, offset, window.end / SAMPLE_RATE)
            if self.speller is not None:
                shifted = _respell(shifted, self.speller)
            self.segments.append(shifted)
            if self.on_segment is not None:
                self.on_segment(shifted)
            window_text.append(shifted.text)
            hot = hot or (seg.temperature or 0.0) > 0.5
            if self.progress is not None:
                self.progress(offset + seg.end, self.total)
        self.language = self.language or info.language
        if opts.condition_on_previous_text and window_text and not hot:
            self.previous = self.owner.encode("".join(window_text))
        else:
            self.previous = []

    def _search(self) -> dict:
        """faster-whisper's search settings of every pass: beam, fallback, thresholds."""
        opts = self.opts
        return {
            "beam_size": opts.beam_size,
            "temperature": list(opts.temperatures),
            "compression_ratio_threshold": opts.compression_ratio_threshold,
            "log_prob_threshold": opts.log_prob_threshold,
            "no_speech_threshold": opts.no_speech_threshold,
            "condition_on_previous_text": opts.condition_on_previous_text,
            "vad_filter": False,
        }

    def _decode_llm(self, window: Window, samples: np.ndarray, offset: float) -> None:
        """Backend "speechllm": Whisper's pass 1 cuts the window into sentence-sized clips
        and, with a two-pass retriever, picks each 30 s stretch's terms; the speech LLM
        then transcribes each clip with its stretch's terms (or the whole list's prompt
        with retriever "all") in its prompt."""
        from ctxasr.speechllm.recognizer import Clip

        opts, end = self.opts, window.end / SAMPLE_RATE
        if self.plan is not None:
            self.plan.window = (round(offset, 3), round(end, 3))
        heard = _Heard(self.plan)
        hear = SeekPlan(retriever=heard, terms={}, encode=self.owner.encode,
                        nbest=self.plan.nbest) if self.plan is not None else None  # fmt: skip
        spans: list[tuple[float, float, tuple[str, ...]]] = []
        with self.owner._model.using(EMPTY_PROMPT, hear, None):
            decoded, info = self.owner._model.transcribe(samples, language="en", **self._search())
            for seg in decoded:  # each segment follows its stretch's retrieval
                if seg.text.strip():
                    spans.append((seg.start, seg.end, heard.latest))
        if self.plan is not None:
            self._offer(tuple(self.plan.used))
        fixed = self.prompt.terms if opts.context_prompt else ()
        clips = _clips(spans, len(samples) / SAMPLE_RATE)
        batch = [Clip(samples[round(a * SAMPLE_RATE) : round(b * SAMPLE_RATE)],
                      fixed or (terms if opts.context_prompt else ()))
                 for a, b, terms in clips]  # fmt: skip
        fused = None
        if self.fusion is not None:
            fused = [self.fusion.terms or terms for _, _, terms in clips]
        texts = self.owner._llm.transcribe(batch, beam_size=opts.beam_size,
                                           fusion_weight=opts.fusion_weight,
                                           fusion_terms=fused,
                                           ctc_weight=opts.ctc_weight)  # fmt: skip
        for (a, b, _), clip, text in zip(clips, batch, texts):
            if not text.strip() or _echoes_prompt(text, clip.terms):
                continue
            seg = Segment(start=min(round(a + offset, 3), end), end=min(round(b + offset, 3), end),
                          text=" " + text.strip(), words=None, avg_logprob=0.0,
                          no_speech_prob=0.0, temperature=0.0)  # fmt: skip
            if self.speller is not None:
                seg = _respell(seg, self.speller)
            self.segments.append(seg)
            if self.on_segment is not None:
                self.on_segment(seg)
        self.language = self.language or info.language

    def _previous_tail(self) -> list[int]:
        # Whisper's limit for the whole prompt; ``with_context`` trims further for pass 2.
        room = PROMPT_BUDGET - len(self.prompt.tokens)
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
            model=self.owner.model_name,
            language=self.language or "",
            context_used=self.offered,
            picks=tuple(self.plan.picks) if self.plan is not None else (),
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
        temperature=float(seg.temperature or 0.0),
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
