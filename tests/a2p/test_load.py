"""Loading A2P weights: every bad file is a ModelError naming it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from ctxasr.a2p.config import A2PConfig
from ctxasr.a2p.scorer import A2PScorer, shapes
from ctxasr.errors import ModelError


def _write(folder: Path, config: A2PConfig | None = None) -> Path:
    config = config or A2PConfig()
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: rng.standard_normal(v).astype(np.float32) for k, v in shapes(config).items()}
    save_file(weights, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config.to_json()))
    return folder


def test_loads_and_scores(tmp_path: Path) -> None:
    scorer = A2PScorer.load(_write(tmp_path / "m"))
    assert scorer.encoder_dim == 384
    table = scorer.term_table([[[1, 2], [3]], []])
    probs = scorer.score(scorer.listen(np.zeros((1500, 384), np.float32)), table, np.arange(2))
    assert probs.shape == (2,) and 0 <= probs[0] <= 1 and probs[1] == 0


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "missing"])
def test_bad_weights_file(tmp_path: Path, damage: str) -> None:
    folder = _write(tmp_path / "m")
    path = folder / "model.safetensors"
    if damage == "corrupt":
        path.write_bytes(b"\xff" * 100)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-1000])
    else:
        path.unlink()
    with pytest.raises(ModelError, match="model.safetensors"):
        A2PScorer.load(folder)


def test_wrong_shapes(tmp_path: Path) -> None:
    folder = _write(tmp_path / "m", A2PConfig(d_model=32))
    (folder / "config.json").write_text(json.dumps(A2PConfig().to_json()))
    with pytest.raises(ModelError, match="model.safetensors.*shape"):
        A2PScorer.load(folder)


@pytest.mark.parametrize("change", [{"version": 99}, {"encoder_dim": 512}, {"colour": 1}])
def test_mismatched_config(tmp_path: Path, change: dict) -> None:
    folder = _write(tmp_path / "m")
    (folder / "config.json").write_text(json.dumps({**A2PConfig().to_json(), **change}))
    with pytest.raises(ModelError, match=r"config.json|model.safetensors"):
        A2PScorer.load(folder)
