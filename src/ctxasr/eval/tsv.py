"""The biasing benchmark's TSV files: reference files (read and written) and hypotheses.

A *reference file* (Le et al. 2021, ``test-clean.biasing_100.tsv``) has one utterance
a line, four tab-separated columns, the fourth optional::

    utterance id TAB reference text TAB JSON rare words TAB JSON biasing list

The rare words and the biasing list are JSON lists of strings, written as the published
files write them: ``json.dumps`` with its defaults (``", "`` separators, ASCII escapes),
rare words sorted (:func:`format_ref_line`). A *hypothesis file* has two columns,
utterance id TAB text.

Lines follow :func:`ctxasr.manifest.numbered_lines`, as manifests do: they end at
``"\\n"`` only (a ``"\\r"`` before it is dropped), a BOM at the start is skipped, blank
lines are skipped but counted, so an error names the line an editor shows. A ``.gz``
file is decompressed. An utterance id is one non-empty word, given once a file.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import IO, NamedTuple

from ctxasr.errors import CtxasrError
from ctxasr.files import check_input_file
from ctxasr.manifest import numbered_lines


class Reference(NamedTuple):
    """One reference utterance: its text and its rare (biasing-target) words."""

    text: str
    rare_words: frozenset[str]


# --- reading -------------------------------------------------------------------------


def read_refs(path: str | Path) -> dict[str, Reference]:
    """Read a benchmark reference file (``.tsv`` or ``.tsv.gz``): columns 1-3 by id.

    Each line: utterance id, reference text, JSON list of the utterance's rare words,
    and optionally a fourth column (the full biasing list, not needed for scoring),
    separated by tabs.
    """
    return {uid: ref for uid, ref, _ in read_ref_rows(path)}


def read_biasing_lists(path: str | Path) -> dict[str, tuple[str, ...]]:
    """The biasing lists (column 4) of a reference file, by utterance id; rows without
    a fourth column have none. Columns 1-3 are checked as :func:`read_refs` does."""
    return {uid: biasing for uid, _, biasing in read_ref_rows(path) if biasing is not None}


def read_ref_rows(path: str | Path) -> Iterator[tuple[str, Reference, tuple[str, ...] | None]]:
    """``(id, reference, biasing list or None)`` of every row, checked, in one pass."""
    seen: set[str] = set()
    for where, line in _lines(path):
        fields = line.split("\t")
        if len(fields) not in (3, 4):
            raise CtxasrError(
                where,
                f"expected 3 or 4 tab-separated fields (id, text, rare words[, biasing "
                f"list]), got {len(fields)}",
            )
        uid = _utterance_id(where, fields[0], seen)
        seen.add(uid)
        rare = frozenset(_json_words(where, fields[2], "rare words"))
        biasing = tuple(_json_words(where, fields[3], "biasing list")) if len(fields) == 4 else None
        yield uid, Reference(fields[1].strip(), rare), biasing


def read_hyps(path: str | Path) -> dict[str, str]:
    """Read a hypothesis file (``.tsv`` or ``.tsv.gz``): utterance id TAB text a line.

    A line with only an id (with or without the tab) is an empty hypothesis.
    """
    hyps: dict[str, str] = {}
    for where, line in _lines(path):
        fields = line.split("\t")
        if len(fields) > 2:
            raise CtxasrError(
                where, f"expected 2 tab-separated fields (id, text), got {len(fields)}"
            )
        uid = _utterance_id(where, fields[0], hyps)
        hyps[uid] = fields[1].strip() if len(fields) == 2 else ""
    return hyps


def _lines(path: str | Path) -> Iterator[tuple[str, str]]:
    """(``"path:lineno"``, line) for each non-blank line; ``.gz`` is decompressed."""
    path = check_input_file(path, CtxasrError, "a TSV file")  # a FIFO would block
    try:
        with _open(path) as f:
            for lineno, raw in numbered_lines(f):
                where = f"{path}:{lineno}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise CtxasrError(where, f"is not UTF-8 (byte {err.start})") from None
                yield where, line
    except FileNotFoundError as err:
        raise CtxasrError(str(path), "no such file") from err
    except OSError as err:  # a folder, a permission, a corrupt .gz
        raise CtxasrError(str(path), f"cannot read: {err}") from err


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _utterance_id(where: str, field: str, seen: Collection[str]) -> str:
    uid = field.strip()
    if not uid:
        raise CtxasrError(where, "empty utterance id")
    if len(uid.split()) != 1:
        raise CtxasrError(
            where, f"utterance id {uid!r} contains spaces (fields must be separated by tabs)"
        )
    if uid in seen:
        raise CtxasrError(where, f"utterance {uid} appears twice")
    return uid


def _json_words(where: str, field: str, what: str) -> list[str]:
    try:
        words = json.loads(field)
    except json.JSONDecodeError as err:
        raise CtxasrError(where, f"{what}: not JSON ({err.msg})") from None
    except (ValueError, RecursionError):  # json.loads's limits, not its syntax errors
        raise CtxasrError(where, f"{what}: JSON beyond what can be read (a number of "
                          "4,300+ digits, or lists nested too deep)") from None  # fmt: skip
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise CtxasrError(where, f"{what}: must be a JSON list of strings")
    return words


# --- writing -------------------------------------------------------------------------


def format_ref_line(
    utt_id: str, text: str, rare_words: Collection[str], biasing: Sequence[str]
) -> str:
    """One line of a benchmark reference file, with its newline, as published.

    Raises:
        CtxasrError: an id or text that would not read back as written (an id that is
            empty or holds whitespace, a text with a tab or a line break).
    """
    if not utt_id or len(utt_id.split()) != 1 or utt_id.strip() != utt_id:
        raise CtxasrError("utterance id", f"{utt_id!r} must be one word without spaces")
    if any(c in text for c in "\t\n\r"):
        raise CtxasrError(utt_id, "the reference text must not hold a tab or a line break")
    return f"{utt_id}\t{text}\t{json.dumps(sorted(rare_words))}\t{json.dumps(list(biasing))}\n"


__all__ = [
    "Reference",
    "format_ref_line",
    "read_biasing_lists",
    "read_hyps",
    "read_refs",
]
