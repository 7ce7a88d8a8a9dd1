"""Beam search over the PyTorch Whisper decoder, with logit filters and shallow fusion.

The search is built from small parts, as openai-whisper's decoding is:

- ``LogitFilter``: edits a step's logits in place before the log-softmax (suppressed
  tokens, Whisper's timestamp rules, repetition penalties).
- ``TokenScorer``: shallow fusion. Each hypothesis carries the scorer's state; a
  candidate token's score gets ``scorer.score(state, token)`` added, and a finished
  hypothesis gets ``scorer.finish(state)``. The context graph
  (``ctxasr.context.graph``) plugs in here through ``ContextFusion``.
- ``DomainFusion``: a document's language model (``ctxasr.context.ngram``), fused over
  the whole vocabulary at every step, with the decoder's internal language model
  estimated on a second, audio-free decoder cache and subtracted (HAED's recipe).
- ``BeamSearch``: expands every beam of every audio item in one decoder call, keeps
  the best ``beam_size`` live hypotheses per item and collects finished ones.

The search follows CTranslate2's Whisper decoding wherever ctxasr's two backends must
agree: the same filter order, timestamp rules, ``2 * beam_size`` candidates per step,
a finished hypothesis replaced by the next live candidate, stopping once
``round(beam_size * patience)`` hypotheses are finished, and scores normalised by
``length ** length_penalty``.

Shapes: A = audio items, K = beams per item, N = A * K decoder rows, V = vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from ctxasr.whisper.model import KVCache, Whisper

NEG_INF = float("-inf")


@dataclass(frozen=True)
class WhisperTokens:
    """The special token ids a search needs (tiny.en: 50256, 50257, 50362, 50363, 50361)."""

    eot: int
    sot: int
    no_timestamps: int
    timestamp_begin: int
    no_speech: int
    n_vocab: int
    languages: tuple[tuple[int, str], ...] = ()  # multilingual models: (id, "<|en|>")

    @property
    def timestamp_end(self) -> int:
        return self.n_vocab - 1


@dataclass(frozen=True)
class SearchOptions:
    """How one window is searched; mirrors the decoding fields of faster-whisper.

    ``beam_size`` has no default here: the pipeline's ``TranscribeOptions.beam_size`` is
    the one place it is set.
    """

    beam_size: int
    patience: float = 1.0  # finished hypotheses to collect = round(beam_size * patience)
    num_hypotheses: int = 1  # how many finished hypotheses to return, best first
    length_penalty: float = 1.0  # score = logprob / length ** length_penalty
    max_new_tokens: int = 224
    temperature: float = 0.0  # > 0 samples (with beam_size 1) instead of searching
    seed: int | None = None  # sampling seed, for reproducible fallbacks

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {self.beam_size}")
        if self.patience <= 0:
            raise ValueError(f"patience must be positive, got {self.patience}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.temperature > 0 and self.beam_size != 1:
            raise ValueError("sampling (temperature > 0) needs beam_size 1")
        if self.num_hypotheses < 1 or (
            self.temperature == 0 and self.num_hypotheses > self.max_candidates
        ):
            raise ValueError(
                f"num_hypotheses must be between 1 and round(beam_size * patience) = "
                f"{self.max_candidates}, got {self.num_hypotheses}"
            )
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")

    @property
    def max_candidates(self) -> int:
        return max(1, round(self.beam_size * self.patience))


@dataclass(frozen=True)
class Hypothesis:
    """One finished search result.

    ``tokens`` are the generated ids without the prompt and without the closing
    end-of-text; ``logprob`` is the model's summed log-probability of them and of the
    end-of-text (no fusion bonus); ``fusion`` the summed scorer bonus; ``score`` the
    ranking score ``(logprob + fusion) / len(tokens) ** length_penalty``.
    """

    tokens: tuple[int, ...]
    logprob: float
    fusion: float
    score: float
    token_logprobs: tuple[float, ...] = ()  # each token's log-probability, as ``tokens``


@dataclass(frozen=True)
class SearchResult:
    """One audio item's hypotheses, best first, and its no-speech probability."""

    hypotheses: tuple[Hypothesis, ...]
    no_speech_prob: float


class LogitFilter(Protocol):
    """Edits one step's logits in place.

    ``logits``: (N, V) float32; ``generated``: each row's tokens since the prompt;
    ``step``: how many tokens each row has generated so far (0 at the first step).
    """

    def apply(self, logits: Tensor, generated: Sequence[Sequence[int]], step: int) -> None: ...


class TokenScorer(Protocol):
    """Shallow fusion: a per-hypothesis state machine that adds to token scores."""

    def start(self) -> object:
        """The state of a new hypothesis."""
        ...

    def candidates(self, state: object) -> Collection[int]:
        """Tokens to consider besides the model's top ones (e.g. a term's next token)."""
        ...

    def score(self, state: object, token: int) -> tuple[float, object]:
        """(bonus, next state) for appending ``token``."""
        ...

    def finish(self, state: object) -> float:
        """Bonus to add when a hypothesis ends in ``state`` (e.g. take back a partial)."""
        ...


class SuppressTokens:
    """Never emit these tokens."""

    def __init__(self, ids: Collection[int]) -> None:
        self.ids = torch.tensor(sorted(set(ids)), dtype=torch.long)

    def apply(self, logits: Tensor, generated: Sequence[Sequence[int]], step: int) -> None:
        if self.ids.numel():
            logits[:, self.ids] = NEG_INF


class SuppressAtBegin(SuppressTokens):
    """Not as the first token (Whisper's blank and end-of-text at the start)."""

    def apply(self, logits: Tensor, generated: Sequence[Sequence[int]], step: int) -> None:
        if step == 0:
            super().apply(logits, generated, step)


class RepetitionPenalty:
    """Make already generated tokens less likely (CTRL's penalty; 1.0 does nothing)."""

    def __init__(self, penalty: float) -> None:
        if penalty <= 0:
            raise ValueError(f"repetition_penalty must be positive, got {penalty}")
        self.penalty = penalty

    def apply(self, logits: Tensor, generated: Sequence[Sequence[int]], step: int) -> None:
        for row, tokens in enumerate(generated):
            if tokens:
                ids = torch.tensor(sorted(set(tokens)), dtype=torch.long)
                values = logits[row, ids]
                logits[row, ids] = torch.where(values < 0, values * self.penalty,
                                               values / self.penalty)  # fmt: skip


class NoRepeatNgram:
    """Forbid a token that would repeat an n-gram already in the row."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"no_repeat_ngram_size must be at least 1, got {size}")
        self.size = size

    def apply(self, logits: Tensor, generated: Sequence[Sequence[int]], step: int) -> None:
        n = self.size
        for row, tokens in enumerate(generated):
            if len(tokens) < n - 1:
                continue
            prefix = tuple(tokens[len(tokens) - n + 1 :]) if n > 1 else ()
            banned = {tokens[i + n - 1] for i in range(len(tokens) - n + 1)
                      if tuple(tokens[i : i + n - 1]) == prefix}  # fmt: skip
            if banned:
                logits[row, sorted(banned)] = NEG_INF


class TimestampRules:
    """Whisper's timestamp grammar (the rules of openai-whisper and CTranslate2).

    - Never ``<|notimestamps|>``; the first token is a timestamp no later than
      ``max_initial_timestamp_index`` steps of 20 ms.
    - Timestamps come in pairs (start, end) except the one right before end-of-text:
      after a lone timestamp text is not allowed, after a pair a timestamp is not.
    - Timestamps never go back in time.
    - When the timestamps together are likelier than the likeliest text token, a
      timestamp must come next.
    """

    def __init__(self, tokens: WhisperTokens, max_initial_timestamp_index: int | None) -> None:
        self.t = tokens
        self.max_initial = max_initial_timestamp_index

    def apply(self, logits: Tensor, generated: Sequence[Sequence[int]], step: int) -> None:
        t = self.t
        begin, end = t.timestamp_begin, t.timestamp_end + 1
        logits[:, t.no_timestamps] = NEG_INF
        if step == 0:
            logits[:, :begin] = NEG_INF
            if self.max_initial is not None:
                logits[:, begin + self.max_initial + 1 : end] = NEG_INF
            return
        check = []
        for row, tokens in enumerate(generated):
            last = tokens[-1]
            if last >= begin:
                penultimate = tokens[-2] if len(tokens) > 1 else last
                if penultimate >= begin:
                    logits[row, begin:end] = NEG_INF  # a closed pair: text or the end next
                else:
                    logits[row, : t.eot] = NEG_INF  # an open segment: its end time next
                    check.append(row)
            else:
                check.append(row)
            latest = next((tok for tok in reversed(tokens) if tok >= begin), None)
            if latest is not None:
                logits[row, begin:latest] = NEG_INF
        if check:
            rows = torch.tensor(check, dtype=torch.long)
            logprobs = torch.log_softmax(logits[rows], dim=-1)
            stamp = torch.logsumexp(logprobs[:, begin:end], dim=-1)
            text = logprobs[:, :begin].max(dim=-1).values
            for row, force in zip(check, (stamp > text).tolist(), strict=True):
                if force:
                    logits[row, :begin] = NEG_INF


class ContextFusion:
    """Shallow fusion with a context graph: ``weight`` x the graph's bonus per token.

    Special tokens (timestamps, ``<|endoftext|>``) pass through the graph unchanged, so
    a segment boundary neither breaks nor completes a term; the end of a hypothesis
    takes back an unfinished match.
    """

    def __init__(self, graph, weight: float, first_special: int) -> None:
        # graph: ctxasr.context.graph.ContextGraph (kept untyped: no import cycle needed)
        if weight < 0 or not math.isfinite(weight):
            raise ValueError(f"fusion weight must be a finite number >= 0, got {weight}")
        self.graph = graph
        self.weight = weight
        self.first_special = first_special

    def start(self) -> object:
        return self.graph.root

    def candidates(self, state) -> Collection[int]:
        # Inside a partial match, the term's next tokens; at the root, none: a term's
        # first token must be among the model's own top candidates, or every step of
        # every beam would score the first tokens of all terms.
        return () if state is self.graph.root else self.graph.next_tokens(state)

    def score(self, state, token: int) -> tuple[float, object]:
        if token >= self.first_special:
            return 0.0, state
        bonus, state, _ = self.graph.forward_one_step(state, token)
        return self.weight * bonus, state

    def finish(self, state) -> float:
        return self.weight * self.graph.finalize(state)


class DomainFusion:
    """A document's language model in the search, over the whole vocabulary.

    ``scorer`` (``ctxasr.context.ngram.DomainScorer``: the n-gram, its weights and
    mixture; untyped, decoding imports no context module) says what a token earns;
    this class computes it for every token of every row at once, from the rows'
    n-gram states and the internal language model's log-probabilities.
    """

    def __init__(self, scorer) -> None:
        self.scorer = scorer
        self._scored = torch.from_numpy(scorer.lm.token_class >= 0)  # (V,) bool

    def start(self) -> object:
        return self.scorer.lm.start()

    def advance(self, state, token: int) -> object:
        return self.scorer.lm.advance(state, token)

    def bonus(self, states: Sequence[object], ilm_logprobs: Tensor) -> Tensor:
        """(N, V) additions to the rows' log-probabilities, from each row's n-gram
        state and the internal model's (N, V) log-probabilities."""
        vocab = ilm_logprobs.shape[-1]
        lm = self.scorer.lm
        doc = np.stack([lm.distribution(s)[:vocab] for s in states])
        scored = self._scored[:vocab]
        if doc.shape[1] < vocab:  # the model's vocabulary has unused ids past the tokenizer's
            doc = np.pad(doc, ((0, 0), (0, vocab - doc.shape[1])), constant_values=1.0)
            scored = torch.cat([scored, scored.new_zeros(vocab - scored.shape[0])])
        ilm = ilm_logprobs.double()
        mix = self.scorer.mix
        mixed = torch.log(mix * torch.from_numpy(doc) + (1 - mix) * ilm.exp())
        out = self.scorer.lm_weight * mixed - self.scorer.ilm_weight * ilm
        return torch.where(scored, out, torch.zeros((), dtype=out.dtype)).float()


@dataclass
class _Live:
    """A hypothesis still being extended."""

    tokens: list[int]
    logprob: float
    fusion: float
    state: object
    logprobs: list[float] = field(default_factory=list)
    history: object = None  # the domain language model's state


@dataclass
class _Candidate:
    """``parent`` (decoder row ``row``) extended by ``token``."""

    total: float  # ranking score so far: log-probabilities plus fusion bonuses
    row: int
    parent: _Live
    token: int
    logprob: float  # of the token alone
    bonus: float
    state: object
    history: object = None

    def extended(self) -> _Live:
        p = self.parent
        return _Live(p.tokens + [self.token], p.logprob + self.logprob,
                     p.fusion + self.bonus, self.state, p.logprobs + [self.logprob],
                     self.history)  # fmt: skip


@dataclass
class _Samples:
    """The rows a sampling search extends, and the finished samples of each audio item."""

    rows: list[_Live]
    owner: list[int]  # the audio item of each row
    finished: list[list[Hypothesis]]

    def keep_only(self, keep: list[int], cache: KVCache) -> None:
        """Keep the rows ``keep`` (and the audio of the items that still have one) in
        these samples and in ``cache``."""
        items = sorted({self.owner[r] for r in keep})
        alive_items = sorted(set(self.owner))
        if len(items) != len(alive_items):
            cache.select_audio(torch.tensor([alive_items.index(i) for i in items]))
        cache.reorder(torch.tensor(keep))
        self.rows = [self.rows[r] for r in keep]
        self.owner = [self.owner[r] for r in keep]


class BeamSearch:
    """Search the decoder for each audio item's best token sequences.

    ``filters`` run in order on every step's logits; ``scorer`` (optional) adds shallow
    fusion, ``domain`` a document's language model. With ``options.temperature > 0``
    rows are sampled instead (Whisper's temperature fallback), ``num_hypotheses``
    samples per item; sampling leaves ``domain`` out.
    """

    def __init__(self, model: Whisper, tokens: WhisperTokens, options: SearchOptions,
                 filters: Sequence[LogitFilter] = (), scorer: TokenScorer | None = None,
                 domain: DomainFusion | None = None) -> None:  # fmt: skip
        self.model = model
        self.t = tokens
        self.options = options
        self.filters = list(filters)
        self.scorer = scorer
        self.domain = domain
        self.steps = 0  # decoding steps of the last run (for benchmarks)

    @torch.inference_mode()
    def run(self, audio_features: Tensor, prompt: Sequence[int]) -> list[SearchResult]:
        """Search (A, S, D) audio features after ``prompt`` (shared by every item).

        The prompt holds previous text and ``<|startoftranscript|>`` (and, for
        multilingual models, language and task tokens); the no-speech probability is
        read at the start-of-transcript position, before any filter.
        """
        prompt = list(prompt)
        self.steps = 0
        if self.t.sot not in prompt:
            raise ValueError("the prompt has no <|startoftranscript|> token")
        sot_index = prompt.index(self.t.sot)
        n_audio = audio_features.shape[0]
        cache = self.model.decoder.new_cache(audio_features)
        logits = self.model.decoder(torch.tensor([prompt] * n_audio), cache)  # (A, T, V)
        no_speech = torch.softmax(logits[:, sot_index], dim=-1)[:, self.t.no_speech].tolist()
        first = logits[:, -1]  # (A, V)
        steps = max(1, min(self.options.max_new_tokens,
                           self.model.dims.n_text_ctx - len(prompt)))  # fmt: skip
        if self.options.temperature > 0:
            found = self._sample(first, cache, steps)
        elif self.domain is not None:
            found = self._beam(first, cache, steps, self._internal_lm(prompt, audio_features))
        else:
            found = self._beam(first, cache, steps)
        return [SearchResult(tuple(h), p) for h, p in zip(found, no_speech, strict=True)]

    def _logprobs(self, logits: Tensor, rows: Sequence[_Live], step: int) -> Tensor:
        """Filtered log-probabilities (N, V) of one step's (N, V) logits."""
        logits = logits.float().clone()
        generated = [h.tokens for h in rows]
        for f in self.filters:
            f.apply(logits, generated, step)
        return torch.log_softmax(logits, dim=-1)

    def _internal_lm(self, prompt: list[int], audio_features: Tensor) -> tuple[KVCache, Tensor]:
        """A decoder cache without audio, and its (A, V) first logits: the internal LM.

        One zero frame stands for a zero encoder output of any length: the cross
        attention of a constant input is uniform, so it returns the same value vector.
        """
        n_audio, _, width = audio_features.shape
        silent = audio_features.new_zeros((n_audio, 1, width))
        cache = self.model.decoder.new_cache(silent)
        logits = self.model.decoder(torch.tensor([prompt] * n_audio), cache)[:, -1]
        return cache, logits

    def _beam(self, first: Tensor, cache: KVCache, steps: int,
              internal: tuple[KVCache, Tensor] | None = None) -> list[list[Hypothesis]]:  # fmt: skip
        n_audio = first.shape[0]
        start = self.scorer.start() if self.scorer is not None else None
        history = self.domain.start() if self.domain is not None else None
        # An item starts with one live row; after the first step it has K.
        groups = [[_Live([], 0.0, 0.0, start, history=history)] for _ in range(n_audio)]
        finished: list[list[Hypothesis]] = [[] for _ in range(n_audio)]
        active = list(range(n_audio))  # items still searching, in cache order
        logits = first
        ilm_cache, ilm_logits = internal if internal is not None else (None, None)
        for step in range(steps):
            self.steps += 1
            rows = [h for i in active for h in groups[i]]
            logprobs = self._logprobs(logits, rows, step)  # (N, V)
            dense = None
            if self.domain is not None and ilm_logits is not None:
                ilm = torch.log_softmax(ilm_logits.float(), dim=-1)  # (N, V)
                dense = self.domain.bonus([h.history for h in rows], ilm)
            last = step + 1 == steps
            origins: list[int] = []
            still = []
            offset = 0
            for i in active:
                size = len(groups[i])
                part = None if dense is None else dense[offset : offset + size]
                candidates = self._expand(groups[i], logprobs[offset : offset + size], offset,
                                          part)  # fmt: skip
                live = self._settle(candidates, finished[i], last)
                offset += size
                if live and len(finished[i]) < self.options.max_candidates:
                    still.append(i)
                    groups[i] = [c.extended() for c in live]
                    origins += [c.row for c in live]
            if not still:
                break
            caches = [cache] if ilm_cache is None else [cache, ilm_cache]
            if len(still) != len(active):
                for c in caches:
                    c.select_audio(torch.tensor([active.index(i) for i in still]))
                active = still
            for c in caches:
                c.reorder(torch.tensor(origins))
            next_tokens = torch.tensor([[h.tokens[-1]] for i in active for h in groups[i]])
            logits = self.model.decoder(next_tokens, cache)[:, -1]
            if ilm_cache is not None:
                ilm_logits = self.model.decoder(next_tokens, ilm_cache)[:, -1]
        return [self._ranked(f) for f in finished]

    def _expand(self, group: list[_Live], logprobs: Tensor, offset: int,
                dense: Tensor | None = None) -> list[_Candidate]:  # fmt: skip
        """The best 2K candidates of one item's K rows, by fused score, best first.

        ``dense`` (K, V): the domain model's additions, which pick the candidates too.
        """
        width = min(2 * self.options.beam_size, logprobs.shape[-1])
        ranked = logprobs if dense is None else logprobs + dense
        top_ids = torch.topk(ranked, width, dim=-1).indices
        top_lp = logprobs.gather(-1, top_ids).tolist()
        top_ids = top_ids.tolist()
        candidates = []
        for r, h in enumerate(group):
            tokens = dict(zip(top_ids[r], top_lp[r], strict=True))
            if self.scorer is not None:
                # A bonus can lift a term's next token from outside the model's top 2K.
                extra = [t for t in self.scorer.candidates(h.state) if t not in tokens]
                if extra:
                    tokens.update(zip(extra, logprobs[r, extra].tolist(), strict=True))
            for token, lp in tokens.items():
                if lp == NEG_INF:
                    continue
                bonus, state, history = 0.0, None, None
                if self.scorer is not None:
                    bonus, state = self.scorer.score(h.state, token)
                if dense is not None and self.domain is not None:
                    bonus += float(dense[r, token])
                    history = self.domain.advance(h.history, token)
                total = h.logprob + h.fusion + lp + bonus
                candidates.append(_Candidate(total, offset + r, h, token, lp, bonus, state,
                                             history))  # fmt: skip
        candidates.sort(key=lambda c: -c.total)
        return candidates[:width]

    def _settle(self, candidates: list[_Candidate], finished: list[Hypothesis],
                last: bool) -> list[_Candidate]:  # fmt: skip
        """Move ending candidates into ``finished``; return the (at most K) that live on.

        As in CTranslate2, an ending candidate among the best K gives its place to the
        next non-ending candidate after the K best.
        """
        k = self.options.beam_size
        live = []
        spare = k
        for c in candidates[:k]:
            if c.token != self.t.eot and not last:
                live.append(c)
                continue
            finished.append(self._finish(c))
            while spare < len(candidates) and candidates[spare].token == self.t.eot:
                spare += 1
            if spare < len(candidates) and not last:
                live.append(candidates[spare])
                spare += 1
        return live

    def _finish(self, c: _Candidate) -> Hypothesis:
        p = c.parent
        ended = c.token == self.t.eot
        tokens = tuple(p.tokens) if ended else (*p.tokens, c.token)
        logprobs = tuple(p.logprobs) if ended else (*p.logprobs, c.logprob)
        fusion = p.fusion + c.bonus
        if self.scorer is not None:
            fusion += self.scorer.finish(c.state)
        logprob = p.logprob + c.logprob
        length = max(1, len(tokens)) ** self.options.length_penalty
        return Hypothesis(tokens, logprob, fusion, (logprob + fusion) / length, logprobs)

    def _ranked(self, finished: list[Hypothesis]) -> list[Hypothesis]:
        ranked = sorted(finished, key=lambda h: -h.score)
        return ranked[: self.options.num_hypotheses]

    def _sample(self, first: Tensor, cache: KVCache, steps: int) -> list[list[Hypothesis]]:
        """``num_hypotheses`` samples per item at ``temperature``, best first.

        Fusion adds its bonus to the sampling logits of a term's next tokens.
        """
        opts = self.options
        generator = torch.Generator()
        generator.manual_seed(opts.seed if opts.seed is not None else torch.seed())
        samples, logits = self._start_samples(first, cache)
        for step in range(steps):
            self.steps += 1
            logprobs = self._logprobs(logits, samples.rows, step)  # (N, V)
            weights = self._sampling_weights(logprobs, samples.rows)
            picks = torch.multinomial(torch.softmax(weights, dim=-1), 1, generator=generator)
            keep = self._extend_samples(samples, picks[:, 0].tolist(), logprobs, step + 1 == steps)
            if not keep:
                break
            if len(keep) != len(samples.rows):
                samples.keep_only(keep, cache)
            next_tokens = torch.tensor([[h.tokens[-1]] for h in samples.rows])
            logits = self.model.decoder(next_tokens, cache)[:, -1]
        return [self._ranked(f) for f in samples.finished]

    def _start_samples(self, first: Tensor, cache: KVCache) -> tuple[_Samples, Tensor]:
        """``num_hypotheses`` empty rows per item and their first logits (N, V); the cache
        is repeated to match."""
        n = self.options.num_hypotheses
        n_audio = first.shape[0]
        start = self.scorer.start() if self.scorer is not None else None
        rows = [_Live([], 0.0, 0.0, start) for _ in range(n_audio * n)]
        owner = [i for i in range(n_audio) for _ in range(n)]
        cache.reorder(torch.arange(n_audio).repeat_interleave(n))
        samples = _Samples(rows, owner, [[] for _ in range(n_audio)])
        return samples, first.repeat_interleave(n, dim=0)

    def _sampling_weights(self, logprobs: Tensor, rows: Sequence[_Live]) -> Tensor:
        """The (N, V) logits to sample from: log-probabilities at ``temperature``, plus the
        fusion bonus of each row's scorer candidates (a term's next tokens)."""
        weights = logprobs / self.options.temperature
        if self.scorer is not None:
            for r, h in enumerate(rows):
                for token in self.scorer.candidates(h.state):
                    weights[r, token] += self.scorer.score(h.state, token)[0]
        return weights

    def _extend_samples(self, samples: _Samples, tokens: list[int], logprobs: Tensor,
                        last: bool) -> list[int]:  # fmt: skip
        """Extend each row by its sampled token; a row that ends (end-of-text, or the
        ``last`` step) becomes a finished hypothesis of its item. Returns the rows that
        live on."""
        keep = []
        for r, token in enumerate(tokens):
            h = samples.rows[r]
            bonus, state = (self.scorer.score(h.state, token)
                            if self.scorer is not None else (0.0, None))  # fmt: skip
            c = _Candidate(0.0, r, h, token, logprobs[r, token].item(), bonus, state)
            if token == self.t.eot or last:
                samples.finished[samples.owner[r]].append(self._finish(c))
            else:
                samples.rows[r] = c.extended()
                keep.append(r)
        return keep
