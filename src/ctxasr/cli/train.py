"""``ctxasr train``: train a model from a recipe (a TOML config file). Mounted by
``ctxasr.cli`` as ``app.add_typer(train_app, name="train")``; errors take the main CLI's
path (one line, exit 1)."""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer

from ctxasr.cli.common import ProgressBar, show_progress, user_errors

train_app = typer.Typer(
    name="train",
    help="Train ctxasr's models from a config file (seeded; rerun the command to resume).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class _StepBar(ProgressBar):
    def columns(self) -> list:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

        return [TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn()]  # fmt: skip

    def started(self) -> None:
        self._task = self._bar.add_task("train", total=None, loss="-")

    def update(self, step: int, total: int, loss: float) -> None:
        self._bar.update(self._task, completed=step, total=total, loss=f"{loss:.4f}")


@train_app.command("retriever")
def retriever(
    config: Annotated[
        Path,
        typer.Argument(
            help="Recipe: a TOML file with [train] and [model] tables (configs/retriever/)."
        ),
    ],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train the A2P retriever (audio scorer of --retriever hybrid/a2p); resumes a stopped run."""
    with user_errors():
        from ctxasr.a2p import train

        _run(train, config, quiet, "held-out")


@train_app.command("speechllm")
def speechllm(
    config: Annotated[
        Path,
        typer.Argument(
            help="Recipe: a TOML file with [train] and [model] tables (configs/speechllm/)."
        ),
    ],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train the LLM-based contextual recognizer (SAP²-ASR); resumes a stopped run."""
    with user_errors():
        from ctxasr.speechllm import train

        _run(train, config, quiet, "dev")


@train_app.command("madeon")
def madeon(
    config: Annotated[
        Path,
        typer.Argument(
            help="Recipe: a YAML or TOML file with train, model and tokenizer tables "
            "(configs/madeon-tiny.yaml, configs/madeon/)."
        ),
    ],
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Train this many steps instead.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="The run's folder instead of the recipe's.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train a MADEON decoder-only recognizer (Mamba, Mamba-2 or Transformer over speech
    tokens); fits the recipe's speech tokenizer first; resumes a stopped run."""
    with user_errors():
        from ctxasr.madeon import train

        _train(train, train.read_recipe(config, max_steps, out), quiet, "dev")


@train_app.command("tokenizer")
def tokenizer(
    config: Annotated[
        Path,
        typer.Argument(help="Recipe: a TOML file with a [tokenizer] table (configs/madeon/)."),
    ],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Fit MADEON's speech tokens: k-means units of a frozen encoder's frames and one
    SentencePiece vocabulary of speech and text pieces."""
    with user_errors():
        from ctxasr.madeon import tokens

        cfg = tokens.read_config(config)
        # no steps to resume: one pass, with a bar over each stage's utterances
        with _StageBar(enabled=show_progress(quiet)) as progress:
            s = tokens.fit_tokenizer(cfg, progress)
        typer.echo(f"{cfg.out}: {s['clusters']} units, {s['vocab']} pieces ({s['speech_pieces']} "
                   f"speech, {s['text_pieces']} text) from {s['utterances']} utterances; "
                   f"{s['units_per_second']} units/s, {s['speech_pieces_per_second']} speech "
                   "pieces/s", err=True)  # fmt: skip


class _StageBar(ProgressBar):
    def columns(self) -> list:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

        return [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeRemainingColumn()]  # fmt: skip

    def started(self) -> None:
        self._task = self._bar.add_task("reading", total=None)

    def update(self, stage: str, done: int, total: int) -> None:
        self._bar.update(self._task, description=stage, completed=done, total=total)


class _StepLog:
    """Where stderr is no terminal (a log file, CI), a plain line every ``total / lines``
    steps instead of the bar: the step, the smoothed loss and the pace."""

    def __init__(self, lines: int = 50) -> None:
        self.lines, self.first, self.start = lines, None, time.monotonic()

    def __call__(self, step: int, total: int, loss: float) -> None:
        if self.first is None:  # a resumed run starts past 0: pace from here
            self.first, self.start = step - 1, time.monotonic()
        every = max(1, total // self.lines)
        if step % every and step != total:
            return
        pace = (time.monotonic() - self.start) / max(1, step - self.first)
        typer.echo(f"step {step}/{total}  loss {loss:.4f}  {pace:.2f} s/step", err=True)


def _run(recipe: ModuleType, config: Path, quiet: bool, scored_on: str) -> None:
    """Read the recipe's config and train it (``_train``)."""
    _train(recipe, recipe.read_config(config), quiet, scored_on)


def _train(recipe: ModuleType, cfg, quiet: bool, scored_on: str) -> None:
    """Train ``cfg`` with a step bar (or step lines when stderr is no terminal), end with
    one line of scores."""
    total = [cfg.steps]  # as the recipe counts them: a speech LLM's CTC stage is in it

    def counting(progress):
        def report(step: int, steps: int, loss: float) -> None:
            total[0] = steps
            if progress is not None:  # a quiet bar is None
                progress(step, steps, loss)

        return report

    if not quiet and not show_progress(quiet):
        scores = recipe.train(cfg, counting(_StepLog()))
    else:
        with _StepBar(enabled=show_progress(quiet)) as progress:
            scores = recipe.train(cfg, counting(progress))
    typer.echo(f"{cfg.out}: trained {total[0]} steps; {scored_on} {scores}", err=True)
