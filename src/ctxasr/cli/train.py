"""``ctxasr train``: train a model from a recipe (a TOML config file). Mounted by
``ctxasr.cli`` as ``app.add_typer(train_app, name="train")``; errors take the main CLI's
path (one line, exit 1)."""

from __future__ import annotations

from pathlib import Path
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
        from ctxasr.a2p.train import read_config, train

        cfg = read_config(config)
        with _StepBar(enabled=show_progress(quiet)) as progress:
            scores = train(cfg, progress)
        typer.echo(f"{cfg.out}: trained {cfg.steps} steps; held-out {scores}", err=True)


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
        from ctxasr.speechllm.train import read_config, train

        cfg = read_config(config)
        with _StepBar(enabled=show_progress(quiet)) as progress:
            scores = train(cfg, progress)
        typer.echo(f"{cfg.out}: trained {cfg.steps} steps; dev {scores}", err=True)
