"""The ``ctxasr`` command line: a thin shell that parses, calls the library, writes.

Bad input ends with one line on stderr naming the input and the problem and exit
status 1; usage errors exit with 2 (click's convention). No traceback unless
``CTXASR_DEBUG=1`` is set.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ctxasr.errors import CtxasrError
from ctxasr.shell import RETRIEVER_HELP, ProgressBar, Retriever
from ctxasr.transcribe import TranscribeOptions

app = typer.Typer(
    name="ctxasr",
    help="Contextual speech recognition: transcripts that get your terms right.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class OutputFormat(str, Enum):
    text = "text"
    json = "json"
    srt = "srt"
    vtt = "vtt"
    tsv = "tsv"


@app.callback()
def _main() -> None:
    """Contextual speech recognition: transcripts that get your terms right."""



class Backend(str, Enum):
    ct2 = "ct2"
    torch = "torch"


class TorchDtype(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"


@app.command()
def transcribe(
    audio: Annotated[Path, typer.Argument(help="Recording to transcribe (any format FFmpeg reads).")],
    context: Annotated[
        Optional[list[Path]],
        typer.Option("--context", "-c", help="Term list: one term a line, optional TAB weight, # comments. Repeatable."),
    ] = None,
    keywords: Annotated[
        Optional[str], typer.Option("--keywords", "-k", help='Comma-separated terms: "term one, term two".')
    ] = None,
    context_text: Annotated[
        Optional[list[Path]],
        typer.Option("--context-text", help="Free text (document, slides' OCR) to pick terms from. Repeatable."),
    ] = None,
    model: Annotated[
        Optional[str],
        typer.Option("--model", "-m", help="tiny.en (packaged, default), a CTranslate2 model directory, or a faster-whisper model name."),
    ] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.text,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
    word_timestamps: Annotated[bool, typer.Option("--word-timestamps", help="Add word timings (JSON).")] = False,
    language: Annotated[str, typer.Option("--language", "-l", help="Spoken language; 'auto' to detect.")] = "en",
    beam_size: Annotated[int, typer.Option("--beam-size", min=1, max=20, help="Beam width.")] = 5,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")] = "cpu",
    compute_type: Annotated[str, typer.Option("--compute-type", help="int8, float16, float32, ...")] = "int8",
    threads: Annotated[int, typer.Option("--threads", min=0, help="CPU threads (0: library default).")] = 0,
    retriever: Annotated[
        Retriever,
        typer.Option("--retriever", help=RETRIEVER_HELP),
    ] = Retriever(TranscribeOptions.retriever),
    verify: Annotated[
        Optional[bool],
        typer.Option("--verify/--no-verify", show_default=False, help=f"Keep a second-pass change only when a prompt-free forced decode of the same audio finds it at most --verify-margin nats less likely than the first pass's words. [default: on for contexts of {TranscribeOptions.verify_from:,} terms or more]"),
    ] = TranscribeOptions.verify,
    verify_margin: Annotated[
        float, typer.Option("--verify-margin", min=0.0, help="Nats a verified change may cost (higher: more terms, more distractors).")
    ] = TranscribeOptions.verify_margin,
    scorer: Annotated[
        Optional[Path], typer.Option("--scorer", help="Weights of the audio scorer for hybrid/a2p (a directory from `ctxasr train retriever`); default: the packaged ones.")
    ] = None,
    backend: Annotated[
        Backend,
        typer.Option("--backend", help="ct2: CTranslate2 (fastest on CPUs); torch: ctxasr's PyTorch Whisper and beam search on the same weights (needed for --fusion-weight; pip install torch==2.13.0 'ctxasr\\[torch]')."),
    ] = Backend.ct2,
    fusion_weight: Annotated[
        float,
        typer.Option("--fusion-weight", min=0.0, help="Shallow fusion (torch backend): log-probability bonus per token of a context term the beam search is spelling, taken back if it stops short. 0: off."),
    ] = 0.0,
    context_prompt: Annotated[
        bool,
        typer.Option("--context-prompt/--no-context-prompt", help="Put the chosen terms in the decoder prompt (off: fusion only)."),
    ] = True,
    torch_dtype: Annotated[
        TorchDtype, typer.Option("--torch-dtype", help="Precision of the torch backend: float32, or bfloat16 (faster on CPUs with AVX512-BF16).")
    ] = TorchDtype.float32,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Transcribe a recording, biased towards the terms of a context."""
    if fusion_weight > 0 and backend is not Backend.torch:
        raise typer.BadParameter("shallow fusion needs --backend torch", param_hint="--fusion-weight")
    if not context_prompt and fusion_weight == 0 and retriever is not Retriever.none:
        raise typer.BadParameter("with --no-context-prompt, set --fusion-weight above 0: nothing else would carry the context", param_hint="--no-context-prompt")
    with _user_errors():
        from ctxasr.audio import probe
        from ctxasr.transcribe import ModelOptions, Transcriber
        from ctxasr.writers import format_transcript

        probe(audio)  # a bad recording is reported before the model loads
        _check_output(output, audio)
        terms = _gather_context(context or [], keywords, context_text or [])
        options = dataclasses.replace(
            TranscribeOptions(),
            language=None if language == "auto" else language,
            beam_size=beam_size,
            word_timestamps=word_timestamps,
            retriever=retriever.value,
            fusion_weight=fusion_weight,
            context_prompt=context_prompt,
            verify=verify,
            verify_margin=verify_margin,
            scorer=str(scorer) if scorer is not None else None,
        )
        model_options = ModelOptions(
            device=device,
            compute_type=compute_type,
            cpu_threads=threads,
            backend=backend.value,
            torch_dtype=torch_dtype.value,
        )
        transcriber = Transcriber(model, options, model_options)
        with _progress(enabled=not quiet and sys.stderr.isatty()) as progress:
            result = transcriber.transcribe(audio, terms, progress=progress)
        rendered = format_transcript(result, output_format.value, word_timestamps=word_timestamps)
        _write(rendered, output)


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option("--host", help="Interface (default 127.0.0.1; 0.0.0.0: all).")] = None,
    port: Annotated[Optional[int], typer.Option("--port", "-p", help="TCP port (default 8000).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="As for transcribe; loaded once and shared.")] = None,
    concurrency: Annotated[Optional[int], typer.Option("--concurrency", help="Transcriptions at once (default: one per CPU, at most 8).")] = None,
    max_queue: Annotated[Optional[int], typer.Option("--max-queue", help="Requests that may wait; more get 503 (default 8).")] = None,
    max_upload_mb: Annotated[Optional[float], typer.Option("--max-upload-mb", help="Largest upload in MiB; more gets 413 (default 25).")] = None,
    request_timeout: Annotated[Optional[float], typer.Option("--request-timeout", help="Seconds per request, queueing included (default 600).")] = None,
    shutdown_grace: Annotated[Optional[float], typer.Option("--shutdown-grace", help="On SIGTERM, seconds in-flight requests get to finish (default 30).")] = None,
    backend: Annotated[Optional[Backend], typer.Option("--backend", help="ct2 or torch (as for transcribe).")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads per transcription (default: the CPUs shared out).")] = None,
    retriever: Annotated[Optional[Retriever], typer.Option("--retriever", help="How a request's context is used (as for transcribe).")] = None,
    fusion_weight: Annotated[Optional[float], typer.Option("--fusion-weight", help="Shallow fusion, torch backend (as for transcribe).")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's log level.")] = "info",
) -> None:
    """Serve OpenAI's transcription API with context, and a page for people, over HTTP.

    Every setting can also come from the environment as CTXASR_<NAME>
    (CTXASR_PORT, CTXASR_CONCURRENCY, ...); flags win.
    """
    from pydantic import ValidationError

    from ctxasr.server.run import serve as run_server
    from ctxasr.server.settings import MIB, ServerSettings

    given = {
        "host": host, "port": port, "model": model, "concurrency": concurrency,
        "max_queue": max_queue, "request_timeout": request_timeout,
        "shutdown_grace": shutdown_grace, "cpu_threads": threads,
        "backend": backend.value if backend else None,
        "retriever": retriever.value if retriever else None,
        "fusion_weight": fusion_weight,
        "max_upload_bytes": round(max_upload_mb * MIB) if max_upload_mb is not None else None,
    }  # fmt: skip
    try:
        settings = ServerSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        typer.echo(f"ctxasr: error: {where}: {first['msg']}", err=True)
        raise typer.Exit(2) from None
    with _user_errors():
        run_server(settings, log_level=log_level)


class Normalization(str, Enum):
    none = "none"
    whisper = "whisper"


@app.command()
def score(
    refs: Annotated[Path, typer.Option("--refs", help="Biasing reference TSV: id, text, JSON rare words[, biasing list].")],
    hyps: Annotated[Path, typer.Option("--hyps", help="Hypotheses TSV: id TAB text.")],
    normalize: Annotated[
        Normalization, typer.Option("--normalize", help="none: the benchmark's own scoring; whisper: Whisper's English normaliser on all sides.")
    ] = Normalization.none,
) -> None:
    """Score hypotheses as the LibriSpeech biasing benchmark does: WER, U-WER, B-WER."""
    with _user_errors():
        from ctxasr.eval import format_scores, read_hyps, read_refs, score_corpus

        scores = score_corpus(read_refs(refs), read_hyps(hyps), normalize=normalize.value)
        sys.stdout.write(format_scores(scores, normalize=normalize.value))


@app.command(name="eval")
def eval_(
    manifest: Annotated[Path, typer.Argument(help="NeMo-style JSONL manifest, or a biasing TSV with --audio-dir.")],
    audio_dir: Annotated[Optional[Path], typer.Option("--audio-dir", help="Audio folder for a biasing TSV (files named <id>.<ext>).")] = None,
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Where predictions, metrics, report and plot go.")] = Path("eval-out"),
    conditions: Annotated[
        Optional[list[str]], typer.Option("--condition", help="none, context (the manifest's terms) or oracle (true rare words). Repeatable.")
    ] = None,
    normalize: Annotated[Normalization, typer.Option("--normalize", help="Text normalisation before scoring.")] = Normalization.whisper,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="As for transcribe.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Transcribe a manifest and score it: WER, U-WER, B-WER per context condition, and RTFx."""
    with _user_errors():
        from ctxasr.audio import probe
        from ctxasr.eval.manifest import read_biasing_tsv, read_manifest
        from ctxasr.eval.run import evaluate, markdown_table, write_outputs
        from ctxasr.transcribe import Transcriber

        if manifest.suffix == ".jsonl":
            items = read_manifest(manifest)
        elif audio_dir is None:
            raise typer.BadParameter("a biasing TSV needs --audio-dir", param_hint="--audio-dir")
        else:
            items = read_biasing_tsv(manifest, audio_dir)
        chosen = conditions or (["none", "context"] if any(i.context for i in items) else ["none"])
        durations = {i.id: i.duration if i.duration is not None else (probe(i.audio).duration or 0.0) for i in items}
        transcriber = Transcriber(model)

        def recognize(audio, terms):
            result = transcriber.transcribe(audio, terms)
            return result.text, result.context_used

        with _progress(enabled=not quiet and sys.stderr.isatty()) as progress:
            report = evaluate(items, recognize, system=f"ctxasr ({transcriber.resolved.name})",
                              conditions=chosen, normalize=normalize.value, durations=durations,
                              progress=progress)
        paths = write_outputs(report, items, output_dir, title=f"ctxasr eval: {manifest.name}")
        sys.stdout.write(markdown_table([report]))
        sys.stdout.write("".join(f"wrote {p}\n" for p in paths.values()))


def _gather_context(term_files: list[Path], keywords: str | None, text_files: list[Path]):
    from ctxasr.context.terms import dedupe_terms, parse_keywords, read_term_file, read_text_file

    terms = []
    for path in term_files:
        terms.extend(read_term_file(path))
    if keywords is not None:
        terms.extend(parse_keywords(keywords))
    for path in text_files:
        from ctxasr.context.extract import terms_from_text

        terms.extend(terms_from_text(read_text_file(path), source=str(path)))
    return dedupe_terms(terms)


def _check_output(output: Path | None, audio: Path) -> None:
    if output is None:
        return
    if output.is_dir():
        raise CtxasrError(str(output), "is a directory; --output takes a file path")
    if output.exists() and audio.exists() and output.resolve() == audio.resolve():
        raise CtxasrError(str(output), "is the input recording; refusing to overwrite it")
    if not output.parent.exists():
        raise CtxasrError(str(output), f"folder {str(output.parent)!r} does not exist")


def _write(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from ctxasr.files import atomic_write

    # An interrupted run never leaves a half-written file in place of an earlier one.
    with atomic_write(output) as f:
        f.write(text)


class _user_errors:
    """Turn library errors into one line on stderr and exit status 1."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> bool:
        if err is None or isinstance(err, (typer.Exit, typer.Abort, SystemExit)):
            return False
        if os.environ.get("CTXASR_DEBUG"):
            return False
        if isinstance(err, KeyboardInterrupt):
            typer.echo("ctxasr: interrupted", err=True)
            raise typer.Exit(130)
        if isinstance(err, CtxasrError):
            message = str(err)
        elif isinstance(err, MemoryError):
            message = "out of memory"
        else:
            message = f"unexpected {type(err).__name__}: {err} (set CTXASR_DEBUG=1 for a traceback)"
        typer.echo(f"ctxasr: error: {' '.join(message.split())}", err=True)
        raise typer.Exit(1)


class _progress(ProgressBar):
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
        shown = f"{_clock(done)} / {_clock(total)}" if total else _clock(done)
        self._bar.update(self._task, completed=done, total=total, audio=shown, speed=speed)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _mount_subcommands() -> None:
    from ctxasr.batch.cli import batch
    from ctxasr.data.cli import data_app
    from ctxasr.train.cli import train_app

    app.command(name="batch")(batch)
    app.add_typer(data_app, name="data")
    app.add_typer(train_app, name="train")


_mount_subcommands()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
