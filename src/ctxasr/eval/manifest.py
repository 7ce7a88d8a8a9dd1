"""Evaluation manifests: NeMo-style JSONL, or a biasing TSV with a folder of audio."""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ctxasr.context.terms import read_term_file
from ctxasr.errors import CtxasrError
from ctxasr.eval.score import read_biasing_lists, read_refs

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
    """Read NeMo-style JSONL: ``audio_filepath``, ``text``, optional ``duration``,
    ``context`` (list of terms) or ``context_file``, ``rare_words``, ``id``.

    Relative paths are relative to the manifest's folder.

    Raises:
        CtxasrError: naming ``file:line`` for a malformed row.
    """
    path = Path(path)
    if not path.is_file():
        raise CtxasrError(str(path), "no such file")
    items: list[EvalItem] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            where = f"{path}:{lineno}"
            items.append(_item(_row(line, where), path.parent, where))
    if not items:
        raise CtxasrError(str(path), "has no utterance")
    _check_unique(items, str(path))
    return items


def _row(line: str, where: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise CtxasrError(where, f"is not JSON ({err.msg})") from None
    if not isinstance(row, dict):
        raise CtxasrError(where, "is not a JSON object")
    if "audio_filepath" not in row and isinstance(row.get("audio"), str):
        row = {**row, "audio_filepath": row["audio"]}  # the shorter name some tools write
    for key in ("audio_filepath", "text"):
        if not isinstance(row.get(key), str):
            raise CtxasrError(where, f"needs a string field {key!r}")
    return row


def _strings(value: object, where: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CtxasrError(where, f"field {key!r} must be a list of strings")
    return tuple(value)


def _item(row: dict, base: Path, where: str) -> EvalItem:
    audio = Path(row["audio_filepath"])
    audio = audio if audio.is_absolute() else base / audio
    context: tuple[str, ...] = ()
    if "context" in row:
        context = _strings(row["context"], where, "context")
    elif "context_file" in row:
        context_file = Path(row["context_file"])
        context_file = context_file if context_file.is_absolute() else base / context_file
        context = tuple(t.text for t in read_term_file(context_file))
    rare = None
    if "rare_words" in row:
        rare = frozenset(w.lower() for w in _strings(row["rare_words"], where, "rare_words"))
    known = {"audio_filepath", "audio", "text", "duration", "context", "context_file", "rare_words", "id"}
    return EvalItem(
        id=str(row.get("id") or audio.stem),
        audio=audio,
        text=row["text"],
        context=context,
        rare_words=rare,
        duration=float(row["duration"]) if isinstance(row.get("duration"), (int, float)) else None,
        extra=tuple((k, v) for k, v in row.items() if k not in known),
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
    index = _audio_index(Path(audio_dir))
    items = []
    for uid, ref in refs.items():
        audio = index.get(uid)
        if audio is None:
            raise CtxasrError(str(audio_dir), f"has no audio for utterance {uid!r} ({path})")
        items.append(EvalItem(uid, audio, ref.text, lists.get(uid, ()), ref.rare_words))
    return items


def _audio_index(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
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
