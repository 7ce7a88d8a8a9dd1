"""What the training loops share (``ctxasr.training``): the learning-rate schedule and
recipes in YAML."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ctxasr.errors import CtxasrError
from ctxasr.training import read_recipe, warmup_cosine


def test_warmup_then_cosine_to_zero():
    assert [warmup_cosine(s, 4, 20) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_cosine(12, 4, 20) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(20, 4, 20) == pytest.approx(0.0)
    assert warmup_cosine(25, 4, 20) == pytest.approx(0.0)  # past the end: stays at 0


def test_recipes_read_yaml_and_toml_alike(tmp_path: Path):
    (tmp_path / "r.yaml").write_text("train:\n  steps: 3\n")
    (tmp_path / "r.toml").write_text("[train]\nsteps = 3\n")
    assert (
        read_recipe(tmp_path / "r.yaml")
        == read_recipe(tmp_path / "r.toml")
        == {"train": {"steps": 3}}
    )
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(CtxasrError, match="must be a mapping of tables"):
        read_recipe(tmp_path / "bad.yaml")
