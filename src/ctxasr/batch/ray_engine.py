"""The Ray Data engine: the same job on one machine or a cluster, unchanged.

The driver keeps everything that makes a job resumable (the manifest, the output, the
append-only writer); Ray only transcribes. Rows go to an actor pool, each actor holding
one model loaded once, and come back to the driver, which appends them as they arrive.

Rows cross Ray as one JSON string each: manifest rows have any fields of any type, and
Arrow would make one table schema out of them (a field that is a number in one row and
a string in the next fails; a field missing from some rows comes back as null).

Audio paths are made absolute on the driver: on a cluster the recordings must be on a
filesystem every node mounts at the same path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ctxasr.batch.rows import (
    RowResult,
    Task,
    one_line,
    task_from_json,
    task_to_json,
    transcribe_row,
)
from ctxasr.batch.workers import WorkerSetup, plan
from ctxasr.errors import CtxasrError

# Blocks of the dataset: one row each up to this many, so each row comes back (and is
# appended) as soon as it is done; past it, rows share blocks to bound Ray's per-block
# bookkeeping, and come back a block at a time.
MAX_BLOCKS = 10_000
RETRIES = 2
DIED = ("Ray worker died while transcribing this row (a crash in the decoder, or out "
        "of memory?); --retry-errors re-runs it")  # fmt: skip


def run_ray(
    tasks: Sequence[Task], setup: WorkerSetup, workers: int, address: str | None = None
) -> Iterator[RowResult]:
    """Transcribe ``tasks`` on ``workers`` Ray actors of ``setup.threads`` CPUs each
    (0s: sized for the cluster's CPUs as the local engine is for this machine's).

    Joins the Ray at ``address`` (None: ``$RAY_ADDRESS`` if set, else a new local
    one), unless this process is already connected; a Ray it started, it shuts down.
    """
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)  # fmt: skip
    try:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        workers, threads = plan(workers, setup.threads, cpus, len(tasks))
        yield from _results(ray, tasks, dataclasses.replace(setup, threads=threads), workers)
    finally:
        if started:
            ray.shutdown()


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise CtxasrError("--engine ray needs Ray", "pip install 'ctxasr[ray]'") from None
    return ray


def _results(
    ray: Any, tasks: Sequence[Task], setup: WorkerSetup, workers: int
) -> Iterator[RowResult]:
    with warnings.catch_warnings():
        # Ray's own deprecations (its DataContext warns on being copied; remote args as
        # keywords are deprecated with no other way to bound task retries yet): nothing
        # a user of ctxasr can act on.
        warnings.simplefilter("ignore", DeprecationWarning)
        dataset = ray.data.from_items([{"task": task_to_json(t)} for t in tasks],
                                      override_num_blocks=min(len(tasks), MAX_BLOCKS))  # fmt: skip
        _configure(dataset.context)
        dataset = dataset.map_batches(
            RayTranscriber,
            fn_constructor_kwargs={"setup": setup},
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),  # each loads the model once
            num_cpus=setup.threads,
            # A recording that kills its actor (a decoder crash, out of memory) is tried
            # again on a fresh actor this many times, then its block is given up (see
            # _configure) and its rows reported as errors, as the local engine does.
            max_task_retries=RETRIES,
        )
    returned: set[int] = set()
    try:
        with _quiet_logger("ray.data"):
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                for row, seconds, failure in zip(batch["row"], batch["audio_seconds"],
                                                 batch["setup_error"]):  # fmt: skip
                    if failure:
                        raise CtxasrError("worker", f"cannot load the model: {failure}")
                    result = RowResult(json.loads(row), float(seconds))
                    returned.add(result.line)
                    yield result
    except ray.exceptions.RayError as err:
        raise CtxasrError("--engine ray", _reason(err)) from None
    for task in tasks:
        if task.line not in returned:
            yield task.failed(DIED)


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Only errors from ``name`` while the job runs (Ray Data logs each execution)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _configure(context: Any) -> None:
    """Settings of one dataset (its own copy of the DataContext)."""
    # Our progress bar and summary speak for the job; Ray Data's would interleave.
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False
    # Go on past blocks whose task failed RETRIES times: their rows become error rows.
    context.max_errored_blocks = -1


def _reason(err: Exception) -> str:
    """The root cause of a Ray error in one line (Ray's messages are tracebacks)."""
    cause: BaseException = err
    while cause.__cause__ is not None:
        cause = cause.__cause__
    lines = [line for line in str(cause).splitlines() if line.strip()]
    return one_line(lines[-1] if lines else type(cause).__name__)


class RayTranscriber:
    """A Ray Data actor: one model, loaded once; one row per call."""

    def __init__(self, setup: WorkerSetup) -> None:
        # A model that fails to load is reported with each row rather than raised:
        # Ray would retry a failing actor forever, and the driver should stop the job.
        self.transcriber, self.setup_error = None, ""
        try:
            self.transcriber = setup.load()
        except Exception as err:  # noqa: BLE001 - goes back to the driver as text
            self.setup_error = one_line(str(err) if isinstance(err, CtxasrError)
                                        else f"{type(err).__name__}: {err}")  # fmt: skip

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tasks = [task_from_json(str(t)) for t in batch["task"]]
        if self.transcriber is None:
            rows, seconds = [""] * len(tasks), [0.0] * len(tasks)
        else:
            results = [transcribe_row(self.transcriber, t) for t in tasks]
            # ASCII JSON: a lone surrogate in a field would not survive Arrow's UTF-8.
            rows = [json.dumps(r.row) for r in results]
            seconds = [r.audio_seconds for r in results]
        return {
            "row": np.array(rows, dtype=object),
            "audio_seconds": np.array(seconds, dtype=np.float64),
            "setup_error": np.array([self.setup_error] * len(tasks), dtype=object),
        }
