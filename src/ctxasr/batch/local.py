"""The local engine: worker processes on this machine, each loading the model once.

Rows run in worker processes even with one worker, so that one behaviour holds for any
``--workers``: a recording that crashes the decoder (or the OOM killer) takes down a
worker, not the job. The pool is started fresh after such a death; rows that were in
flight beside the dying one are re-run one at a time, so only the row that kills a
worker alone is marked "worker process died".

Workers ignore SIGINT and SIGTERM: the driver decides when they stop (Ctrl-C reaches
the whole process group, and a worker killed by it would look like a crash). A worker
whose driver is gone (SIGKILL, OOM) notices within a second and exits.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from ctxasr.batch.rows import RowResult, Task, one_line, transcribe_row
from ctxasr.batch.workers import WorkerSetup, plan
from ctxasr.cpus import cpu_count
from ctxasr.errors import CtxasrError

# Pools in a row that may die before finishing a single row: past this the cause is
# not a recording (a model that crashes while loading, a machine out of memory).
MAX_FRUITLESS_POOLS = 3
DIED = ("worker process died while transcribing this row (a crash in the decoder, or "
        "out of memory?); --retry-errors re-runs it")  # fmt: skip


def run_local(tasks: Sequence[Task], setup: WorkerSetup, workers: int) -> Iterator[RowResult]:
    """Transcribe ``tasks`` on ``workers`` processes (0: one per CPU, see ``workers``)
    of ``setup.threads`` threads (0: the CPUs shared out); rows come as they finish.

    Raises:
        CtxasrError: the model cannot load in a worker, or workers keep dying.
    """
    workers, threads = plan(workers, setup.threads, cpu_count(), len(tasks))
    setup = dataclasses.replace(setup, threads=threads)
    queue, suspects = deque(tasks), deque[Task]()
    fruitless = 0
    while queue or suspects:
        pool = _Pool(setup, workers)
        try:
            yield from pool.run(queue, suspects)
        finally:
            pool.stop()
        fruitless = 0 if pool.finished_any else fruitless + 1
        if fruitless >= MAX_FRUITLESS_POOLS:
            raise CtxasrError("worker", f"worker processes died {fruitless} times in a row "
                              "before finishing a row; is the machine out of memory?")  # fmt: skip


class _Pool:
    """One process pool, run until the work is done or a worker dies."""

    def __init__(self, setup: WorkerSetup, workers: int) -> None:
        self.workers = workers
        self.executor = ProcessPoolExecutor(
            max_workers=workers,
            # spawn: a fork of a driver that has threads (rich's refresh, the pool's own
            # manager) may inherit a held lock and hang.
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(setup, os.getpid()),
        )
        self.in_flight: dict[Future[RowResult], Task] = {}
        self.finished_any = False
        self.broken = False

    def run(self, queue: deque[Task], suspects: deque[Task]) -> Iterator[RowResult]:
        """Yield rows as they finish; return when all are done or the pool broke."""
        try:
            while (queue or suspects or self.in_flight) and not self.broken:
                self.fill(queue, suspects)
                done, _ = wait(self.in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    result = self.collect(future)
                    if result is not None:
                        yield result
                if self.broken:
                    yield from self.after_death(suspects)
        except KeyboardInterrupt:
            # Rows that finished while Ctrl-C arrived are still written.
            yield from self.harvest()
            raise

    def fill(self, queue: deque[Task], suspects: deque[Task]) -> None:
        # Only as many rows in flight as workers: a dying worker takes no queued rows
        # with it, and Ctrl-C leaves nothing submitted but not started.
        while len(self.in_flight) < self.workers and not self.broken:
            if suspects:  # alone, so that a second death names its row
                if self.in_flight:
                    return
                task = suspects.popleft()
            elif queue:
                task = queue.popleft()
            else:
                return
            try:
                self.in_flight[self.executor.submit(_work, task)] = task
            except BrokenProcessPool:
                (suspects if suspects else queue).appendleft(task)
                self.broken = True

    def collect(self, future: Future[RowResult]) -> RowResult | None:
        task = self.in_flight.pop(future)
        try:
            result = future.result()
        except BrokenProcessPool:
            self.broken = True
            self.in_flight[future] = task  # settled with the others in after_death
            return None
        except _WorkerSetupError as err:
            raise CtxasrError("worker", f"cannot load the model: {err}") from None
        self.finished_any = True
        return result

    def after_death(self, suspects: deque[Task]) -> Iterator[RowResult]:
        """Settle the rows in flight when a worker died."""
        lost = list(self.in_flight.values())
        self.in_flight.clear()
        if len(lost) == 1:  # it ran alone: it is the row that kills a worker
            yield lost[0].failed(DIED)
        else:
            suspects.extend(sorted(lost, key=lambda t: t.line))

    def harvest(self) -> list[RowResult]:
        return [f.result() for f in self.in_flight
                if f.done() and not f.cancelled() and f.exception() is None]  # fmt: skip

    def stop(self) -> None:
        """Shut the pool down: at once, killing the workers, unless all work is done."""
        if self.in_flight or self.broken:
            processes = list((getattr(self.executor, "_processes", None) or {}).values())
            for p in processes:  # SIGKILL: workers ignore SIGTERM (see the module's doc)
                p.kill()
            for p in processes:
                p.join(timeout=5)
        # The pool's manager thread notices dead workers at once: waiting for it is short.
        self.executor.shutdown(wait=True, cancel_futures=True)


# --- in the worker process --------------------------------------------------------

_transcriber = None
_setup_error: str | None = None


class _WorkerSetupError(Exception):
    """The worker's model did not load (one string argument, so it pickles)."""


def _init_worker(setup: WorkerSetup, driver: int) -> None:
    global _transcriber, _setup_error
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(driver,), daemon=True).start()
    _thread_lock_for_tqdm()
    try:
        _transcriber = setup.load()
    except Exception as err:  # noqa: BLE001 - reported to the driver by the first row
        _setup_error = one_line(str(err) if isinstance(err, CtxasrError)
                                else f"{type(err).__name__}: {err}")  # fmt: skip


def _thread_lock_for_tqdm() -> None:
    # faster-whisper makes a (disabled) tqdm bar per call, and tqdm's default lock holds
    # a multiprocessing semaphore: a worker that dies never releases it, and the driver
    # ends with a "leaked semaphore objects" warning. One thread lock is all it needs.
    try:
        from tqdm import tqdm
    except ImportError:
        return
    tqdm.set_lock(threading.RLock())


def _exit_with(driver: int) -> None:
    # An orphan is adopted by another process: its parent id changes.
    while os.getppid() == driver:
        time.sleep(1.0)
    os._exit(1)


def _work(task: Task) -> RowResult:
    if _transcriber is None:
        raise _WorkerSetupError(_setup_error or "unknown error")
    return transcribe_row(_transcriber, task)
