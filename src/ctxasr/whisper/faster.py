"""faster-whisper with ctxasr's context: the adapter between the pipeline and the model.

faster-whisper (CTranslate2) decodes; this subclass puts the context in the prompt of
every 30 s seek, decodes each seek in two passes when a ``SeekPlan`` asks for it
(``ctxasr.context.twopass``), asks CTranslate2 for n-best hypotheses, fuses a context
graph in the torch backend's beam search, and can swap CTranslate2 for ctxasr's torch
Whisper on the same weights. Imports faster-whisper: the pipeline imports this module
only when it loads a model.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from faster_whisper import WhisperModel

from ctxasr.context.graph import ContextGraph, Fusion
from ctxasr.context.ngram import DomainScorer
from ctxasr.context.prompt import EMPTY_PROMPT, Prompt
from ctxasr.context.terms import ContextTerm
from ctxasr.context.twopass import FirstPass, SeekPlan, TwoPassSeek, with_context
from ctxasr.errors import ModelError


class PromptedWhisperModel(WhisperModel):
    """faster-whisper with ctxasr's context in the prompt of every 30 s seek.

    faster-whisper puts an initial prompt only before the first seek, where later text
    soon pushes it out. Here the context comes first in every seek's prompt, and
    previous text fills only what the 223-token budget leaves. With a ``SeekPlan`` each
    seek is decoded in two passes over one encoder output (``TwoPassSeek``). The
    per-call state is thread-local, so threads may share one model.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.model = NBest(self.model)
        self._local = threading.local()

    def use_torch(self, weights: str, dtype: str = "float32", threads: int = 0) -> None:
        """Decode with ctxasr's PyTorch Whisper (``weights``) instead of CTranslate2."""
        try:
            import torch
        except ImportError:
            raise ModelError(weights, "the torch backend needs PyTorch: pip install "
                             "torch==2.13.0 'ctxasr[torch]'") from None  # fmt: skip

        from ctxasr.whisper.backend import TorchWhisper, tokens_of
        from ctxasr.whisper.weights import load_whisper

        if threads > 0:
            torch.set_num_threads(threads)
        loaded = load_whisper(weights, dtype=getattr(torch, dtype))
        self.model = NBest(TorchWhisper(loaded, tokens_of(self.hf_tokenizer, loaded)))

    @contextlib.contextmanager
    def using(self, prompt: Prompt, plan: SeekPlan | None, fusion: Fusion | None = None,
              domain: DomainScorer | None = None,
              lm_in_search: bool = False) -> Iterator[None]:  # fmt: skip
        """Decode with this context until the block ends (this thread only)."""
        self._local.prompt, self._local.plan = prompt, plan
        self._local.fusion, self._local.domain = fusion, domain
        self._local.lm_in_search = lm_in_search
        try:
            yield
        finally:
            self._local.prompt, self._local.plan = EMPTY_PROMPT, None
            self._local.fusion = self._local.domain = None
            self._local.lm_in_search = False

    def get_prompt(self, tokenizer, previous_tokens, without_timestamps=False,
                   prefix=None, hotwords=None):  # fmt: skip
        prompt = super().get_prompt(tokenizer, previous_tokens, without_timestamps,
                                    prefix, hotwords)  # fmt: skip
        fixed: Prompt = getattr(self._local, "prompt", EMPTY_PROMPT)
        if not fixed.tokens or prefix or hotwords:
            return prompt
        return with_context(prompt, fixed.tokens, tokenizer.sot_prev, tokenizer.sot)

    def fused(self, graph: ContextGraph | None, tokenizer):
        """A context in which the searches fuse ``graph`` (no-op without one)."""
        fusion: Fusion | None = getattr(self._local, "fusion", None)
        if fusion is None or graph is None or not len(graph):
            return contextlib.nullcontext()
        from ctxasr.whisper.decoding import ContextFusion

        return self.model.fusion(ContextFusion(graph, fusion.weight, tokenizer.eot))

    def generate_with_fallback(self, encoder_output, prompt, tokenizer, options):
        domain: DomainScorer | None = getattr(self._local, "domain", None)
        with self.model.domain(domain, tokenizer.sot_sequence,
                               getattr(self._local, "lm_in_search", False)):  # fmt: skip
            return self._generate_with_fallback(encoder_output, prompt, tokenizer, options)

    def _generate_with_fallback(self, encoder_output, prompt, tokenizer, options):
        plan: SeekPlan | None = getattr(self._local, "plan", None)
        if plan is None:
            fusion: Fusion | None = getattr(self._local, "fusion", None)
            with self.fused(fusion.graph if fusion else None, tokenizer):
                return super().generate_with_fallback(encoder_output, prompt, tokenizer,
                                                      options)  # fmt: skip
        seek = _Seek(self, encoder_output, prompt, tokenizer, options)
        merged = TwoPassSeek(plan, seek).run()
        first = seek.raw_first
        if merged is None:
            return first
        return (Merged([merged], first[0].no_speech_prob), *first[1:])

    def forced_logprobs(self, encoder_output, tokenizer, texts) -> list[float]:
        """log P(text | audio) of each text-token sequence, prompt-free (nats)."""
        frames = 2 * int(encoder_output.shape[1])  # mel frames: the whole stretch
        return [math.fsum(token_logprobs(self.model, encoder_output, tokenizer.sot_sequence,
                                         text, frames)) for text in texts]  # fmt: skip


class _Seek:
    """``SeekDecoder`` over faster-whisper's own fallback decode of one seek."""

    def __init__(self, model: PromptedWhisperModel, encoder_output, prompt, tokenizer,
                 options) -> None:  # fmt: skip
        self.model, self.encoder_output = model, encoder_output
        self.prompt, self.tokenizer, self.options = prompt, tokenizer, options
        self.raw_first = None  # faster-whisper's own result of pass 1, returned as is

    def _decode(self, prompt) -> tuple:
        return WhisperModel.generate_with_fallback(self.model, self.encoder_output, prompt,
                                                   self.tokenizer, self.options)  # fmt: skip

    def first_pass(self, nbest: int) -> FirstPass:
        with self.model.model.hypotheses(nbest):
            self.raw_first = first = self._decode(self.prompt)
        result, avg_logprob = first[0], first[1]
        opts, eot = self.options, self.tokenizer.eot
        silent = (  # faster-whisper's own rule for dropping a stretch as silence
            opts.no_speech_threshold is not None
            and result.no_speech_prob > opts.no_speech_threshold
            and (opts.log_prob_threshold is None or avg_logprob <= opts.log_prob_threshold)
        )
        texts = [self.tokenizer.decode([t for t in seq if t < eot]).strip()
                 for seq in result.sequences_ids]  # fmt: skip
        return FirstPass([list(s) for s in result.sequences_ids], texts, silent)

    def frames(self) -> np.ndarray:
        return encoder_frames(self.encoder_output)

    def second_pass(self, context: Prompt, terms: Sequence[ContextTerm]) -> list[int]:
        tokenizer = self.tokenizer
        fusion: Fusion | None = getattr(self.model._local, "fusion", None)
        graph = fusion.graph_for(terms) if fusion is not None else None
        prompt = with_context(self.prompt, context.tokens, tokenizer.sot_prev, tokenizer.sot)
        with self.model.fused(graph, tokenizer):
            return list(self._decode(prompt)[0].sequences_ids[0])

    def score(self, texts: Sequence[Sequence[int]]) -> list[float]:
        return self.model.forced_logprobs(self.encoder_output, self.tokenizer, texts)


def encoder_frames(encoder_output) -> np.ndarray:
    """The first audio item's encoder frames (T, D) float32, from either backend."""
    if hasattr(encoder_output, "detach"):  # the torch backend's tensor
        return encoder_output[0].detach().float().numpy()
    return np.asarray(encoder_output)[0].astype(np.float32, copy=False)


@dataclass
class Merged:
    """The fields of a CTranslate2 generation result that faster-whisper reads."""

    sequences_ids: list[list[int]]
    no_speech_prob: float
    scores: list[float] = field(default_factory=list)


def token_logprobs(model, encoder_output, start: Sequence[int], text: Sequence[int],
                   frames: int) -> list[float]:  # fmt: skip
    """Each token's ln P(token | ``start``, the tokens before it, the audio), by a forced
    decode (``align``; CTranslate2 aligns one sequence per audio item) over ``frames``
    mel frames of ``encoder_output``; a probability of 0 counts as 1e-30."""
    if not text:
        return []
    found = model.align(encoder_output, start, [list(text)], frames)[0]
    return [math.log(max(p, 1e-30)) for p in found.text_token_probs]


def _zero_frame(encoder_output):
    """One zero encoder frame shaped like ``encoder_output``'s (A, T, D), as the model
    takes it (a torch tensor, or a CTranslate2 StorageView): the internal language
    model's input (see ``DomainScorer``)."""
    if hasattr(encoder_output, "new_zeros"):  # the torch backend's tensor
        return encoder_output.new_zeros((1, 1, encoder_output.shape[2]))
    import ctranslate2

    width = int(encoder_output.shape[2])
    return ctranslate2.StorageView.from_array(np.zeros((1, 1, width), dtype=np.float32))


class NBest:
    """A CTranslate2 Whisper that can be asked for n-best beam search hypotheses, and
    that fuses a document's language model.

    faster-whisper asks for one hypothesis and offers no way to ask for more; this
    wrapper adds ``num_hypotheses`` to beam searches inside ``hypotheses(n)``. The best
    hypothesis stays first, where faster-whisper looks.

    Inside ``domain(scorer, ...)`` a document's model joins every beam search: the
    search returns its ``beam_size`` best hypotheses and they are re-ranked (CTranslate2's
    search has no hook for more; on the torch backend, ``in_search`` fuses it at every
    step instead, ``DomainFusion``). The n-best are ranked by ``(log P + the scorer's
    addition) / length ** length_penalty``, the internal LM's log-probabilities coming
    from a forced decode of each hypothesis on a zero encoder output (``align``).
    """

    def __init__(self, model) -> None:  # model: ctranslate2.models.Whisper
        self._model = model
        self._local = threading.local()
        self._fusion = None  # the DomainFusion of the last in-search scorer (torch backend)

    @contextlib.contextmanager
    def domain(self, scorer: DomainScorer | None, sot_sequence: Sequence[int],
               in_search: bool = False) -> Iterator[None]:  # fmt: skip
        """Fuse ``scorer`` in the searches of this block (this thread): by re-ranking
        the n-best, or with ``in_search`` at every step (a search that ctxasr owns)."""
        previous = getattr(self._local, "domain", None)
        self._local.domain = (scorer, list(sot_sequence), in_search) if scorer else None
        try:
            yield
        finally:
            self._local.domain = previous

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    @contextlib.contextmanager
    def hypotheses(self, n: int) -> Iterator[None]:
        self._local.n = n
        try:
            yield
        finally:
            self._local.n = 1

    def generate(self, encoder_output, prompts, **kwargs):
        n = getattr(self._local, "n", 1)
        beam = kwargs.get("beam_size", 1)
        if n > 1 and beam > 1 and "num_hypotheses" not in kwargs:
            kwargs["num_hypotheses"] = min(n, beam)
        domain = getattr(self._local, "domain", None)
        if domain is None or beam <= 1:  # greedy and sampling fallbacks stay as they are
            return self._model.generate(encoder_output, prompts, **kwargs)
        scorer, sot_sequence, in_search = domain
        if in_search and getattr(self._model, "owns_search", False):
            return self._model.generate(encoder_output, prompts, domain=self._fusion_of(scorer),
                                        **kwargs)  # fmt: skip
        wanted = kwargs.get("num_hypotheses", 1)
        kwargs["num_hypotheses"] = max(wanted, beam)
        kwargs["return_scores"] = True
        found = self._model.generate(encoder_output, prompts, **kwargs)
        penalty = kwargs.get("length_penalty", 1.0)
        return [self._rescored(r, scorer, sot_sequence, encoder_output, penalty, wanted)
                for r in found]  # fmt: skip

    def _fusion_of(self, scorer: DomainScorer):
        found = self._fusion
        if found is None or found.scorer is not scorer:  # one document at a time
            from ctxasr.whisper.decoding import DomainFusion

            found = self._fusion = DomainFusion(scorer)
        return found

    def _rescored(self, result, scorer: DomainScorer, sot_sequence: list[int],
                  encoder_output, penalty: float, keep: int) -> Merged:  # fmt: skip
        first_special = scorer.lm.first_special
        silent = _zero_frame(encoder_output)
        ranked = []
        for seq, score in zip(result.sequences_ids, result.scores, strict=True):
            text = [t for t in seq if t < first_special]
            ilm = iter(token_logprobs(self._model, silent, sot_sequence, text, 2))
            per_token = [next(ilm) if t < first_special else 0.0 for t in seq]
            length = max(1, len(seq)) ** penalty
            total = (score * length + scorer.score(seq, per_token)) / length
            ranked.append((total, list(seq), score))
        ranked.sort(key=lambda r: -r[0])
        return Merged([r[1] for r in ranked[:keep]], result.no_speech_prob,
                      [r[2] for r in ranked[:keep]])  # fmt: skip
