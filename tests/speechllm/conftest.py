"""The speech LLM tests' one clip, the tiny recipe next to it, and that recipe trained once
for the whole session (``test_train`` checks what it learned, ``test_pipeline`` decodes
with it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIP = ROOT / "tests" / "fixtures" / "audio" / "1272-128104-0000.wav"
TEXT = "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES AND WE ARE GLAD TO WELCOME HIS GOSPEL"
POOL = ["zanzibar", "kubernetes", "photosynthesis", "xylophone", "ombudsman", "quinoa"]


@pytest.fixture(scope="session")
def clip() -> Path:
    """A LibriSpeech dev-clean utterance (5.9 s), committed as a fixture."""
    return CLIP


@pytest.fixture(scope="session")
def clip_text() -> str:
    """Its transcript as the tiny recipe learns it: lower case."""
    return TEXT.lower()


@pytest.fixture(scope="session")
def tiny_recipe(tmp_path_factory) -> Path:
    """The tiny recipe next to a one-clip manifest (the clip twice: a batch of two) and a
    word pool."""
    root = tmp_path_factory.mktemp("speechllm")
    row = {"audio_filepath": str(CLIP), "text": TEXT, "rare_words": ["quilter", "gospel"]}
    (root / "train.jsonl").write_text((json.dumps(row) + "\n") * 2)
    (root / "pool.txt").write_text("\n".join(POOL) + "\n")
    shutil.copy(ROOT / "configs" / "speechllm" / "tiny.toml", root / "tiny.toml")
    return root


@pytest.fixture(scope="session")
def tiny_run(tiny_recipe: Path) -> Path:
    """The tiny recipe trained by ``ctxasr train speechllm`` until it transcribes its clip:
    the run's folder (its checkpoint and ``scores.json``)."""
    from typer.testing import CliRunner

    from ctxasr.cli import app

    result = CliRunner().invoke(app, ["train", "speechllm", str(tiny_recipe / "tiny.toml"), "-q"])
    assert result.exit_code == 0, result.output
    return tiny_recipe / "run"
