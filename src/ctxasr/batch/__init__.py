"""Batch transcription: a whole manifest into a resumable JSONL output.

>>> from ctxasr.batch import BatchOptions, run_batch
>>> summary = run_batch("archive.jsonl", "archive.out.jsonl", BatchOptions(workers=2))

Modules, one step each: ``rows`` (manifest rows in, result rows out, and the one
per-row function every engine calls), ``output`` (the append-only writer and resume),
``local`` and ``ray_engine`` (where rows run), ``job`` (the steps of a job). The
``ctxasr batch`` command is ``ctxasr.cli.batch``.
"""

from ctxasr.batch.job import (
    BatchInterrupted,
    BatchOptions,
    BatchProgressCallback,
    BatchSummary,
    run_batch,
)

__all__ = [
    "BatchInterrupted",
    "BatchOptions",
    "BatchProgressCallback",
    "BatchSummary",
    "run_batch",
]
