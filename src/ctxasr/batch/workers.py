"""What a batch worker loads, and how many workers of how many threads a job runs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import threadpoolctl

if TYPE_CHECKING:
    from ctxasr.transcribe import ModelOptions, TranscribeOptions, Transcriber

# Each worker holds its own copy of the model (tiny.en ~0.2 GB, large-v3 int8 ~2 GB).
MAX_DEFAULT_WORKERS = 8


@dataclass(frozen=True)
class WorkerSetup:
    """What each worker loads once and decodes every row with; picklable."""

    model: str | None = None  # as for ``Transcriber``: None is the packaged tiny.en
    options: TranscribeOptions | None = None  # None: TranscribeOptions()
    model_options: ModelOptions | None = None  # None: ModelOptions()
    threads: int = 0  # CPU threads of the worker's decoder (overrides model_options')

    def load(self) -> Transcriber:
        from ctxasr.transcribe import ModelOptions, TranscribeOptions, Transcriber

        model_options = dataclasses.replace(
            self.model_options or ModelOptions(), cpu_threads=self.threads
        )
        if self.threads > 0:
            # numpy's BLAS computes the log-mel features, and how many threads split that
            # matrix product changes their last bits and, now and then, a decoded word.
            # Ray sets OMP_NUM_THREADS to an actor's CPUs; a local worker would use every
            # core. Holding BLAS to the worker's threads gives both engines the same rows
            # (and keeps N workers from running N x cores BLAS threads).
            threadpoolctl.threadpool_limits(self.threads, user_api="blas")
        return Transcriber(self.model, self.options or TranscribeOptions(), model_options)


def default_workers(cpus: int) -> int:
    """Worker processes for ``cpus`` CPUs when the user does not say: one per CPU.

    Much of a row's work is single-threaded Python and C (audio decoding, voice
    activity detection, prompt building, beam bookkeeping), so separate processes on
    separate files keep the CPUs busier than threads inside one decoder. Measured on 2
    CPUs, 24 fixture rows (tiny.en): 2 workers x 1 thread took 11-17 s, 1 worker x 2
    threads 20-23 s. Capped because each worker holds a model: with a large model on a
    small machine, ask for fewer with --workers.
    """
    return max(1, min(MAX_DEFAULT_WORKERS, cpus))


def plan(workers: int, threads: int, cpus: int, rows: int) -> tuple[int, int]:
    """(workers, threads per worker) for ``rows`` rows on ``cpus`` CPUs; 0 is automatic.

    Threads depend on the workers asked for, not on how many rows are left, so a
    resumed job decodes with the same threads as the run it resumes.
    """
    workers = workers or default_workers(cpus)
    threads = threads or max(1, cpus // workers)
    return max(1, min(workers, rows)), threads
