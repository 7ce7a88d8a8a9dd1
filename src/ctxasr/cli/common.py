"""What the commands share: their options derived from the options dataclasses, the one
way errors leave the program, reading a context, writing an output, progress bars.

Errors: bad input ends with one line on stderr naming the input and the problem and
exit status 1; usage errors exit with 2 (click's convention). No traceback unless
``CTXASR_DEBUG=1`` is set.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import re
import sys
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from rich.markup import escape

from ctxasr.errors import CtxasrError
from ctxasr.options import (
    ModelOptions,
    Option,
    OptionError,
    TranscribeOptions,
    check_backend,
    shell_fields,
)

if typing.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ctxasr.context.terms import ContextTerm


@dataclasses.dataclass(frozen=True)
class _Flag:
    owner: type
    field: str
    spec: Option


def _flags(owners: tuple[type, ...], skip: tuple[str, ...]) -> dict[str, _Flag]:
    found = {}
    for owner in owners:
        for f in shell_fields(owner):
            if f.name not in skip:
                found[f.metadata["option"].name] = _Flag(owner, f.name, f.metadata["option"])
    return found


def _parameter(
    flag: _Flag, default_field: dataclasses.Field, given_only: bool
) -> inspect.Parameter:
    spec = flag.spec
    kind = typing.get_type_hints(flag.owner)[flag.field]
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    base = args[0] if args else kind
    default = default_field.default
    if base is bool:
        annotation: Any = bool
    elif spec.choices:
        annotation = Literal[spec.choices]
    elif spec.path:
        annotation = Path
    else:
        annotation = base
    if default is None and spec.auto is not None:
        default = spec.auto
    if given_only:
        default = None
    if default is None:
        annotation = Optional[annotation]  # noqa: UP045 - typer reads typing.Optional
    # Escaped: typer renders help as rich markup, where "[ray]" would vanish.
    info = typer.Option(*spec.flags, help=escape(spec.help), min=spec.min, max=spec.max,
                        show_default=default is not None)  # fmt: skip
    return inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[annotation, info])  # fmt: skip


def _value(flag: _Flag, value: Any) -> Any:
    if value is None:
        return None
    if flag.spec.auto is not None and value == flag.spec.auto:
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def with_options(
    *owners: type, skip: tuple[str, ...] = (), given_only: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the flags of the options classes ``owners`` (every field with an
    ``Option``, but those named in ``skip``), declared nowhere else.

    The command receives each options object, built and checked, in its parameter
    annotated with that class (a bad value or combination is a usage error naming the
    flag). With ``given_only`` (``serve``, whose settings also come
    from the environment) every flag defaults to unset and the command receives
    ``given``: the fields set on the command line, by name.
    """
    flags = _flags(owners, skip)
    defaults = {f.name: f for owner in owners for f in dataclasses.fields(owner)}

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(func, eval_str=True).parameters.values()
        receivers = {p.annotation: p.name for p in own if p.annotation in owners}
        kept = [p for p in own if p.annotation not in owners and p.name != "given"]
        added = [_parameter(f, defaults[f.field], given_only) for f in flags.values()]

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            values: dict[type, dict[str, Any]] = {owner: {} for owner in owners}
            for name, flag in flags.items():
                value = _value(flag, kwargs.pop(name))
                if value is not None or (not given_only and flag.spec.auto is not None):
                    values[flag.owner][flag.field] = value
            if given_only:
                kwargs["given"] = {k: v for d in values.values() for k, v in d.items()}
                return func(**kwargs)
            with option_errors(flags):
                built = {owner: owner(**values[owner]) for owner in owners}
                if TranscribeOptions in built and ModelOptions in built:
                    check_backend(built[TranscribeOptions], built[ModelOptions].backend)
            for owner, options in built.items():
                if owner in receivers:
                    kwargs[receivers[owner]] = options
            return func(**kwargs)

        parameters = [*kept, *added]
        command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        return command

    return decorate


@contextmanager
def option_errors(flags: dict[str, _Flag]) -> Iterator[None]:
    """Report an ``OptionError`` as a usage error (exit 2), in the flags' own names."""
    try:
        yield
    except OptionError as err:
        names = {f.field: f.spec.flags[0].split("/")[0] for f in flags.values()}
        message = re.sub(r"\b[a-z]+(?:_[a-z]+)*\b", lambda m: names.get(m[0], m[0]), str(err))
        hint = names.get(err.field)
        if hint is not None and message.startswith(hint):
            hint = None  # the message names the flag already
        raise typer.BadParameter(message, param_hint=hint) from None


class user_errors:
    """Turn library errors into one line on stderr and exit status 1."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> bool:
        if err is None or isinstance(err, (typer.Exit, typer.Abort, SystemExit)):
            return False
        if isinstance(err, typer.BadParameter):
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


def gather_context(
    term_files: list[Path], keywords: str | None, text_files: list[Path]
) -> tuple[list[ContextTerm], str | None]:
    """The terms of ``--context`` files, ``--keywords`` and ``--context-text`` files,
    de-duplicated, in that order; and the document: the ``--context-text`` files'
    texts, a blank line between them (None without any), for the domain LM."""
    from ctxasr.context.extract import terms_from_text
    from ctxasr.context.terms import (
        dedupe_terms,
        join_documents,
        parse_keywords,
        read_term_file,
        read_text_file,
    )

    terms = []
    for path in term_files:
        terms.extend(read_term_file(path))
    if keywords is not None:
        terms.extend(parse_keywords(keywords))
    texts = []
    for path in text_files:
        texts.append(read_text_file(path))
        terms.extend(terms_from_text(texts[-1], source=str(path)))
    return dedupe_terms(terms), join_documents(texts)


def check_output(output: Path | None, source: Path) -> None:
    """Refuse, before any work, an output that cannot or must not be written."""
    if output is None:
        return
    from ctxasr.files import check_output_file

    check_output_file(output)  # a folder, a FIFO, a missing folder, a name too long
    if output.exists() and source.exists() and output.resolve() == source.resolve():
        raise CtxasrError(str(output), "is the input recording; refusing to overwrite it")


def write(text: str, output: Path | None) -> None:
    """``text`` to stdout, or to ``output`` whole or not at all."""
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from ctxasr.files import atomic_write

    # An interrupted run never leaves a half-written file in place of an earlier one.
    with atomic_write(output) as f:
        f.write(text)


def show_progress(quiet: bool) -> bool:
    """Whether a command shows its progress bar: not asked to be quiet, on a terminal."""
    return not quiet and sys.stderr.isatty()


class ProgressBar:
    """A rich progress bar on stderr, or a no-op when disabled.

    ``with Bar(enabled) as progress:`` gives the callback to hand to the library (None
    when disabled). Subclasses say which columns to show and how a call updates them.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._task: Any = None

    def columns(self) -> list[Any]:
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """More keyword arguments for ``rich.progress.Progress``."""
        return {}

    def update(self, *args: Any) -> None:
        raise NotImplementedError

    def started(self) -> None:
        """Called once the bar shows (to add its task up front)."""

    def __enter__(self) -> Callable[..., None] | None:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import Progress

        self._bar = Progress(*self.columns(), console=Console(stderr=True), transient=True,
                             **self.options())  # fmt: skip
        self._bar.__enter__()
        self.started()
        return self.update

    def __exit__(self, *exc: object) -> bool:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False


def clock(seconds: float | None) -> str:
    """``h:mm:ss``, or ``?`` when unknown."""
    if seconds is None:
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
