"""``ctxasr eval`` and ``ctxasr score``: the LibriSpeech biasing benchmark's measures
(WER, U-WER, B-WER) of a manifest this command transcribes, or of hypotheses made
elsewhere."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from ctxasr.cli.common import show_progress, user_errors, with_options
from ctxasr.cli.transcribe import TimeBar
from ctxasr.eval.score import NORMALIZATIONS
from ctxasr.options import ModelOptions, TranscribeOptions


def score(
    refs: Annotated[
        Path,
        typer.Option(
            "--refs", help="Biasing reference TSV: id, text, JSON rare words[, biasing list]."
        ),
    ],
    hyps: Annotated[Path, typer.Option("--hyps", help="Hypotheses TSV: id TAB text.")],
    normalize: Annotated[
        Literal[NORMALIZATIONS],
        typer.Option(
            "--normalize",
            help="none: the benchmark's own scoring; whisper: Whisper's English normaliser on all sides.",
        ),
    ] = "none",
) -> None:
    """Score hypotheses as the LibriSpeech biasing benchmark does: WER, U-WER, B-WER."""
    with user_errors():
        from ctxasr.eval import format_scores, read_hyps, read_refs, score_corpus

        scores = score_corpus(read_refs(refs), read_hyps(hyps), normalize=normalize)
        sys.stdout.write(format_scores(scores, normalize=normalize))


@with_options(TranscribeOptions, ModelOptions, skip=("word_timestamps",))
def evaluate(
    manifest: Annotated[
        Path, typer.Argument(help="NeMo-style JSONL manifest, or a biasing TSV with --audio-dir.")
    ],
    audio_dir: Annotated[
        Path | None,
        typer.Option(
            "--audio-dir", help="Audio folder for a biasing TSV (files named <id>.<ext>)."
        ),
    ] = None,
    output_dir: Annotated[
        Path,
        typer.Option("--output-dir", "-o", help="Where predictions, metrics, report and plot go."),
    ] = Path("eval-out"),
    conditions: Annotated[
        list[str] | None,
        typer.Option(
            "--condition",
            help="none, context (the manifest's terms) or oracle (true rare words). Repeatable.",
        ),
    ] = None,
    normalize: Annotated[
        Literal[NORMALIZATIONS],
        typer.Option("--normalize", help="Text normalisation before scoring."),
    ] = "whisper",
    model: Annotated[str | None, typer.Option("--model", "-m", help="As for transcribe.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    *,
    options: TranscribeOptions,
    model_options: ModelOptions,
) -> None:
    """Transcribe a manifest and score it: WER, U-WER, B-WER per context condition, and RTFx."""
    with user_errors():
        from ctxasr.audio import probe
        from ctxasr.context.terms import ContextTerm
        from ctxasr.eval.manifest import read_biasing_tsv, read_manifest
        from ctxasr.eval.run import evaluate, markdown_table, write_outputs
        from ctxasr.transcribe import Transcriber

        if manifest.suffix == ".jsonl":
            items = read_manifest(manifest)
        elif audio_dir is None:
            raise typer.BadParameter("a biasing TSV needs --audio-dir", param_hint="--audio-dir")
        else:
            items = read_biasing_tsv(manifest, audio_dir)
        has_context = any(i.context or i.context_text for i in items)
        chosen = conditions or (["none", "context"] if has_context else ["none"])
        durations = {i.id: i.duration if i.duration is not None else (probe(i.audio).duration or 0.0)
                     for i in items}  # fmt: skip
        transcriber = Transcriber(model, options, model_options)

        # The manifest's term weights, which the scoring loop's plain term lists leave out.
        weights = {i.audio: {t.text: t.weight for t in i.terms} for i in items if i.weights}

        def recognize(audio, terms, document):
            given = weights.get(audio, {})
            terms = [ContextTerm(t, given.get(t, 1.0)) for t in terms]
            result = transcriber.transcribe(audio, terms, document=document)
            return result.text, result.context_used

        with TimeBar(enabled=show_progress(quiet)) as progress:
            report = evaluate(items, recognize, system=f"ctxasr ({transcriber.resolved.name})",
                              conditions=chosen, normalize=normalize, durations=durations,
                              progress=progress)  # fmt: skip
        paths = write_outputs(report, items, output_dir, title=f"ctxasr eval: {manifest.name}")
        sys.stdout.write(markdown_table([report]))
        sys.stdout.write("".join(f"wrote {p}\n" for p in paths.values()))
