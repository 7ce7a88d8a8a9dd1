"""A trained speech LLM as a recognizer of short clips with context terms.

``ctxasr.transcribe`` uses it as the second pass of ``backend="speechllm"``: Whisper's
first pass cuts a recording into sentence-sized clips and the retriever picks each
clip's terms; this module transcribes the clips with those terms in the LLM's prompt,
optionally fusing the context graph into the search.

The packaged checkpoint (``weights/``, trained by ``configs/speechllm/cpu.toml``) is the
default; it needs the offline LLM and encoders it was trained with (the README's
"Speech LLM" install line).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctxasr.audio import SAMPLE_RATE
from ctxasr.errors import ModelError
from ctxasr.recent import Recent

PACKAGED = Path(__file__).parent / "weights" / "smollm2-mose"
MAX_CLIP_SECONDS = 30.0  # what one prompt holds (about 375 speech embeddings)
# LLM tokens of context terms (before pooling) that retriever "all" may put in a prompt:
# about 300 terms, a few times what Whisper's 223-token prompt holds.
CONTEXT_BUDGET = 1024
TOKENS_PER_SECOND = 8  # most LLM tokens a clip's transcript may take per second of audio


def packaged_checkpoint() -> Path:
    """The checkpoint shipped with ctxasr."""
    if not (PACKAGED / "config.json").is_file():
        raise ModelError(str(PACKAGED), "the packaged speech LLM checkpoint is missing from "
                         "this installation; pass a checkpoint folder")  # fmt: skip
    return PACKAGED


@dataclass(frozen=True)
class Clip:
    """16 kHz mono samples ``(n,)`` float32 and the context terms to prompt with."""

    samples: np.ndarray
    terms: tuple[str, ...] = ()


class SpeechLLMRecognizer:
    """Loads a checkpoint once; :meth:`transcribe` decodes clips in batches."""

    def __init__(self, checkpoint: str | Path | None = None, threads: int = 0,
                 batch: int = 4) -> None:  # fmt: skip
        import torch

        from ctxasr.speechllm import checkpoint as ckpt

        if threads:
            torch.set_num_threads(threads)
        self.path = Path(checkpoint) if checkpoint is not None else packaged_checkpoint()
        if not self.path.is_dir():
            raise ModelError(str(self.path), "not a folder: a speech LLM checkpoint is a folder")
        self.model = ckpt.load(self.path)
        self.lowercase = ckpt.read_meta(self.path).get("lowercase", True)
        self.batch = batch
        self.name = f"speechllm:{self.path.name}"
        self._graphs: Recent[tuple[str, ...], object] = Recent(16)  # context graphs

    @property
    def has_ctc(self) -> bool:
        """Whether the checkpoint has a CTC head, for joint CTC/attention decoding."""
        return self.model.ctc is not None

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` in the LLM's vocabulary."""
        return self.model.tokenizer(text, add_special_tokens=False).input_ids

    def terms(self, terms: Sequence[str]) -> list[str]:
        """The terms as the model was trained to read them."""
        from ctxasr.speechllm.fusion import normalize_terms

        return normalize_terms(terms, self.lowercase)

    def transcribe(self, clips: Sequence[Clip], beam_size: int = 1, fusion_weight: float = 0.0,
                   fusion_terms: Sequence[Sequence[str]] | None = None,
                   max_new_tokens: int = 160, ctc_weight: float = 0.0) -> list[str]:  # fmt: skip
        """One transcript per clip. Greedy clips share a batch; beam search runs each
        clip alone. ``fusion_terms`` (one list per clip; default: the clip's own terms)
        are fused into the search with ``fusion_weight`` per token. ``ctc_weight``: the
        CTC prefix score's share in joint decoding, for checkpoints with a CTC head
        (:attr:`has_ctc`); others ignore it."""
        from ctxasr.speechllm.model import batch_frames

        for c in clips:
            if len(c.samples) > MAX_CLIP_SECONDS * SAMPLE_RATE + 1:
                raise ValueError(f"a clip holds at most {MAX_CLIP_SECONDS:.0f} s of audio")
        out: list[str] = []
        joint = ctc_weight > 0 and self.has_ctc
        step = self.batch if beam_size == 1 and not fusion_weight and not joint else 1
        for start in range(0, len(clips), step):
            part = clips[start : start + step]
            frames = self.model.encode_speech([c.samples for c in part])
            x, mask = batch_frames(frames)
            contexts = [self.terms(c.terms) for c in part]
            # Speech runs at 2-4 LLM tokens a second; a weak model's loop stops here.
            seconds = max(len(c.samples) for c in part) / SAMPLE_RATE
            limit = min(max_new_tokens, int(TOKENS_PER_SECOND * seconds) + 16)
            hook = None
            if fusion_weight > 0:
                fused = fusion_terms[start] if fusion_terms is not None else part[0].terms
                hook = self._hook(self.terms(fused), fusion_weight)
            out += self.model.generate(x, mask, contexts, limit, beam_size, hook, ctc_weight)
        return out

    def _hook(self, terms: list[str], weight: float):
        from ctxasr.speechllm.fusion import graph_hook

        return graph_hook(terms, self.encode, weight, self._graphs)
