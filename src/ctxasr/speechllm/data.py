"""The speech LLM's training data: utterances, their contexts, cached encoder frames and
duration buckets.

* Utterances come from NeMo-style JSONL manifests (``ctxasr.manifest``): ``audio_filepath``,
  ``text``, optional ``context`` and ``rare_words``. An utterance's rare words are its
  ``rare_words`` when given, else the LibriSpeech rule (outside the 5k common words).
* A training context, as SAP²-ASR trains: the rare words plus random distractors from a
  word pool, shuffled, or, with probability ``no_context``, none at all.
* The encoders are frozen, so their frames are computed once per audio file and encoder
  and kept under the run's folder; later epochs (and resumed runs) only read them.
* Batches group utterances of similar length (fewer padded frames): each epoch shuffles
  the utterances, cuts them into buckets of ``bucket`` batches, sorts each bucket by
  length, cuts it into batches and shuffles the batches, all from the seed and the epoch.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctxasr.audio import load_audio
from ctxasr.errors import CtxasrError
from ctxasr.eval.manifest import rare_words_of
from ctxasr.manifest import read_manifest_rows
from ctxasr.speechllm.interfaces import SpeechEncoder
from ctxasr.speechllm.mose import align_frames


@dataclass(frozen=True)
class Utterance:
    audio: Path
    text: str  # the target transcript
    rare: tuple[str, ...]  # its rare words (the biased words of B-WER)
    context: tuple[str, ...]  # the manifest's own context, when given (dev sets)


def read_utterances(path: str | Path, lowercase: bool = True) -> list[Utterance]:
    """Every row of a manifest; a malformed row or one without text is a ``CtxasrError``."""
    out = []
    for row in read_manifest_rows(path):
        if row.error is not None:
            raise CtxasrError(row.where, row.error)
        if not row.text or not row.text.strip():
            raise CtxasrError(row.where, "needs a non-blank 'text' to train on")
        assert row.audio is not None
        text = " ".join(row.text.lower().split() if lowercase else row.text.split())
        rare = row.rare_words if row.rare_words is not None else sorted(rare_words_of(text))
        context = tuple(t.text for t in row.terms)
        if lowercase:
            rare, context = [w.lower() for w in rare], tuple(t.lower() for t in context)
        out.append(Utterance(row.audio, text, tuple(dict.fromkeys(rare)), context))
    if not out:
        raise CtxasrError(str(path), "has no utterance")
    return out


def word_pool(path: str, utterances: Sequence[Utterance], lowercase: bool = True) -> list[str]:
    """Distractor words: a file's (one a line, ``#`` comments) or the utterances' rare words."""
    if not path:
        return sorted({w for u in utterances for w in u.rare})
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CtxasrError(path, f"cannot read the word pool: {err}") from None
    words = [w.strip() for w in lines if w.strip() and not w.lstrip().startswith("#")]
    return list(dict.fromkeys(w.lower() if lowercase else w for w in words))


def training_context(rng: np.random.Generator, utt: Utterance, pool: Sequence[str],
                     distractors: int, no_context: float) -> list[str]:  # fmt: skip
    """The rare words and ``distractors`` pool words not said, shuffled; sometimes none."""
    if rng.random() < no_context:
        return []
    said = set(utt.rare)
    others = [w for w in _draw(rng, pool, distractors + len(said)) if w not in said]
    words = [*utt.rare, *others[:distractors]]
    rng.shuffle(words)
    return words


def _draw(rng: np.random.Generator, items: Sequence[str], k: int) -> list[str]:
    if not items or k <= 0:
        return []
    return [items[i] for i in rng.choice(len(items), size=min(k, len(items)), replace=False)]


class FrameCache:
    """Frozen encoders' frames on disk: ``folder/<encoder>/<sha1 of the audio path>.npy``,
    one file per audio file and encoder; ``frames`` aligns them for MoSE."""

    def __init__(self, folder: Path, encoders: Sequence[SpeechEncoder]) -> None:
        self.folder, self.encoders = folder, list(encoders)

    def path(self, audio: Path, encoder: SpeechEncoder) -> Path:
        key = hashlib.sha1(str(audio).encode()).hexdigest()
        return self.folder / re.sub(r"[^A-Za-z0-9._-]+", "_", encoder.name) / f"{key}.npy"

    def frames(self, audio: Path) -> np.ndarray:
        """``(T, sum D_i)`` float32, computed (and stored) on first use."""
        per_encoder, samples = [], None
        for enc in self.encoders:
            path = self.path(audio, enc)
            if path.is_file():
                per_encoder.append(np.load(path))
                continue
            samples = load_audio(audio) if samples is None else samples
            frames = np.asarray(enc(samples), dtype=np.float32)  # (T_i, D_i)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, frames)
            tmp.replace(path)  # never a half-written cache file
            per_encoder.append(frames)
        return align_frames(per_encoder, [e.frame_rate for e in self.encoders])


def epoch_batches(lengths: Sequence[int], batch: int, bucket: int, seed: int,
                  epoch: int) -> list[list[int]]:  # fmt: skip
    """One epoch's batches of utterance indices, bucketed by length (see the module doc)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(order), batch * bucket):
        chunk = sorted(order[start : start + batch * bucket], key=lambda i: lengths[i])
        batches += [[int(i) for i in chunk[j : j + batch]] for j in range(0, len(chunk), batch)]
    return [batches[i] for i in rng.permutation(len(batches))]


class Schedule:
    """The batch of every micro-step, from the seed alone, so a resumed run sees the same."""

    def __init__(self, lengths: Sequence[int], batch: int, bucket: int, seed: int) -> None:
        self.lengths, self.batch, self.bucket, self.seed = list(lengths), batch, bucket, seed
        self._epoch, self._batches = -1, []

    def __call__(self, micro_step: int) -> list[int]:
        per_epoch = -(-len(self.lengths) // self.batch)
        epoch, i = divmod(micro_step, per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._batches = epoch_batches(self.lengths, self.batch, self.bucket, self.seed, epoch)
        return self._batches[i]
