"""``ctxasr batch``: transcribe a whole manifest into JSONL, resumably.

A thin command: parse flags, build :class:`BatchOptions`, call :func:`run_batch`, print
a one-line summary on stderr. Its decoding and model flags are transcribe's, from the
same options dataclasses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ctxasr.batch.job import BatchOptions
from ctxasr.cli.common import ProgressBar, gather_context, show_progress, user_errors, with_options
from ctxasr.options import ModelOptions, TranscribeOptions

if TYPE_CHECKING:
    from ctxasr.batch import BatchSummary


# ModelOptions.cpu_threads is BatchOptions.threads here: threads per worker.
@with_options(
    BatchOptions, TranscribeOptions, ModelOptions, skip=("word_timestamps", "cpu_threads")
)
def batch(
    manifest: Annotated[
        Path,
        typer.Argument(
            help="NeMo-style JSONL manifest: audio_filepath (or audio), optional text, duration, context (list of terms) or context_file, id, any other fields."
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="JSONL to append results to; re-running the same command resumes it.",
        ),
    ],
    context: Annotated[
        list[Path] | None,
        typer.Option(
            "--context",
            "-c",
            help="Term list for every row, beside the row's own context. Repeatable.",
        ),
    ] = None,
    keywords: Annotated[
        str | None,
        typer.Option(
            "--keywords", "-k", help='Comma-separated terms for every row: "term one, term two".'
        ),
    ] = None,
    context_text: Annotated[
        list[Path] | None,
        typer.Option(
            "--context-text",
            help="Free text to pick terms from, for every row; it also joins each row's "
            "document (see --domain-lm). Repeatable.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    *,
    job: BatchOptions,
    options: TranscribeOptions,
    model_options: ModelOptions,
) -> None:
    """Transcribe every row of a manifest into JSONL; re-run to resume after a crash."""
    with user_errors(), _sigterm_as_interrupt():
        from ctxasr.batch import BatchInterrupted, run_batch

        job = dataclasses.replace(job, transcribe=options, model_options=model_options)
        terms, document = gather_context(context or [], keywords, context_text or [])
        try:
            with _RowProgress(enabled=show_progress(quiet)) as progress:
                summary = run_batch(manifest, output, job, terms, progress, document=document)
        except BatchInterrupted as stop:
            s = stop.summary
            typer.echo(f"ctxasr: interrupted: {s.skipped + s.done} of {s.total} rows are in "
                       f"{output}; run the same command again to resume", err=True)  # fmt: skip
            raise typer.Exit(130) from None
        typer.echo(describe(summary), err=True)


def describe(summary: BatchSummary) -> str:
    """The end-of-job line: rows, errors, audio hours, time, real-time factor."""
    s = summary
    head = f"ctxasr: {s.output}: {s.total} rows"
    if s.done == 0:
        return f"{head}, all already there; nothing to do" + _earlier(s.earlier_errors)
    errors = f" ({s.errors} with errors)" if s.errors else ""
    skipped = f", {s.skipped} already there" if s.skipped else ""
    rtf = s.real_time_factor
    speed = f" (RTF {rtf:.3f}, {1 / rtf:.1f}x real time)" if rtf else ""
    return (f"{head}: {s.done} done{errors}{skipped}; {s.audio_seconds / 3600:.3f} h of "
            f"audio in {s.elapsed:.1f} s{speed}" + _earlier(s.earlier_errors))  # fmt: skip


def _earlier(count: int) -> str:
    return f"; {count} earlier error rows kept (--retry-errors re-runs them)" if count else ""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's stop, ``kill``) ends the job as Ctrl-C does, cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _RowProgress(ProgressBar):
    """A progress bar over rows, with errors and ETA."""

    def columns(self) -> list:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        return [TextColumn("transcribing"), BarColumn(), MofNCompleteColumn(),
                TextColumn("rows, {task.fields[errors]} errors"), TimeElapsedColumn(),
                TextColumn("ETA"), TimeRemainingColumn()]  # fmt: skip

    def options(self) -> dict:
        # Rows of long recordings finish minutes apart: rich's default 30 s window
        # would often hold no finished row and show no ETA.
        return {"speed_estimate_period": 600}

    def update(self, done: int, total: int, errors: int) -> None:
        if self._task is None:  # resumed rows start the bar, outside the speed estimate
            self._task = self._bar.add_task("batch", total=total, completed=done, errors=errors)
        else:
            self._bar.update(self._task, completed=done, total=total, errors=errors)


def main() -> None:
    """The batch command alone, as an app (``ctxasr batch`` is the same command)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(batch)
    app()
