"""A trained MADEON model as a recognizer of short clips, for ``backend="madeon"``.

``ctxasr.transcribe`` uses it as it uses the speech LLM: Whisper's first pass cuts a
recording into sentence-sized clips and picks their terms; this module transcribes each
clip. MADEON has no prompt, so the terms reach it only through the context graph's
shallow fusion (``fusion_weight``), built with the tokenizer's text pieces.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ctxasr.audio import SAMPLE_RATE
from ctxasr.errors import ModelError
from ctxasr.recent import Recent
from ctxasr.speechllm.recognizer import MAX_CLIP_SECONDS, TOKENS_PER_SECOND, Clip

__all__ = ["Clip", "MadeonRecognizer"]


class MadeonRecognizer:
    """Loads a checkpoint folder once (``ctxasr train madeon``'s output)."""

    has_ctc = False  # the pipeline's --ctc-weight is the speech LLM's

    def __init__(self, checkpoint: str | Path | None, threads: int = 0) -> None:
        import torch

        from ctxasr.madeon import checkpoint as ckpt

        if checkpoint is None:
            raise ModelError("--checkpoint", "backend madeon needs a checkpoint folder "
                             "(`ctxasr train madeon` writes one); none is packaged")  # fmt: skip
        if threads:
            torch.set_num_threads(threads)
        self.path = Path(checkpoint)
        if not self.path.is_dir():
            raise ModelError(str(self.path), "not a folder: a MADEON checkpoint is a folder")
        self.model, self.tokenizer, meta = ckpt.load(self.path)
        self.lowercase = bool(meta.get("lowercase", True))
        self.name = f"madeon:{self.path.name}"
        self._graphs: Recent[tuple[str, ...], object] = Recent(16)

    def encode(self, text: str) -> list[int]:
        """Text piece ids of ``text``."""
        return self.tokenizer.text_ids(text)

    def terms(self, terms: Sequence[str]) -> list[str]:
        from ctxasr.speechllm.fusion import normalize_terms

        return normalize_terms(terms, self.lowercase)

    def transcribe(self, clips: Sequence[Clip], beam_size: int = 1, fusion_weight: float = 0.0,
                   fusion_terms: Sequence[Sequence[str]] | None = None,
                   max_new_tokens: int = 200, ctc_weight: float = 0.0) -> list[str]:  # fmt: skip
        """One transcript per clip, each decoded alone (``ctc_weight`` is ignored)."""
        from ctxasr.madeon.decode import transcribe

        out = []
        for i, clip in enumerate(clips):
            if len(clip.samples) > MAX_CLIP_SECONDS * SAMPLE_RATE + 1:
                raise ValueError(f"a clip holds at most {MAX_CLIP_SECONDS:.0f} s of audio")
            seconds = len(clip.samples) / SAMPLE_RATE
            limit = min(max_new_tokens, int(TOKENS_PER_SECOND * seconds) + 16)
            hook = None
            if fusion_weight > 0:
                terms = fusion_terms[i] if fusion_terms is not None else clip.terms
                hook = self._hook(self.terms(terms), fusion_weight)
            speech = self.tokenizer.speech_ids_of_audio(clip.samples)
            text = transcribe(self.model, self.tokenizer, speech, limit, beam_size, hook)
            out.append(text)
        return out

    def _hook(self, terms: list[str], weight: float):
        from ctxasr.speechllm.fusion import graph_hook

        return graph_hook(terms, self.encode, weight, self._graphs)
