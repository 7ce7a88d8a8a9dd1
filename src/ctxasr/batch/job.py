"""A batch job, step by step: read the manifest, see what the output already holds, run
the rest on an engine, append each row as it finishes.

An engine is a function ``(tasks, setup, workers) -> Iterator[RowResult]`` that yields
rows in the order they finish (``workers`` and ``setup.threads`` 0: sized for the CPUs
the engine has). ``local`` runs worker processes on this machine, ``ray`` runs Ray Data
(one machine or a cluster). Both call ``rows.transcribe_row``, so with the same threads
their rows are equal.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ctxasr.batch.output import (
    AppendLog,
    OutputLock,
    check_output,
    drop_error_rows,
    read_finished,
)
from ctxasr.batch.rows import RowResult, Task, pending, read_tasks
from ctxasr.batch.workers import WorkerSetup
from ctxasr.context.terms import ContextTerm
from ctxasr.options import (
    ModelOptions,
    OptionError,
    TranscribeOptions,
    check_backend,
    check_fields,
    option,
)

ENGINES = ("local", "ray")

# (rows finished, resumed ones included; rows in the manifest; error rows so far)
BatchProgressCallback = Callable[[int, int, int], None]
Engine = Callable[[Sequence[Task], WorkerSetup, int], Iterator[RowResult]]


@dataclass(frozen=True)
class BatchOptions:
    """How a batch job runs. Rows do not depend on the engine or the number of workers
    (threads per worker can change a decoder's arithmetic: keep them to compare runs)."""

    engine: str = option(
        "local", "local: worker processes on this machine; ray: Ray Data, on this machine or "
        "the cluster at --ray-address / $RAY_ADDRESS (pip install 'ctxasr[ray]').",
        "--engine", choices=ENGINES,
    )  # fmt: skip
    workers: int = option(
        0, "Worker processes (Ray: actors), each with its own model. 0: one per CPU, at most 8.",
        "--workers", min=0, max=256,
    )  # fmt: skip
    threads: int = option(
        0, "CPU threads per worker. 0: the CPUs (Ray: the cluster's) shared out among the "
        "workers.", "--threads", min=0,
    )  # fmt: skip
    model: str | None = option(
        None, "As for transcribe: tiny.en (packaged, default), a CTranslate2 model directory, "
        "or a faster-whisper model name.", "--model", "-m",
    )  # fmt: skip
    transcribe: TranscribeOptions = field(default_factory=TranscribeOptions)
    # Its cpu_threads is ``threads``'s to set.
    model_options: ModelOptions = field(default_factory=ModelOptions)
    retry_errors: bool = option(
        False, "Re-run rows the output holds with an error.", "--retry-errors"
    )
    ray_address: str | None = option(
        None, "Ray cluster to join (default: $RAY_ADDRESS, else a local Ray).", "--ray-address"
    )

    def __post_init__(self) -> None:
        if self.workers < 0 or self.threads < 0:  # one message for the pair, as 0 is automatic
            raise OptionError("workers", "workers and threads must be >= 0 (0: automatic)")
        check_fields(self)
        check_backend(self.transcribe, self.model_options.backend)


@dataclass(frozen=True)
class BatchSummary:
    """What a job did. ``done`` and ``errors`` count this run's rows only."""

    output: Path
    total: int  # rows in the manifest
    done: int  # rows written by this run, errors included
    skipped: int  # rows the output already held (resumed)
    errors: int  # rows written by this run with an error
    audio_seconds: float  # audio decoded by this run
    elapsed: float  # seconds, model loading included
    earlier_errors: int = 0  # skipped rows that hold an error (see retry_errors)

    @property
    def real_time_factor(self) -> float | None:
        """Seconds of work per second of audio (lower is faster); None with no audio."""
        return self.elapsed / self.audio_seconds if self.audio_seconds > 0 else None


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped the job; the rows it finished are in the output."""

    def __init__(self, summary: BatchSummary) -> None:
        super().__init__(f"interrupted after {summary.done} rows")
        self.summary = summary


def run_batch(
    manifest: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: BatchOptions = BatchOptions(),
    terms: Iterable[ContextTerm] = (),
    progress: BatchProgressCallback | None = None,
    *,
    document: str | None = None,
) -> BatchSummary:
    """Transcribe every row of ``manifest`` into ``output`` (JSONL), resuming a job
    that stopped: rows ``output`` already holds are skipped.

    ``terms`` are offered with every row, after the row's own context; ``document``
    (free text, as ``--context-text``) comes before each row's own document.

    Raises:
        CtxasrError: a bad manifest, an output that is a directory, the manifest,
            another manifest's results, or being written by another job (see
            :class:`~ctxasr.batch.output.OutputLock`), or a model that cannot load.
            Nothing is written.
        BatchInterrupted: Ctrl-C; the finished rows are in ``output``.
    """
    return _Job(Path(manifest), Path(output), options, tuple(terms), progress, document).run()


class _Job:
    def __init__(
        self,
        manifest: Path,
        output: Path,
        options: BatchOptions,
        terms: tuple[ContextTerm, ...],
        progress: BatchProgressCallback | None,
        document: str | None = None,
    ) -> None:
        self.manifest, self.output, self.options = manifest, output, options
        self.terms, self.progress, self.document = terms, progress, document
        self.started = time.monotonic()
        self.total = self.skipped = self.done = self.errors = self.earlier_errors = 0
        self.audio_seconds = 0.0

    def run(self) -> BatchSummary:
        tasks = read_tasks(self.manifest, self.terms, self.document)
        check_output(self.output, self.manifest)
        # Before the output is read (and its torn end cut off): one job an output.
        with OutputLock(self.output):
            todo = self.prepare(tasks)
            if todo:
                self.execute(todo)
        return self.summary()

    def prepare(self, tasks: list[Task]) -> list[Task]:
        """See what the output holds; return the rows left to do."""
        finished = read_finished(self.output, tasks)
        lines = finished.lines
        if self.options.retry_errors and finished.errors:
            drop_error_rows(self.output)
            lines = lines - finished.errors
        self.total, self.skipped = len(tasks), len(lines)
        self.earlier_errors = len(finished.errors & lines)
        return pending(tasks, lines)

    def execute(self, todo: list[Task]) -> None:
        from ctxasr.models import resolve_model

        # Resolve (and if need be download) the model once here, not in every worker at
        # once, and so that a bad --model fails before anything is written.
        resolve_model(self.options.model)
        opts = self.options
        # Workers and threads left at 0 are sized by the engine, which knows its CPUs.
        setup = WorkerSetup(opts.model, opts.transcribe, opts.model_options, opts.threads)
        results = _engine(opts)(todo, setup, opts.workers)
        self.report()
        try:
            with contextlib.closing(AppendLog(self.output)) as log:
                for result in results:
                    log.write(result.row)
                    self.count(result)
        except KeyboardInterrupt:
            raise BatchInterrupted(self.summary()) from None
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()

    def count(self, result: RowResult) -> None:
        self.done += 1
        self.errors += result.failed
        self.audio_seconds += result.audio_seconds
        self.report()

    def report(self) -> None:
        if self.progress is not None:
            errors = self.earlier_errors + self.errors
            self.progress(self.skipped + self.done, self.total, errors)

    def summary(self) -> BatchSummary:
        return BatchSummary(
            output=self.output,
            total=self.total,
            done=self.done,
            skipped=self.skipped,
            errors=self.errors,
            audio_seconds=self.audio_seconds,
            elapsed=time.monotonic() - self.started,
            earlier_errors=self.earlier_errors,
        )


def _engine(options: BatchOptions) -> Engine:
    if options.engine == "ray":
        from ctxasr.batch.ray_engine import run_ray

        return functools.partial(run_ray, address=options.ray_address)
    from ctxasr.batch.local import run_local

    return run_local
