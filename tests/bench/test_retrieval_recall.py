"""The benchmark scripts' pure parts: markup stripping and the recall@k arithmetic."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from biasing_report import strip_markup
from retrieval_recall import K_MAX, Row, stats


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<cutoff-montreal> montreal <hes-forced> forced aligner", "montreal forced aligner"),
        ("so [laughter] that's it <unk> yes", "so that's it yes"),
        ("saying [adif] bunch <VOCNOISE> yeah", "saying bunch yeah"),
        ("<hes-montreal> <hes-forced>", ""),
        ("plain text", "plain text"),
    ],
)
def test_strip_markup(text: str, expected: str) -> None:
    assert strip_markup(text) == expected


def test_stats_recall_at_k_and_pick() -> None:
    rows = [
        # "alpha" spelled (rank 0), "beta" heard at rank 3, "gamma" never found
        Row("u1", ("alpha", "beta", "gamma"), (0, 3, None),
            picks=(("Alpha", "delta"), ("beta",)), ms=(2.0, 4.0), build_s=0.5),
        Row("u2", ("epsilon",), (12,), picks=((),), ms=(6.0,), build_s=1.5),
    ]  # fmt: skip
    s = stats(rows)
    assert len(s["recall_at_k"]) == K_MAX
    assert s["recall_at_k"][0] == pytest.approx(1 / 4)  # k=1: alpha only
    assert s["recall_at_k"][2] == pytest.approx(2 / 4)  # k=3: + beta
    assert s["recall_at_k"][11] == pytest.approx(3 / 4)  # k=12: + epsilon
    assert s["recall_at_k"][-1] == pytest.approx(3 / 4)
    assert s["pick_recall"] == pytest.approx(2 / 4)  # alpha (any case), beta
    assert s["precision"] == pytest.approx(2 / 3)  # alpha, beta of alpha, delta, beta
    assert s["picks_per_stretch"] == pytest.approx(3 / 3)
    assert (s["ms_mean"], s["ms_max"]) == (pytest.approx(4.0), 6.0)
    assert s["build_s_mean"] == pytest.approx(1.0)
    assert s["spelled"] == 1
