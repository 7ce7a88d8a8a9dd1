"""Transcriptions on a thread pool, each one cancellable between segments.

The model is shared by the pool's threads (faster-whisper runs ``num_workers``
decodes at once; ctxasr's per-call state is thread-local). A thread cannot be killed,
so a request that times out, a client that goes away, or a shutdown sets the job's
cancel flag, and the transcription stops at its next progress callback, which comes
after every decoded segment.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from ctxasr.transcribe import ProgressCallback

T = TypeVar("T")


class Cancelled(Exception):
    """Raised inside a transcription whose request no longer wants the result."""


class Jobs:
    """Runs ``work(progress)`` calls on ``workers`` threads."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="ctxasr-transcribe")
        self._flags: set[threading.Event] = set()
        self._closed = False
        self.cancelled = 0  # transcriptions stopped before their end
        self._count = threading.Lock()

    async def run(self, work: Callable[[ProgressCallback], T], timeout: float) -> T:
        """The result of ``work``, or ``asyncio.TimeoutError`` after ``timeout`` seconds
        (the work is then cancelled). Cancelling the caller cancels the work too."""
        if self._closed:
            raise Cancelled("the server is shutting down")
        flag = threading.Event()

        def progress(_done: float, _total: float | None) -> None:
            if flag.is_set():
                with self._count:  # once per job: the exception ends it
                    self.cancelled += 1
                raise Cancelled("transcription cancelled")

        self._flags.add(flag)
        future = asyncio.wrap_future(self._pool.submit(work, progress))
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            flag.set()
            raise
        finally:
            future.add_done_callback(lambda _: self._flags.discard(flag))
            # Nobody awaits a cancelled job's future: fetch its error so asyncio does
            # not log "exception was never retrieved".
            future.add_done_callback(lambda f: f.cancelled() or f.exception())

    def close(self) -> None:
        """Cancel every job and wait for the threads to stop (at their next segment)."""
        self._closed = True
        for flag in list(self._flags):
            flag.set()
        self._pool.shutdown(wait=True, cancel_futures=True)


class Handover(Generic[T]):
    """Items a transcription's thread hands to the event loop, read there in order.

    Made on the loop; ``put`` may be called from any thread (the segments of a streamed
    transcription arrive on the worker's). An unbounded queue: a segment is small, and a
    recording has one per few seconds of speech.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[T] = asyncio.Queue()

    def put(self, item: T) -> None:
        # Callbacks run in the order they were scheduled: everything a thread put before
        # its job's future was resolved is read before what the loop puts after it.
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    async def get(self) -> T:
        return await self._queue.get()
