"""The PyTorch Whisper behind CTranslate2's Whisper interface.

faster-whisper drives a ``ctranslate2.models.Whisper`` through five calls (``encode``,
``generate``, ``align``, ``detect_language``, ``is_multilingual``). ``TorchWhisper``
answers them with ctxasr's own model and beam search, so the whole pipeline above it
(VAD windows, seeks, temperature fallback, two-pass pruning, word timings) is shared by
both backends, and the search can take a shallow-fusion scorer that CTranslate2 has no
place for.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ctxasr.whisper.decoding import (
    BeamSearch,
    DomainFusion,
    LogitFilter,
    NoRepeatNgram,
    RepetitionPenalty,
    SearchOptions,
    SuppressAtBegin,
    SuppressTokens,
    TimestampRules,
    TokenScorer,
    WhisperTokens,
)
from ctxasr.whisper.weights import LoadedWhisper


@dataclass
class GenerationResult:
    """The fields of ``ctranslate2.models.WhisperGenerationResult`` that callers read."""

    sequences_ids: list[list[int]]
    scores: list[float]  # the model's log-probability / length ** length_penalty
    no_speech_prob: float
    fusion: list[float]  # each hypothesis's summed shallow-fusion bonus (not in scores)


@dataclass
class AlignmentResult:
    """The fields of ``ctranslate2.models.WhisperAlignmentResult``."""

    alignments: list[tuple[int, int]]  # (text token index, audio frame index) along the path
    text_token_probs: list[float]


class TorchWhisper:
    """A CTranslate2-compatible Whisper on PyTorch, with optional shallow fusion.

    ``fusion(scorer)`` sets the scorer of the calling thread's next searches.
    """

    device = "cpu"
    device_index = (0,)
    owns_search = True  # generate() takes ``domain``: the n-gram can be fused in the search

    def __init__(self, loaded: LoadedWhisper, tokens: WhisperTokens) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokens = tokens
        self._local = threading.local()

    @property
    def is_multilingual(self) -> bool:
        return self.model.is_multilingual

    @property
    def n_mels(self) -> int:
        return self.model.dims.n_mels

    @contextlib.contextmanager
    def fusion(self, scorer: TokenScorer | None) -> Iterator[None]:
        previous = getattr(self._local, "scorer", None)
        self._local.scorer = scorer
        try:
            yield
        finally:
            self._local.scorer = previous

    @torch.inference_mode()
    def encode(self, features, to_cpu: bool = False) -> Tensor:
        """(A, n_mels, 3000) log-Mel features (array or StorageView) -> (A, 1500, D)."""
        mel = torch.from_numpy(np.ascontiguousarray(np.asarray(features), dtype=np.float32))
        if mel.ndim == 2:
            mel = mel[None]
        dtype = next(self.model.parameters()).dtype
        return self.model.encoder(mel.to(dtype))

    def _features(self, encoder_output) -> Tensor:
        if isinstance(encoder_output, Tensor):
            return encoder_output
        raise TypeError("TorchWhisper takes the encoder output of its own encode()")

    def generate(
        self,
        encoder_output: Tensor,
        prompts: Sequence[Sequence[int]],
        *,
        beam_size: int,  # always given by faster-whisper; TranscribeOptions holds the default
        patience: float = 1.0,
        num_hypotheses: int = 1,
        length_penalty: float = 1.0,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
        max_length: int = 448,
        return_scores: bool = False,
        return_no_speech_prob: bool = False,
        suppress_blank: bool = True,
        suppress_tokens: Sequence[int] | None = (-1,),
        max_initial_timestamp_index: int = 50,
        sampling_topk: int = 1,
        sampling_temperature: float = 1.0,
        seed: int | None = None,
        domain: DomainFusion | None = None,
    ) -> list[GenerationResult]:
        """CTranslate2's ``Whisper.generate`` for one prompt per audio item; ``domain``
        (not CTranslate2's) fuses a document's language model in the beam search.

        Sampling (``beam_size`` 1 with ``sampling_topk`` != 1) draws from the whole
        distribution at ``sampling_temperature``; top-k truncation is not implemented.
        """
        features = self._features(encoder_output)
        if len(prompts) != features.shape[0]:
            raise ValueError(f"{len(prompts)} prompts for {features.shape[0]} audio items")
        # One search per distinct prompt keeps beams aligned (faster-whisper sends one item).
        if all(list(p) == list(prompts[0]) for p in prompts):
            batches = [(features, list(prompts[0]))]
        else:
            batches = [(features[i : i + 1], list(p)) for i, p in enumerate(prompts)]
        sampling = beam_size == 1 and sampling_topk != 1 and sampling_temperature > 0
        scorer = getattr(self._local, "scorer", None)
        results = []
        for batch, prompt in batches:
            options = SearchOptions(
                beam_size=beam_size,
                patience=patience,
                num_hypotheses=num_hypotheses,
                length_penalty=length_penalty,
                # As CTranslate2: at most half the context, and what the prompt leaves.
                max_new_tokens=max(1, min(max_length // 2, max_length - len(prompt) + 1)),
                temperature=sampling_temperature if sampling else 0.0,
                seed=seed,
            )
            filters = self._filters(prompt, repetition_penalty, no_repeat_ngram_size,
                                    suppress_blank, suppress_tokens,
                                    max_initial_timestamp_index)  # fmt: skip
            for found in BeamSearch(self.model, self.tokens, options, filters, scorer,
                                    domain).run(batch, prompt):  # fmt: skip
                hyps = found.hypotheses
                results.append(GenerationResult(
                    sequences_ids=[list(h.tokens) for h in hyps],
                    # CTranslate2 reports the model's score alone; fusion is kept apart
                    # so faster-whisper's log-probability fallback keeps its meaning.
                    scores=[h.logprob / max(1, len(h.tokens)) ** length_penalty
                            for h in hyps],
                    no_speech_prob=found.no_speech_prob,
                    fusion=[h.fusion for h in hyps],
                ))  # fmt: skip
        return results

    def _filters(self, prompt: list[int], repetition_penalty: float, no_repeat_ngram_size: int,
                 suppress_blank: bool, suppress_tokens: Sequence[int] | None,
                 max_initial_timestamp_index: int) -> list[LogitFilter]:  # fmt: skip
        # CTranslate2's order: penalties, suppressed tokens, blank at the start, timestamps.
        filters: list[LogitFilter] = []
        if repetition_penalty != 1:
            filters.append(RepetitionPenalty(repetition_penalty))
        if no_repeat_ngram_size > 0:
            filters.append(NoRepeatNgram(no_repeat_ngram_size))
        suppressed: set[int] = set()
        for token in suppress_tokens or ():
            if token == -1:
                suppressed.update(self.loaded.suppress_ids)
            elif token >= 0:
                suppressed.add(token)
        if suppressed:
            filters.append(SuppressTokens(suppressed))
        if suppress_blank:
            begin = self.loaded.suppress_ids_begin or (self.tokens.eot,)
            filters.append(SuppressAtBegin(begin))
        if prompt[-1] != self.tokens.no_timestamps:
            filters.append(TimestampRules(self.tokens, max_initial_timestamp_index))
        return filters

    @torch.inference_mode()
    def align(
        self,
        encoder_output: Tensor,
        start_sequence: Sequence[int],
        text_tokens: Sequence[Sequence[int]],
        num_frames: int,
        median_filter_width: int = 7,
    ) -> list[AlignmentResult]:
        """Align each token sequence to the audio with the alignment heads' attention.

        The attention of the heads listed in the model's ``alignment_heads`` (cut to the
        ``num_frames`` of real audio, softmaxed, standardised per frame, median-filtered
        over time and averaged) is a token-by-frame similarity; dynamic time warping
        finds the monotonic path through it.
        """
        heads = self.loaded.alignment_heads
        if not heads:
            raise ValueError(
                f"{self.loaded.path} lists no alignment heads: word timestamps need them"
            )
        features = self._features(encoder_output)
        results = []
        for text in text_tokens:
            tokens = [*start_sequence, self.tokens.no_timestamps, *text, self.tokens.eot]
            ids = torch.tensor([tokens])
            cache = self.model.decoder.new_cache(features[:1])
            scores: list[Tensor] = []
            logits = self.model.decoder(ids, cache, cross_scores=scores)[0]  # (T, V)
            probs = torch.softmax(logits[:, : self.tokens.eot], dim=-1)
            offset = len(start_sequence)
            text_probs = [probs[offset + i, tok].item() for i, tok in enumerate(text)]
            frames = num_frames // 2
            weights = torch.stack([scores[layer][0, head, :, :frames] for layer, head in heads])
            weights = torch.softmax(weights, dim=-1)  # (heads, T, frames)
            std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
            weights = _median_filter((weights - mean) / std, median_filter_width)
            matrix = weights.mean(dim=0)[offset:-1]  # (no_timestamps + text, frames)
            results.append(AlignmentResult(_dtw(-matrix.double().numpy()), text_probs))
        return results

    @torch.inference_mode()
    def detect_language(self, encoder_output: Tensor) -> list[list[tuple[str, float]]]:
        """Each audio item's language tokens (``"<|en|>"``) and probabilities, likeliest first."""
        if not self.is_multilingual or not self.tokens.languages:
            raise ValueError(f"{self.loaded.path} is an English-only model: "
                             "it cannot detect the language")  # fmt: skip
        features = self._features(encoder_output)
        n_audio = features.shape[0]
        cache = self.model.decoder.new_cache(features)
        logits = self.model.decoder(torch.full((n_audio, 1), self.tokens.sot), cache)[:, -1]
        ids = [i for i, _ in self.tokens.languages]
        probs = torch.softmax(logits[:, ids], dim=-1).tolist()
        names = [name for _, name in self.tokens.languages]
        return [sorted(zip(names, p, strict=True), key=lambda x: -x[1]) for p in probs]


def tokens_of(tokenizer, loaded: LoadedWhisper) -> WhisperTokens:
    """The special token ids of a ``tokenizers.Tokenizer`` (the model's tokenizer.json)."""

    def find(*names: str) -> int:
        for name in names:
            token = tokenizer.token_to_id(name)
            if token is not None:
                return token
        raise ValueError(f"the tokenizer of {loaded.path} has no {names[0]} token")

    no_timestamps = find("<|notimestamps|>")
    languages = ()
    if loaded.model.is_multilingual:
        sot = find("<|startoftranscript|>")
        translate = find("<|translate|>")
        languages = tuple((i, tokenizer.id_to_token(i)) for i in range(sot + 1, translate))
    return WhisperTokens(
        eot=find("<|endoftext|>"),
        sot=find("<|startoftranscript|>"),
        no_timestamps=no_timestamps,
        timestamp_begin=no_timestamps + 1,
        no_speech=find("<|nospeech|>", "<|nocaptions|>"),
        n_vocab=loaded.model.dims.n_vocab,
        languages=languages,
    )


def _median_filter(x: Tensor, width: int) -> Tensor:
    """Median over a sliding window of ``width`` (odd) along the last axis, edges reflected."""
    if width <= 1 or x.shape[-1] <= width // 2:
        return x
    pad = width // 2
    rows = x.reshape(-1, x.shape[-1])  # reflect-padding wants 2D or 3D input
    padded = F.pad(rows, (pad, pad), mode="reflect")
    return padded.unfold(-1, width, 1).median(dim=-1).values.reshape(x.shape)


def _dtw(cost: np.ndarray) -> list[tuple[int, int]]:
    """The cheapest monotonic path through a (rows, cols) cost matrix, as (row, col) pairs.

    Written out because the model's alignment needs only this 20-line recurrence; the
    first row and column are free to start anywhere as in Whisper's aligner.
    """
    rows, cols = cost.shape
    total = np.full((rows + 1, cols + 1), np.inf)
    total[0, 0] = 0.0
    move = np.zeros((rows + 1, cols + 1), dtype=np.int8)  # 0 diagonal, 1 up, 2 left
    for i in range(1, rows + 1):
        above = total[i - 1]
        row = total[i]
        c = cost[i - 1]
        for j in range(1, cols + 1):
            d, u, lft = above[j - 1], above[j], row[j - 1]
            if d <= u and d <= lft:
                best, m = d, 0
            elif u <= lft:
                best, m = u, 1
            else:
                best, m = lft, 2
            row[j] = c[j - 1] + best
            move[i, j] = m
    path = []
    i, j = rows, cols
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        m = move[i, j]
        if m == 0:
            i, j = i - 1, j - 1
        elif m == 1:
            i -= 1
        else:
            j -= 1
    return path[::-1]
