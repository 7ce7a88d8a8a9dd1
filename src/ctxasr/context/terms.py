"""Context terms and the user-facing formats they come in."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass

from ctxasr.errors import ContextError
from ctxasr.files import check_input_file


@dataclass(frozen=True)
class ContextTerm:
    """A word or phrase the recording is expected to contain.

    ``weight`` orders terms by relevance (higher first) when not all of them fit the
    decoder's prompt budget; 1.0 is the default for user-given terms.
    """

    text: str
    weight: float = 1.0


def parse_term_list(text: str, source: str = "<context>") -> list[ContextTerm]:
    """Parse a term list: one term or phrase a line, optional ``TAB weight``, ``#`` comments.

    Blank lines and lines starting with ``#`` are skipped; a ``#`` after whitespace starts
    a trailing comment (so ``C#`` and ``#hashtag``-style terms inside a line survive).
    Weights must be positive finite numbers.

    Raises:
        ContextError: a malformed weight (naming the line), or no usable term at all.
    """
    terms: list[ContextTerm] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        term, _, weight_text = line.partition("\t")
        weight = 1.0
        if weight_text.strip():
            weight = _parse_weight(weight_text.strip(), f"{source}:{lineno}")
        term = " ".join(term.split())
        if term:
            terms.append(ContextTerm(term, weight))
    if not terms:
        raise ContextError(source, "has no usable term (only blank lines or comments)")
    return dedupe_terms(terms)


def _strip_comment(line: str) -> str:
    if line.lstrip().startswith("#"):
        return ""
    for marker in (" #", "\t#"):
        cut = line.find(marker)
        if cut >= 0:
            line = line[:cut]
    return line


def _parse_weight(text: str, where: str) -> float:
    try:
        weight = float(text)
    except ValueError:
        raise ContextError(where, f"weight {text!r} is not a number") from None
    if not math.isfinite(weight) or weight <= 0:
        raise ContextError(where, f"weight {text!r} must be a positive number")
    return weight


def read_term_file(path: str | os.PathLike[str]) -> list[ContextTerm]:
    """Read a UTF-8 term list file (see :func:`parse_term_list`)."""
    return parse_term_list(read_text_file(path), source=str(path))


def read_text_file(path: str | os.PathLike[str]) -> str:
    """Read a UTF-8 text file (a BOM is allowed), with one-line errors naming the file.

    A file with a NUL byte is refused as binary: text files hold none, and a PDF,
    an image or a UTF-16 file would otherwise pass as text full of noise.
    """
    p = check_input_file(path, ContextError, "a text file")
    try:
        data = p.read_bytes()
    except OSError as err:
        raise ContextError(str(path), f"cannot be read ({err.strerror})") from None
    return decode_text(data, str(path))


def decode_text(data: bytes, source: str) -> str:
    """The UTF-8 text of ``data`` (a BOM is allowed), as :func:`read_text_file` reads a
    file: ``ContextError`` naming ``source`` for a NUL byte (binary) or bytes not UTF-8."""
    if b"\0" in data:
        raise ContextError(source, "is a binary file, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ContextError(
            source, f"is not UTF-8 text (invalid byte at offset {err.start})"
        ) from None


def join_documents(texts: Iterable[str | None]) -> str | None:
    """Documents given together as one: a blank line between them, blank ones (and
    None) left out; None when none is left. A lone document comes back as it is."""
    kept = [t for t in texts if t is not None and t.strip()]
    if len(kept) > 1:
        return "\n\n".join(t.rstrip() for t in kept)
    return kept[0] if kept else None


def parse_keywords(text: str, source: str = "--keywords") -> list[ContextTerm]:
    """Parse comma-separated terms: ``"term one, term two"``."""
    terms = [ContextTerm(" ".join(t.split())) for t in text.split(",") if t.strip()]
    if not terms:
        raise ContextError(source, "has no usable term")
    return dedupe_terms(terms)


def dedupe_terms(terms: Iterable[ContextTerm]) -> list[ContextTerm]:
    """Drop case-insensitive repeats, keeping the first spelling and the highest weight."""
    best: dict[str, ContextTerm] = {}
    for term in terms:
        key = term.text.casefold()
        seen = best.get(key)
        if seen is None:
            best[key] = term
        elif term.weight > seen.weight:
            best[key] = ContextTerm(seen.text, term.weight)
    return list(best.values())
