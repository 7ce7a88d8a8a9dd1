"""Batch rows: manifest lines in, result rows out.

A batch manifest is NeMo-style JSONL, read more leniently than an evaluation manifest
(``ctxasr.eval.manifest``): ``text`` is optional, and a malformed line (not JSON, not an
object, no audio path, a bad context) becomes a result row with an ``"error"`` instead of
stopping a job that may be hours long. Only a manifest that cannot be read at all, or
has no row, is fatal.

A result row is the manifest row's own fields plus ``"pred_text"`` and
``"context_used"`` (or ``"error"``), and ``"manifest_line"``: the 1-based line number,
which with the audio path as written identifies the row when a job resumes. Rows hold
nothing that varies from run to run (no timings), so the engines can be compared.

:func:`transcribe_row` is the one function every engine calls on a worker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctxasr.context.terms import ContextTerm, dedupe_terms, read_term_file
from ctxasr.errors import CtxasrError

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


def audio_key(fields: dict[str, Any]) -> str | None:
    """A row's audio path as written: ``audio_filepath``, else ``audio`` (NeMo's or HF's)."""
    for name in ("audio_filepath", "audio"):
        value = fields.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None


def one_line(message: str) -> str:
    return " ".join(str(message).split())


def read_tasks(
    manifest: str | os.PathLike[str], terms: Iterable[ContextTerm] = ()
) -> list[Task]:
    """The manifest's rows as tasks, each with ``terms`` merged into its own context.

    Relative audio and context-file paths are relative to the manifest's folder. Blank
    lines are skipped but still counted, so ``Task.line`` is the line an editor shows.

    Raises:
        CtxasrError: the manifest is missing, not a file, unreadable, or has no row.
    """
    path = Path(manifest)
    if not path.exists():
        raise CtxasrError(str(path), "no such file")
    if not path.is_file():
        raise CtxasrError(str(path), "is not a file; expected a JSONL manifest")
    reader = _RowReader(path, tuple(terms))
    try:
        tasks = [reader.task(lineno, raw) for lineno, raw in _lines(path) if raw.strip()]
    except OSError as err:
        raise CtxasrError(str(path), f"cannot be read ({err.strerror})") from None
    if not tasks:
        raise CtxasrError(str(path), "has no rows")
    return tasks


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    # Split on b"\n" only: str.splitlines() would also split at U+2028 and friends,
    # which JSON allows raw inside strings, and shift every later line number.
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            yield lineno, raw.rstrip(b"\r\n")


class _RowReader:
    """Turns manifest lines into tasks; context files read once however many rows share them."""

    def __init__(self, manifest: Path, job_terms: tuple[ContextTerm, ...]) -> None:
        self.manifest = manifest
        self.base = manifest.parent
        self.job_terms = job_terms
        self._files: dict[Path, list[ContextTerm] | CtxasrError] = {}

    def task(self, lineno: int, raw: bytes) -> Task:
        where = f"{self.manifest}:{lineno}"
        try:
            row = json.loads(raw.decode("utf-8-sig" if lineno == 1 else "utf-8"))
        except UnicodeDecodeError as err:
            return Task(lineno, (), None, error=f"{where}: is not UTF-8 (byte {err.start})")
        except json.JSONDecodeError as err:
            return Task(lineno, (), None, error=f"{where}: is not JSON ({err.msg})")
        if not isinstance(row, dict):
            return Task(lineno, (), None, error=f"{where}: is not a JSON object")
        fields = tuple((k, v) for k, v in row.items() if k not in RESULT_KEYS)
        audio = audio_key(row)
        if audio is None:
            return Task(lineno, fields, None,
                        error=f"{where}: needs a string field 'audio_filepath' (or 'audio')")  # fmt: skip
        try:
            terms = self._context(row, where)
        except CtxasrError as err:
            return Task(lineno, fields, None, error=str(err))
        return Task(lineno, fields, str(self._resolve(audio)), tuple(terms))

    def _resolve(self, name: str) -> Path:
        p = Path(name).expanduser()
        return p if p.is_absolute() else (self.base / p).absolute()

    def _context(self, row: dict[str, Any], where: str) -> list[ContextTerm]:
        """The row's ``context`` list and ``context_file`` terms, then the job's."""
        terms: list[ContextTerm] = []
        context = row.get("context")
        if context is not None:
            if not isinstance(context, list) or not all(isinstance(t, str) for t in context):
                raise CtxasrError(where, "field 'context' must be a list of strings")
            terms.extend(ContextTerm(" ".join(t.split())) for t in context if t.strip())
        context_file = row.get("context_file")
        if context_file is not None:
            if not isinstance(context_file, str) or not context_file.strip():
                raise CtxasrError(where, "field 'context_file' must be a path")
            terms.extend(self._term_file(self._resolve(context_file)))
        # The row's own terms first: they were chosen for this recording.
        return dedupe_terms([*terms, *self.job_terms])

    def _term_file(self, path: Path) -> list[ContextTerm]:
        if path not in self._files:
            try:
                self._files[path] = read_term_file(path)
            except CtxasrError as err:
                self._files[path] = err
        found = self._files[path]
        if isinstance(found, CtxasrError):
            raise found
        return found


def transcribe_row(transcriber: Transcriber, task: Task) -> RowResult:
    """Transcribe one task into its result row; any failure becomes the row's ``error``.

    Every engine calls this, with the same transcriber setup, so their rows are equal.
    """
    if task.error is not None:
        return task.failed(task.error)
    assert task.audio is not None
    try:
        result = transcriber.transcribe(task.audio, task.terms)
    except CtxasrError as err:
        return task.failed(str(err))
    except Exception as err:  # noqa: BLE001 - one bad recording must not end the job
        return task.failed(f"unexpected {type(err).__name__}: {err}")
    row = task.result(pred_text=result.text, context_used=list(result.context_used))
    return RowResult(row, result.duration)


# --- JSON for engines whose rows cross a columnar format (Ray Data) -----------------


def task_to_json(task: Task) -> str:
    return json.dumps({
        "line": task.line,
        "fields": dict(task.fields),
        "audio": task.audio,
        "terms": [[t.text, t.weight] for t in task.terms],
        "error": task.error,
    })  # ASCII: a lone surrogate in a field would not survive Arrow's UTF-8


def task_from_json(text: str) -> Task:
    d = json.loads(text)
    terms = tuple(ContextTerm(text, weight) for text, weight in d["terms"])
    return Task(d["line"], tuple(d["fields"].items()), d["audio"], terms, d["error"])


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
