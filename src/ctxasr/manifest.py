"""NeMo-style JSONL manifests, read by one set of rules for evaluation and batch jobs.

A manifest holds one JSON object a line. :func:`read_manifest_rows` reads it into
:class:`ManifestRow`\\ s; ``ctxasr.eval.manifest`` turns them into evaluation items and
stops at a malformed row, ``ctxasr.batch.rows`` turns them into tasks and records the
row's error instead. Both call this module, so they cannot disagree on a row.

Lines (:func:`numbered_lines`, also used for the benchmark's TSV files):

* lines end at ``"\\n"`` only. ``str.splitlines`` would also end one at U+2028, U+0085
  and other separators that JSON allows raw inside a string, and shift every later
  line number. A ``"\\r"`` before the ``"\\n"`` is dropped, so CRLF files read the same.
* a UTF-8 byte order mark at the start of the file is skipped.
* blank lines (ASCII whitespace only) are skipped but counted: ``ManifestRow.line`` is
  the 1-based number that ``wc -l``, ``sed -n Np``, ``jq`` and editors agree on.
* each line is decoded as UTF-8 on its own, so one bad byte spoils only its row.

Fields (a field set to ``null`` counts as absent):

* the audio is ``audio_filepath``, else ``audio`` (the Hugging Face name): the first
  that is a non-blank string. ``~`` is expanded, a relative path is relative to the
  manifest's folder, and the result is absolute (symbolic links are not resolved).
* ``text`` (the reference transcript) is optional; when present it is a string.
* ``context`` is a list of terms, each a string (weight 1.0) or an object
  ``{"text": "Quilter", "weight": 2.0}``; a weight is a positive finite number.
* ``context_file`` names a term list (one term a line, optional ``TAB weight``, ``#``
  comments: :func:`ctxasr.context.terms.parse_term_list`), its path resolved like
  the audio's.
* a row with both gets both: ``context``'s terms first, then the file's, repeats
  dropped as :func:`ctxasr.context.terms.dedupe_terms` does (case-insensitive, the
  first spelling, the highest weight). A term's inner whitespace is collapsed to one
  space; blank terms are dropped.
* ``context_text`` is free text (a document: slides, a paper, a chapter) given inline,
  ``context_text_file`` names one, its path resolved like the audio's and read as UTF-8
  (:func:`ctxasr.context.terms.read_text_file`: a BOM is allowed, a file with a NUL
  byte is binary and refused). A row with both gets the inline text, a blank line,
  then the file's. Blank text counts as none. ``ManifestRow.terms`` leaves the text
  alone; :func:`context_terms` adds the terms extracted from it.
* ``rare_words`` is a list of strings, ``duration`` a number of seconds (not
  negative), ``id`` a string or a whole number.
* every other field is kept as it is, in order, in ``ManifestRow.fields``.

A row that is not UTF-8, not JSON, not an object, has no audio path, or has a known
field of the wrong kind, or a ``context_file`` or ``context_text_file`` that cannot be
read, is *malformed*: its ``ManifestRow.error`` says why. Reading never raises for one
row; only a manifest that is missing or cannot be read raises
:class:`~ctxasr.errors.CtxasrError`.
"""

from __future__ import annotations

import functools
import json
import math
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxasr.context.extract import terms_from_text
from ctxasr.context.terms import (
    ContextTerm,
    dedupe_terms,
    join_documents,
    read_term_file,
    read_text_file,
)
from ctxasr.errors import ContextError, CtxasrError

BOM = b"\xef\xbb\xbf"  # UTF-8's byte order mark
AUDIO_FIELDS = ("audio_filepath", "audio")  # NeMo's name, then Hugging Face's
# The fields this module reads; the rest pass through untouched.
KNOWN_FIELDS = frozenset(
    {*AUDIO_FIELDS, "text", "context", "context_file", "context_text", "context_text_file",
     "rare_words", "duration", "id"}
)  # fmt: skip


@dataclass(frozen=True)
class ManifestRow:
    """One non-blank manifest line: the fields read, or why it is malformed."""

    source: str  # the manifest, as given
    line: int  # 1-based line number, counting blank lines
    fields: tuple[tuple[str, Any], ...] = ()  # the JSON object's fields, in order
    audio: Path | None = None  # absolute; None when the row is malformed
    text: str | None = None  # the reference transcript, when given
    terms: tuple[ContextTerm, ...] = ()  # ``context``, then ``context_file``, deduplicated
    context_text: str | None = None  # ``context_text``, then ``context_text_file``'s text
    rare_words: tuple[str, ...] | None = None  # as written
    duration: float | None = None  # seconds
    id: str | None = None
    error: str | None = None  # why the row is malformed, without its place

    @property
    def where(self) -> str:
        """``"manifest:line"``, the place to name in a message."""
        return f"{self.source}:{self.line}"

    @property
    def message(self) -> str | None:
        """The error with its place, ``"manifest:line: problem"``; None for a good row."""
        return None if self.error is None else f"{self.where}: {self.error}"


def read_manifest_rows(path: str | os.PathLike[str]) -> list[ManifestRow]:
    """The manifest's non-blank lines as rows, in order (see the module doc for the rules).

    Raises:
        CtxasrError: the manifest is missing, not a file, or cannot be read. A malformed
            row does not raise: its ``error`` is set.
    """
    p = Path(path)
    try:
        kind = p.stat().st_mode
    except FileNotFoundError:
        raise CtxasrError(str(path), "no such file") from None
    except (OSError, ValueError) as err:  # a name too long, a symlink loop, a NUL byte
        raise CtxasrError(
            str(path), f"cannot be read ({getattr(err, 'strerror', None) or err})"
        ) from None
    if not stat.S_ISREG(kind):
        raise CtxasrError(str(path), "is not a file; expected a JSONL manifest")
    reader = _RowReader(str(path), p.parent)
    try:
        with p.open("rb") as f:
            return [reader.row(lineno, raw) for lineno, raw in numbered_lines(f)]
    except OSError as err:
        raise CtxasrError(str(path), f"cannot be read ({err.strerror or err})") from None


def numbered_lines(stream: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of each non-blank line, without its ``"\\n"`` or ``"\\r\\n"``.

    Lines end at ``b"\\n"`` only; numbers start at 1 and count blank lines; a BOM at the
    start of the stream is dropped.
    """
    for lineno, raw in enumerate(stream, start=1):
        if lineno == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        raw = raw.removesuffix(b"\n").removesuffix(b"\r")
        if raw.strip():
            yield lineno, raw


class _RowReader:
    """Turns lines into rows; a context file is read once however many rows name it."""

    def __init__(self, source: str, base: Path) -> None:
        self.source = source
        self.base = base
        self._files: dict[Path, tuple[ContextTerm, ...] | CtxasrError] = {}
        self._texts: dict[Path, str | CtxasrError] = {}  # a document may serve many rows

    def row(self, lineno: int, raw: bytes) -> ManifestRow:
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            return ManifestRow(self.source, lineno, error=f"is not UTF-8 (byte {err.start})")
        except json.JSONDecodeError as err:
            return ManifestRow(self.source, lineno, error=f"is not JSON ({err.msg})")
        except (ValueError, RecursionError) as err:  # a 4,300-digit number, deep nesting
            return ManifestRow(self.source, lineno, error=f"is beyond what JSON reads here ({err})")
        if not isinstance(obj, dict):
            return ManifestRow(self.source, lineno, error="is not a JSON object")
        fields = tuple(obj.items())
        try:
            return ManifestRow(self.source, lineno, fields, **self._known(obj))
        except _Malformed as err:
            return ManifestRow(self.source, lineno, fields, error=str(err))

    def _known(self, obj: dict[str, Any]) -> dict[str, Any]:
        audio = audio_key(obj)
        if audio is None:
            raise _Malformed("needs a string field 'audio_filepath' (or 'audio')")
        return {
            "audio": self._resolve(audio),
            "text": _text(obj.get("text")),
            "terms": self._terms(obj),
            "context_text": self._context_text(obj),
            "rare_words": _rare_words(obj.get("rare_words")),
            "duration": _duration(obj.get("duration")),
            "id": _id(obj.get("id")),
        }

    def _resolve(self, name: str) -> Path:
        p = Path(name).expanduser()
        return p if p.is_absolute() else (self.base / p).absolute()

    def _terms(self, obj: dict[str, Any]) -> tuple[ContextTerm, ...]:
        terms = _context(obj.get("context"))
        context_file = obj.get("context_file")
        if context_file is not None:
            if not isinstance(context_file, str) or not context_file.strip():
                raise _Malformed("field 'context_file' must be a path")
            terms.extend(self._read_once(self._files, self._resolve(context_file),
                                         lambda p: tuple(read_term_file(p)),
                                         "context_file"))  # fmt: skip
        return tuple(dedupe_terms(terms))

    @staticmethod
    def _read_once(cache: dict[Path, Any], path: Path, read: Callable[[Path], Any],
                   field: str) -> Any:  # fmt: skip
        """``read(path)``, once per manifest however many rows name the file; a file that
        cannot be read makes each of those rows malformed, naming ``field``."""
        if path not in cache:
            try:
                cache[path] = read(path)
            except CtxasrError as err:
                cache[path] = err
        found = cache[path]
        if isinstance(found, CtxasrError):
            raise _Malformed(f"{field} {found}")
        return found

    def _context_text(self, obj: dict[str, Any]) -> str | None:
        inline = obj.get("context_text")
        if inline is not None and not isinstance(inline, str):
            raise _Malformed("field 'context_text' must be a string")
        name = obj.get("context_text_file")
        from_file = None
        if name is not None:
            if not isinstance(name, str) or not name.strip():
                raise _Malformed("field 'context_text_file' must be a path")
            from_file = self._read_once(self._texts, self._resolve(name), read_text_file,
                                        "context_text_file")  # fmt: skip
        return join_documents([inline, from_file])


def context_terms(row: ManifestRow) -> tuple[ContextTerm, ...]:
    """The terms a row offers the recognizer: its own (``context``, ``context_file``),
    then those :func:`ctxasr.context.extract.terms_from_text` finds in its
    ``context_text`` (weighted below listed terms), repeats dropped as
    :func:`ctxasr.context.terms.dedupe_terms` does.

    A text with no rare word, name or acronym adds no term: it is still the row's
    document, which a recognizer may use whole.
    """
    if row.context_text is None:
        return row.terms
    return tuple(dedupe_terms([*row.terms, *_text_terms(row.context_text)]))


@functools.lru_cache(maxsize=16)
def _text_terms(text: str) -> tuple[ContextTerm, ...]:
    """The terms of one document, extracted once however many rows share it."""
    try:
        return tuple(terms_from_text(text, source="context_text"))
    except ContextError:  # nothing to extract
        return ()


class _Malformed(Exception):
    """A row's problem, caught before it leaves this module."""


def audio_key(fields: dict[str, Any]) -> str | None:
    """A row's audio path as written: ``audio_filepath``, else ``audio``, if non-blank."""
    for name in AUDIO_FIELDS:
        value = fields.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _text(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _Malformed("field 'text' must be a string")
    return value


_CONTEXT_FORM = 'field \'context\' must be a list of strings (or {"text", "weight"} objects)'


def _context(value: object) -> list[ContextTerm]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Malformed(_CONTEXT_FORM)
    terms = []
    for entry in value:
        if isinstance(entry, str):
            text, weight = entry, 1.0
        elif isinstance(entry, dict) and isinstance(entry.get("text"), str):
            if set(entry) - {"text", "weight"}:
                raise _Malformed(_CONTEXT_FORM)
            text, weight = entry["text"], entry.get("weight", 1.0)
            if not _finite(weight) or weight <= 0:
                raise _Malformed(f"field 'context': weight {weight!r} must be a positive number")
        else:
            raise _Malformed(_CONTEXT_FORM)
        text = " ".join(text.split())
        if text:
            terms.append(ContextTerm(text, float(weight)))
    return terms


def _rare_words(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        raise _Malformed("field 'rare_words' must be a list of strings")
    return tuple(value)


def _duration(value: object) -> float | None:
    if value is None:
        return None
    if not _finite(value) or value < 0:
        raise _Malformed("field 'duration' must be a number of seconds")
    return float(value)


def _id(value: object) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    raise _Malformed("field 'id' must be a string or a whole number")


def _finite(value: object) -> bool:
    """A JSON number that is not infinite or NaN (``true`` is not a number here)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


__all__ = [
    "AUDIO_FIELDS",
    "KNOWN_FIELDS",
    "ManifestRow",
    "audio_key",
    "context_terms",
    "numbered_lines",
    "read_manifest_rows",
]
