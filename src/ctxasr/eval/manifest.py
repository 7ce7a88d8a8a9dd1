"""Evaluation manifests: NeMo-style JSONL, or a biasing TSV with a folder of audio."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ctxasr.context.terms import ContextTerm
from ctxasr.errors import CtxasrError
from ctxasr.eval.tsv import read_biasing_lists, read_refs
from ctxasr.manifest import KNOWN_FIELDS, ManifestRow, context_terms, read_manifest_rows

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".webm", ".mp4")
_WORD = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True)
class EvalItem:
    """One utterance to transcribe and score."""

    id: str
    audio: Path
    text: str  # the reference transcript
    context: tuple[str, ...] = ()  # terms offered to the recognizer
    rare_words: frozenset[str] | None = None  # scored as B-WER; None: from the 5k list
    duration: float | None = None  # seconds, when the manifest says
    extra: tuple[tuple[str, object], ...] = ()  # the manifest row's other fields, kept
    weights: tuple[float, ...] = ()  # one per context term; () when all are 1.0
    context_text: str | None = None  # a document given as context (its terms are in context)

    def __post_init__(self) -> None:
        if self.weights and len(self.weights) != len(self.context):
            raise ValueError(
                f"{self.id}: {len(self.weights)} weights for {len(self.context)} terms"
            )

    @property
    def terms(self) -> tuple[ContextTerm, ...]:
        """The context with its weights, as a transcriber takes it."""
        weights = self.weights or (1.0,) * len(self.context)
        return tuple(ContextTerm(t, w) for t, w in zip(self.context, weights, strict=True))


@functools.lru_cache(maxsize=1)
def common_words() -> frozenset[str]:
    """The LibriSpeech 5,000 most common words (the benchmark's non-rare words)."""
    text = resources.files("ctxasr.eval").joinpath("data/common_words_5k.txt").read_text()
    return frozenset(w.strip().lower() for w in text.splitlines() if w.strip())


def rare_words_of(text: str) -> frozenset[str]:
    """Words of ``text`` outside the 5k common list, lower-cased: the benchmark's rule."""
    common = common_words()
    return frozenset(w for w in _WORD.findall(text.lower()) if w.strip("'") not in common)


def read_manifest(path: str | os.PathLike[str]) -> list[EvalItem]:
    """Read a NeMo-style JSONL manifest: ``audio_filepath`` (or ``audio``), ``text``,
    optional ``duration``, ``context`` and/or ``context_file``, ``context_text`` and/or
    ``context_text_file`` (a document), ``rare_words``, ``id``.

    An item's context is the row's own terms, then those extracted from its document
    (:func:`ctxasr.manifest.context_terms`); the document itself is ``context_text``.

    The rules (line numbers, paths, context, weights) are :mod:`ctxasr.manifest`'s, the
    same as a batch job's; evaluation is stricter only in stopping at the first
    malformed row and in needing every row's ``text``.

    Raises:
        CtxasrError: naming ``file:line`` for a malformed row; the file for a manifest
            that is missing, unreadable, empty or gives one id twice.
    """
    items = [_item(row) for row in read_manifest_rows(path)]
    if not items:
        raise CtxasrError(str(path), "has no utterance")
    _check_unique(items, str(path))
    return items


def _item(row: ManifestRow) -> EvalItem:
    if row.error is not None:
        raise CtxasrError(row.where, row.error)
    if row.text is None:
        raise CtxasrError(row.where, "needs a string field 'text'")
    assert row.audio is not None  # a row without an error has its audio
    terms = context_terms(row)
    weights = tuple(t.weight for t in terms)
    return EvalItem(
        id=row.id or row.audio.stem,
        audio=row.audio,
        text=row.text,
        context=tuple(t.text for t in terms),
        rare_words=None if row.rare_words is None else frozenset(w.lower() for w in row.rare_words),
        duration=row.duration,
        extra=tuple((k, v) for k, v in row.fields if k not in KNOWN_FIELDS),
        weights=weights if any(w != 1.0 for w in weights) else (),
        context_text=row.context_text,
    )


def read_biasing_tsv(
    path: str | os.PathLike[str], audio_dir: str | os.PathLike[str]
) -> list[EvalItem]:
    """Items from a biasing reference TSV (id, text, rare words[, biasing list]) whose
    audio is ``<audio_dir>/**/<id>.<ext>`` (flat, or LibriSpeech's speaker/chapter tree).
    The biasing list (column 4), when present, is the context.
    """
    refs = read_refs(path)
    lists = read_biasing_lists(path)
    index = audio_index(audio_dir)
    items = []
    for uid, ref in refs.items():
        audio = index.get(uid)
        if audio is None:
            raise CtxasrError(str(audio_dir), f"has no audio for utterance {uid!r} ({path})")
        items.append(EvalItem(uid, audio, ref.text, lists.get(uid, ()), ref.rare_words))
    return items


def audio_index(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Audio files under ``folder`` (flat, or LibriSpeech's speaker/chapter tree) by
    name without suffix, the utterance id; of two with one name, the first in path order.

    Raises:
        CtxasrError: ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not os.path.isdir(folder):  # Path.is_dir raises for a name too long (3.11)
        raise CtxasrError(str(folder), "is not a folder")
    found: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() in AUDIO_SUFFIXES:
            found.setdefault(p.stem, p)
    return found


def _check_unique(items: Iterable[EvalItem], source: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise CtxasrError(source, f"utterance id {item.id!r} appears twice")
        seen.add(item.id)
