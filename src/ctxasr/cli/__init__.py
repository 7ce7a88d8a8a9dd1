"""The ``ctxasr`` command line: thin commands that parse, call the library, write.

One module a command (``transcribe``, ``evaluate`` for eval and score, ``serve``,
``batch``, ``data``, ``train``) over ``common``: the flags derived from the options
dataclasses, the one-line errors (exit 1; usage errors exit 2), progress bars. This
module only mounts them; nothing below the shells imports any of it.
"""

from __future__ import annotations

import typer

from ctxasr.cli.batch import batch
from ctxasr.cli.data import data_app
from ctxasr.cli.evaluate import evaluate, score
from ctxasr.cli.serve import serve
from ctxasr.cli.train import train_app
from ctxasr.cli.transcribe import transcribe

app = typer.Typer(
    name="ctxasr",
    help="Contextual speech recognition: transcripts that get your terms right.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main() -> None:
    """Contextual speech recognition: transcripts that get your terms right."""


app.command()(transcribe)
app.command()(serve)
app.command()(score)
app.command(name="eval")(evaluate)
app.command(name="batch")(batch)
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")


def main() -> None:
    """Console-script entry point."""
    app()
