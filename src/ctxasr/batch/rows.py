"""Batch rows: manifest lines in, result rows out.

A batch manifest is NeMo-style JSONL, read by :mod:`ctxasr.manifest`'s rules, as an
evaluation manifest is, but leniently: ``text`` is optional, and a malformed line (not
JSON, not an object, no audio path, a bad context) becomes a result row with an
``"error"`` instead of stopping a job that may be hours long. Only a manifest that
cannot be read at all, or has no row, is fatal. A row's document (``context_text``,
``context_text_file``) goes to the transcriber whole, and its terms join the row's, as
in an evaluation (:func:`ctxasr.manifest.context_terms`).

A result row is the manifest row's own fields plus ``"pred_text"`` and
``"context_used"`` (or ``"error"``), and ``"manifest_line"``: the 1-based line number,
which with the audio path as written identifies the row when a job resumes. Rows hold
nothing that varies from run to run (no timings), so the engines can be compared.

:func:`transcribe_row` is the one function every engine calls on a worker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ctxasr.context.terms import ContextTerm, dedupe_terms, join_documents
from ctxasr.errors import CtxasrError
from ctxasr.manifest import ManifestRow, audio_key, context_terms, read_manifest_rows

if TYPE_CHECKING:
    from ctxasr.transcribe import Transcriber

# Keys a result row sets. A manifest that is itself an earlier job's output must not
# carry its old values over: a stale "error" would make resume re-run a good row.
RESULT_KEYS = ("pred_text", "context_used", "manifest_line", "error")


@dataclass(frozen=True)
class Task:
    """One manifest line, ready to transcribe, or already failed when ``error`` is set."""

    line: int  # 1-based line number in the manifest
    fields: tuple[tuple[str, Any], ...]  # the row's own fields, in order, minus RESULT_KEYS
    audio: str | None  # the recording, as an absolute path
    terms: tuple[ContextTerm, ...] = ()  # the row's context merged with the job's
    error: str | None = None  # why the line cannot be transcribed
    document: str | None = None  # the job's context text, then the row's, for the transcriber

    @property
    def key(self) -> str | None:
        """The audio path as the manifest writes it: with ``line``, the row's identity."""
        return audio_key(dict(self.fields))

    def result(self, **values: Any) -> dict[str, Any]:
        """The output row: the manifest fields, then ``values``, then ``manifest_line``."""
        return {**dict(self.fields), **values, "manifest_line": self.line}

    def failed(self, message: str) -> RowResult:
        return RowResult(self.result(error=one_line(message)), 0.0)


@dataclass(frozen=True)
class RowResult:
    """A finished row as it goes into the output, and the seconds of audio it held."""

    row: dict[str, Any]
    audio_seconds: float = 0.0  # 0 for a failed row; the summary's real-time factor

    @property
    def line(self) -> int:
        return self.row["manifest_line"]

    @property
    def failed(self) -> bool:
        return "error" in self.row


def one_line(message: str) -> str:
    return " ".join(str(message).split())


def read_tasks(
    manifest: str | os.PathLike[str],
    terms: Iterable[ContextTerm] = (),
    document: str | None = None,
) -> list[Task]:
    """The manifest's rows as tasks, each with ``terms`` merged into its own context
    and ``document`` (the job's) before its own document, a blank line between.

    The rules (line numbers, paths, context, weights) are :mod:`ctxasr.manifest`'s, the
    same as an evaluation's. Blank lines are skipped but still counted, so ``Task.line``
    is the line an editor shows.

    Raises:
        CtxasrError: the manifest is missing, not a file, unreadable, or has no row.
    """
    job_terms = tuple(terms)
    tasks = [_task(row, job_terms, document) for row in read_manifest_rows(manifest)]
    if not tasks:
        raise CtxasrError(str(manifest), "has no rows")
    return tasks


def _task(row: ManifestRow, job_terms: tuple[ContextTerm, ...], job_document: str | None) -> Task:
    fields = tuple((k, v) for k, v in row.fields if k not in RESULT_KEYS)
    if row.message is not None:
        return Task(row.line, fields, None, error=row.message)
    assert row.audio is not None  # a row without an error has its audio
    # The row's own terms first: they were chosen for this recording.
    terms = tuple(dedupe_terms([*context_terms(row), *job_terms]))
    document = join_documents([job_document, row.context_text])
    return Task(row.line, fields, str(row.audio), terms, document=document)


def transcribe_row(transcriber: Transcriber, task: Task) -> RowResult:
    """Transcribe one task into its result row; any failure becomes the row's ``error``.

    Every engine calls this, with the same transcriber setup, so their rows are equal.
    """
    if task.error is not None:
        return task.failed(task.error)
    assert task.audio is not None
    try:
        result = transcriber.transcribe(task.audio, task.terms, document=task.document)
    except CtxasrError as err:
        return task.failed(str(err))
    except Exception as err:  # noqa: BLE001 - one bad recording must not end the job
        return task.failed(f"unexpected {type(err).__name__}: {err}")
    row = task.result(pred_text=result.text, context_used=list(result.context_used))
    return RowResult(row, result.duration)


# --- JSON for engines whose rows cross a columnar format (Ray Data) -----------------


def task_to_json(task: Task) -> str:
    return json.dumps(
        {
            "line": task.line,
            "fields": dict(task.fields),
            "audio": task.audio,
            "terms": [[t.text, t.weight] for t in task.terms],
            "error": task.error,
            "document": task.document,
        }
    )  # ASCII: a lone surrogate in a field would not survive Arrow's UTF-8


def task_from_json(text: str) -> Task:
    d = json.loads(text)
    terms = tuple(ContextTerm(text, weight) for text, weight in d["terms"])
    return Task(d["line"], tuple(d["fields"].items()), d["audio"], terms, d["error"],
                d["document"])  # fmt: skip


def pending(tasks: Sequence[Task], finished: Iterable[int]) -> list[Task]:
    """The tasks whose line is not among ``finished``, in manifest order."""
    done = set(finished)
    return [t for t in tasks if t.line not in done]


__all__ = [
    "RESULT_KEYS",
    "RowResult",
    "Task",
    "audio_key",
    "pending",
    "read_tasks",
    "task_from_json",
    "task_to_json",
    "transcribe_row",
]
