"""``ctxasr data``: build benchmark data. Mounted by ``ctxasr.cli`` as
``app.add_typer(data_app, name="data")``.

Thin commands: parse, call :mod:`ctxasr.data.biasing`, :mod:`ctxasr.data.synth` or
:mod:`ctxasr.data.documents`, print a one-line summary on stderr. Errors take the main
CLI's path (one line, exit 1): ``ctxasr.cli`` is imported inside each command, when it
is fully loaded, so importing this module from it makes no cycle.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from ctxasr.cli.common import user_errors
from ctxasr.errors import CtxasrError

data_app = typer.Typer(
    name="data",
    help="Build benchmark data: biasing lists of any size, synthetic speech of reference "
    "texts, documents as context.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@data_app.command("biasing-lists")
def biasing_lists(
    refs: Annotated[
        Path,
        typer.Option(
            "--refs", help="Benchmark reference TSV: id, text, JSON rare words[, biasing list]."
        ),
    ],
    pool: Annotated[
        Path, typer.Option("--pool", help="Distractor words, one a line (all_rare_words.txt).")
    ],
    n: Annotated[
        int, typer.Option("-n", "--size", min=0, max=100_000, help="Distractors per utterance (N).")
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="Reference TSV to write, with the biasing lists as column 4."
        ),
    ],
    seed: Annotated[
        int, typer.Option("--seed", help="Random seed: the same seed writes the same file.")
    ] = 0,
    shuffle: Annotated[
        bool, typer.Option("--shuffle", help="Shuffle each list (default: sorted, as published).")
    ] = False,
) -> None:
    """Biasing lists as in Le et al. 2021: each utterance's rare words plus N random distractors."""
    with user_errors():
        from ctxasr.data.biasing import make_biasing_refs

        count, size = make_biasing_refs(refs, pool, n, seed, output, shuffle=shuffle)
        typer.echo(f"{output}: {count} utterances, N={n}, {size / 1e6:.1f} MB", err=True)


@data_app.command("synth")
def synth(
    n: Annotated[
        int,
        typer.Option("-n", "--count", min=0, help="Utterances to pick from each reference file."),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for audio/ and manifest.jsonl.")
    ],
    refs: Annotated[
        list[Path] | None, typer.Option("--refs", help="Benchmark reference TSV. Repeatable.")
    ] = None,
    sentences: Annotated[
        Path | None,
        typer.Option(
            "--sentences",
            help="Training text instead of (or besides) --refs: one sentence a line, "
            "lower case (text/sentences.norm.txt); lines with digits are skipped.",
        ),
    ] = None,
    max_words: Annotated[
        int, typer.Option("--max-words", min=1, help="Longest --sentences line to speak.")
    ] = 40,
    min_rare: Annotated[
        int,
        typer.Option("--min-rare-words", min=0, help="Fewest rare words a --sentences line needs."),
    ] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Random seed for the selection.")] = 0,
    voices: Annotated[
        str | None,
        typer.Option("--voices", help="Comma-separated espeak-ng voices to cycle through."),
    ] = None,
    rates: Annotated[
        str | None,
        typer.Option("--rates", help="Comma-separated speaking rates, words per minute."),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=64, help="Concurrent TTS processes.")
    ] = 2,
    engines: Annotated[
        str | None,
        typer.Option(
            "--engines",
            help="Comma-separated engines whose default voices to cycle through: "
            "espeak-ng, flite, festival, piper, hibari, kokoro (ignored with --voices).",
        ),
    ] = None,
    augment: Annotated[
        str | None,
        typer.Option(
            "--augment",
            help="Augmentation preset: none, hard (training data) or test-other (evaluation; ctxasr.data.augment).",
        ),
    ] = None,
) -> None:
    """Speak a seeded sample of reference texts with TTS voices: 16 kHz WAVs and a manifest."""
    with user_errors():
        from ctxasr.data.augment import PRESETS
        from ctxasr.data.engines import engine_voices
        from ctxasr.data.synth import SynthOptions, read_sentence_rows, synth_dataset

        if not refs and sentences is None:
            raise CtxasrError("synth", "give --refs or --sentences: there is nothing to speak")
        texts = [] if sentences is None else [
            (sentences.name, read_sentence_rows(sentences, max_words=max_words, min_rare=min_rare))]  # fmt: skip

        options = SynthOptions(workers=workers)
        if engines is not None:
            voices_of = engine_voices(_split(engines, "--engines"), options.voices)
            options = dataclasses.replace(options, voices=voices_of)
        if augment is not None:
            if augment not in PRESETS:
                raise CtxasrError(
                    "--augment", f"unknown preset {augment!r}; known: {', '.join(PRESETS)}"
                )
            options = dataclasses.replace(options, augment=PRESETS[augment], augment_name=augment)
        if voices is not None:
            options = dataclasses.replace(options, voices=_split(voices, "--voices"))
        if rates is not None:
            options = dataclasses.replace(options, rates=_ints(rates, "--rates"))
        spoken = synth_dataset(refs or [], n, seed, output, options, sentences=texts)
        hours = sum(u.duration for u in spoken) / 3600
        typer.echo(f"{output}: {len(spoken)} utterances, {hours:.2f} h of audio", err=True)


@data_app.command("documents")
def documents(
    refs: Annotated[
        list[Path],
        typer.Option(
            "--refs", help="Benchmark reference TSV (LibriSpeech utterance ids). Repeatable."
        ),
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Folder for documents/ and manifest.jsonl."),
    ],
    audio: Annotated[
        Path | None,
        typer.Option(
            "--audio", help="Audio folder: files named <id>.<ext>, flat or speaker/chapter."
        ),
    ] = None,
    audio_manifest: Annotated[
        Path | None,
        typer.Option("--audio-manifest", help="NeMo manifest whose rows' ids name the audio."),
    ] = None,
) -> None:
    """The document benchmark: each utterance's context is the rest of its chapter's text."""
    with user_errors():
        from ctxasr.data.documents import make_document_set

        summary = make_document_set(refs, output, audio_dir=audio, audio_manifest=audio_manifest)
        typer.echo(f"{output}: {summary}", err=True)


def _split(value: str, option: str) -> tuple[str, ...]:
    items = tuple(part.strip() for part in value.split(",") if part.strip())
    if not items:
        raise CtxasrError(option, "is empty")
    return items


def _ints(value: str, option: str) -> tuple[int, ...]:
    parts = _split(value, option)
    try:
        return tuple(int(part) for part in parts)
    except ValueError:
        raise CtxasrError(
            option, f"expected whole numbers separated by commas, got {value!r}"
        ) from None


@data_app.command("retriever-set")
def retriever_set(
    output: Annotated[Path, typer.Argument(help="Folder for the set (resumes if it exists).")],
    train: Annotated[int, typer.Option("--train", min=1, help="Training examples.")] = 3000,
    dev: Annotated[int, typer.Option("--dev", min=0, help="Held-out examples.")] = 300,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64)] = 2,
    voices: Annotated[
        str | None,
        typer.Option(
            "--voices",
            help="Comma-separated voices as synth takes them (ENGINE:NAME; a bare name is "
            "espeak-ng's). Default: every installed voice of every engine but five kept out "
            "of training (ctxasr.a2p.data.HELD_OUT_VOICES).",
        ),
    ] = None,
    sentences: Annotated[
        Path | None,
        typer.Option(
            "--sentences",
            help="Training text, one sentence a line (default: "
            "/work/shared/data/text/sentences.txt, public-domain books).",
        ),
    ] = None,
    pool: Annotated[
        Path | None,
        typer.Option(
            "--pool",
            help="Distractor words, one a line, for hard negatives "
            "(default: /work/shared/data/librispeech-biasing/words/"
            "all_rare_words.txt).",
        ),
    ] = None,
) -> None:
    """Training data for the A2P retriever: synthetic 30 s stretches, encoder frames, terms."""
    with user_errors():
        from ctxasr.a2p.data import SetOptions, build_retriever_set

        chosen = _split(voices, "--voices") if voices is not None else ()
        paths = {k: str(v) for k, v in (("sentences", sentences), ("pool", pool)) if v is not None}
        options = SetOptions(train=train, dev=dev, seed=seed, workers=workers, voices=chosen,
                             **paths)  # fmt: skip
        counts = build_retriever_set(options, output, log=lambda m: typer.echo(m, err=True))
        typer.echo(f"{output}: {counts['train']} train, {counts['dev']} dev examples", err=True)
