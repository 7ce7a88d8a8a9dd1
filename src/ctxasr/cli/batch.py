"""``ctxasr batch``: transcribe a whole manifest into JSONL, resumably.

A thin command: parse flags, build :class:`BatchOptions`, call :func:`run_batch`, print
a one-line summary on stderr. ``ctxasr.cli`` registers it as
``app.command(name="batch")(batch)``; ``python -m ctxasr.batch.cli`` runs it alone.
Errors take the main CLI's path (one line, exit 1); ``ctxasr.cli`` is imported inside
the command, so importing this module from it makes no cycle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import threading
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ctxasr.shell import ProgressBar, Retriever
from ctxasr.transcribe import TranscribeOptions

if TYPE_CHECKING:
    from ctxasr.batch import BatchSummary


class Engine(str, Enum):
    local = "local"
    ray = "ray"



def batch(
    manifest: Annotated[Path, typer.Argument(help="NeMo-style JSONL manifest: audio_filepath (or audio), optional text, duration, context (list of terms) or context_file, id, any other fields.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL to append results to; re-running the same command resumes it.")],
    context: Annotated[
        list[Path] | None,
        typer.Option("--context", "-c", help="Term list for every row, beside the row's own context. Repeatable."),
    ] = None,
    keywords: Annotated[str | None, typer.Option("--keywords", "-k", help='Comma-separated terms for every row: "term one, term two".')] = None,
    context_text: Annotated[
        list[Path] | None,
        typer.Option("--context-text", help="Free text to pick terms from, for every row. Repeatable."),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="As for transcribe: tiny.en (packaged, default), a CTranslate2 model directory, or a faster-whisper model name.")] = None,
    language: Annotated[str, typer.Option("--language", "-l", help="Spoken language; 'auto' to detect.")] = "en",
    beam_size: Annotated[int, typer.Option("--beam-size", min=1, max=20, help="Beam width.")] = 5,
    retriever: Annotated[
        Retriever, typer.Option("--retriever", help="As for transcribe: hybrid, a2p, phonetic, all or none.")
    ] = Retriever(TranscribeOptions.retriever),
    engine: Annotated[
        Engine, typer.Option("--engine", help="local: worker processes on this machine; ray: Ray Data, on this machine or the cluster at --ray-address / $RAY_ADDRESS (pip install 'ctxasr\\[ray]').")
    ] = Engine.local,
    workers: Annotated[int, typer.Option("--workers", min=0, max=256, help="Worker processes (Ray: actors), each with its own model. 0: one per CPU, at most 8.")] = 0,
    threads: Annotated[int, typer.Option("--threads", min=0, help="CPU threads per worker. 0: the CPUs shared out among the workers.")] = 0,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray).")] = None,
    retry_errors: Annotated[bool, typer.Option("--retry-errors", help="Re-run rows the output holds with an error.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Transcribe every row of a manifest into JSONL; re-run to resume after a crash."""
    from ctxasr.cli import _gather_context, _user_errors

    with _user_errors(), _sigterm_as_interrupt():
        from ctxasr.batch import BatchInterrupted, BatchOptions, run_batch

        options = BatchOptions(
            engine=engine.value,
            workers=workers,
            threads=threads,
            model=model,
            transcribe=dataclasses.replace(
                TranscribeOptions(),
                language=None if language == "auto" else language,
                beam_size=beam_size,
                retriever=retriever.value,
            ),
            retry_errors=retry_errors,
            ray_address=ray_address,
        )
        terms = _gather_context(context or [], keywords, context_text or [])
        try:
            with _RowProgress(enabled=not quiet and sys.stderr.isatty()) as progress:
                summary = run_batch(manifest, output, options, terms, progress)
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
    """``python -m ctxasr.batch.cli``: the batch command alone."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(batch)
    app()


if __name__ == "__main__":
    main()
