"""``--engine ray``: the same rows as the local engine, on a local Ray."""

from __future__ import annotations

import time

import pytest

from ctxasr.batch import BatchOptions, run_batch
from ctxasr.batch.output import encode_row

pytestmark = pytest.mark.model

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ctxasr[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    started = time.monotonic()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield time.monotonic() - started
    ray.shutdown()


def test_ray_rows_equal_local_rows(local_ray, batch_manifest, reference_run, tmp_path, rows_of):
    reference = reference_run[0]
    # Resume works the same: the output already holds two rows of the local run.
    out = tmp_path / "out.jsonl"
    out.write_bytes(encode_row(reference[3]) + encode_row(reference[1]))
    started = time.monotonic()
    summary = run_batch(batch_manifest, out, BatchOptions(engine="ray", workers=1, threads=1))
    elapsed = time.monotonic() - started
    assert rows_of(out) == reference  # the same fields, text and context, row for row
    assert (summary.skipped, summary.done, summary.errors) == (2, len(reference) - 2, 1)
    assert ray.is_initialized()  # it joined the fixture's Ray, and left it running
    print(f"Ray start {local_ray:.1f} s, job {elapsed:.1f} s")
