"""The document benchmark: each utterance's context is the rest of its chapter.

Users give a whole document (slides, a paper, a book chapter) as context. To measure
that on LibriSpeech, an utterance of test-clean or test-other gets as its document the
reference texts of every *other* utterance of its chapter, in index order, one
utterance a line -- never its own text. A LibriSpeech utterance id is
``speaker-chapter-index`` (``1089-134686-0000``); the chapter is ``speaker-chapter``.

:func:`write_document_set` writes ``OUT/documents/<id>.txt`` (the document) and
``OUT/manifest.jsonl``, one NeMo row an utterance::

    {"audio_filepath": "../audio/1089-134686-0000.wav", "text": "...", "duration": 4.2,
     "id": "1089-134686-0000", "rare_words": [...],
     "context_text_file": "documents/1089-134686-0000.txt"}

``audio_filepath`` is relative to OUT (so the two folders can move together),
``duration`` is there when the audio source gives it, ``rare_words`` is the reference
file's column 3 (sorted). A document holds the whole chapter's other utterances, with
or without audio; an utterance is written only when it has audio and its chapter has
another utterance. Rows follow the reference files' order, so the same inputs write the
same files.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ctxasr.errors import CtxasrError
from ctxasr.eval.manifest import audio_index
from ctxasr.eval.tsv import Reference, read_refs
from ctxasr.files import atomic_write
from ctxasr.manifest import read_manifest_rows

DOCUMENTS = "documents"  # the folder of documents inside OUT
MANIFEST = "manifest.jsonl"


class Audio(NamedTuple):
    """An utterance's recording, and its length when the source says."""

    path: Path  # absolute
    duration: float | None = None  # seconds


@dataclass(frozen=True)
class DocumentSetSummary:
    """What :func:`write_document_set` wrote and left out."""

    written: int  # utterances in the manifest
    chapters: int  # chapters they come from
    words: tuple[int, ...]  # words of each document written, in row order
    no_audio: int  # utterances skipped: no recording
    alone: int  # utterances with audio skipped: the only one of their chapter

    def __str__(self) -> str:
        words = self.words or (0,)
        return (
            f"{self.written} utterances from {self.chapters} chapters, words per document "
            f"min {min(words)}, median {statistics.median(words):g}, max {max(words)}; "
            f"skipped {self.no_audio} without audio, {self.alone} alone in their chapter "
            "(no document)"
        )


def chapter_of(uid: str) -> tuple[str, int]:
    """``("speaker-chapter", index)`` of a LibriSpeech utterance id.

    Raises:
        CtxasrError: ``uid`` is not ``speaker-chapter-index`` in digits.
    """
    parts = uid.split("-")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts):
        raise CtxasrError(
            uid, "is not a LibriSpeech utterance id (speaker-chapter-index, e.g. 1089-134686-0000)"
        )
    return f"{parts[0]}-{parts[1]}", int(parts[2])


def group_by_chapter(ids: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """The ids of each chapter in index order; chapters in order of first appearance."""
    chapters: dict[str, list[tuple[int, str]]] = {}
    for uid in ids:
        chapter, index = chapter_of(uid)
        chapters.setdefault(chapter, []).append((index, uid))
    return {c: tuple(uid for _, uid in sorted(members)) for c, members in chapters.items()}


def rest_of_chapter(texts: Mapping[str, str]) -> dict[str, str]:
    """Each utterance's document: the texts of the other utterances of its chapter, in
    index order, joined by ``"\\n"`` (no final one). An utterance alone in its chapter
    has none, and no entry; the rest keep ``texts``' order.
    """
    chapters = group_by_chapter(texts)
    documents = {}
    for uid in texts:
        members = chapters[chapter_of(uid)[0]]
        if len(members) > 1:
            documents[uid] = "\n".join(texts[other] for other in members if other != uid)
    return documents


def read_ref_files(paths: Sequence[str | os.PathLike[str]]) -> dict[str, Reference]:
    """The references of several benchmark files, in order.

    Raises:
        CtxasrError: a file cannot be read, or two give the same utterance id.
    """
    refs: dict[str, Reference] = {}
    for path in paths:
        for uid, ref in read_refs(path).items():
            if uid in refs:
                raise CtxasrError(str(path), f"utterance id {uid!r} is also in an earlier --refs")
            refs[uid] = ref
    return refs


def audio_from_folder(folder: str | os.PathLike[str]) -> dict[str, Audio]:
    """Recordings under ``folder`` (flat or LibriSpeech's speaker/chapter tree) by id,
    the file name without its suffix (:func:`ctxasr.eval.manifest.audio_index`)."""
    return {uid: Audio(path.absolute()) for uid, path in audio_index(folder).items()}


def audio_from_manifest(path: str | os.PathLike[str]) -> dict[str, Audio]:
    """Recordings of a NeMo manifest by its rows' ``id`` (else the audio file's name
    without suffix), paths resolved relative to the manifest.

    Raises:
        CtxasrError: the manifest cannot be read, a row is malformed, or gives an id
            another row gave.
    """
    found: dict[str, Audio] = {}
    for row in read_manifest_rows(path):
        if row.error is not None:
            raise CtxasrError(row.where, row.error)
        assert row.audio is not None  # a row without an error has its audio
        uid = row.id or row.audio.stem
        if uid in found:
            raise CtxasrError(row.where, f"utterance id {uid!r} appears twice")
        found[uid] = Audio(row.audio, row.duration)
    return found


def write_document_set(
    refs: Mapping[str, Reference], audio: Mapping[str, Audio], out: str | os.PathLike[str]
) -> DocumentSetSummary:
    """Write ``out/documents/<id>.txt`` and ``out/manifest.jsonl`` (see the module doc)
    for every utterance of ``refs`` that has ``audio`` and a chapter to be told about.

    Raises:
        CtxasrError: an id is not LibriSpeech's, ``out`` cannot be a folder, or no
            utterance is left to write.
    """
    folder = Path(out)
    documents = rest_of_chapter({uid: ref.text for uid, ref in refs.items()})
    chosen = [uid for uid in refs if uid in audio and uid in documents]
    no_audio = sum(uid not in audio for uid in refs)
    alone = sum(uid in audio and uid not in documents for uid in refs)
    if not chosen:
        raise CtxasrError(str(folder), f"nothing to write: of {len(refs)} utterances, "
                          f"{no_audio} have no audio and {alone} are alone in their chapter")  # fmt: skip
    _make_folder(folder / DOCUMENTS)
    base = folder.absolute()
    with atomic_write(folder / MANIFEST) as manifest:
        for uid in chosen:
            name = f"{DOCUMENTS}/{uid}.txt"
            (folder / name).write_bytes((documents[uid] + "\n").encode("utf-8"))
            row = _row(uid, refs[uid], audio[uid], name, base)
            manifest.write(json.dumps(row, ensure_ascii=False) + "\n")
    return DocumentSetSummary(
        written=len(chosen),
        chapters=len({chapter_of(uid)[0] for uid in chosen}),
        words=tuple(len(documents[uid].split()) for uid in chosen),
        no_audio=no_audio,
        alone=alone,
    )


def make_document_set(
    refs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    audio_dir: str | os.PathLike[str] | None = None,
    audio_manifest: str | os.PathLike[str] | None = None,
) -> DocumentSetSummary:
    """Read the reference files and one audio source, then :func:`write_document_set`.

    Raises:
        CtxasrError: neither or both audio sources, or any error of the steps.
    """
    if (audio_dir is None) == (audio_manifest is None):
        raise CtxasrError("documents", "give the audio as one of --audio or --audio-manifest")
    if audio_dir is not None:
        found = audio_from_folder(audio_dir)
    else:
        assert audio_manifest is not None
        found = audio_from_manifest(audio_manifest)
    return write_document_set(read_ref_files(refs), found, out)


def _row(uid: str, ref: Reference, audio: Audio, document: str, base: Path) -> dict[str, object]:
    row: dict[str, object] = {"audio_filepath": os.path.relpath(audio.path, base), "text": ref.text}
    if audio.duration is not None:
        row["duration"] = audio.duration
    row.update(id=uid, rare_words=sorted(ref.rare_words), context_text_file=document)
    return row


def _make_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CtxasrError(str(path), "is a file; expected a folder for the documents") from None
    except OSError as err:
        raise CtxasrError(str(path), f"cannot be made ({err.strerror or err})") from None


__all__ = [
    "Audio",
    "DocumentSetSummary",
    "audio_from_folder",
    "audio_from_manifest",
    "chapter_of",
    "group_by_chapter",
    "make_document_set",
    "read_ref_files",
    "rest_of_chapter",
    "write_document_set",
]
