"""`ctxasr train speechllm`: the tiny recipe learns its one clip, and a stopped run resumes."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("accelerate")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from typer.testing import CliRunner

from ctxasr.audio import load_audio
from ctxasr.cli import app
from ctxasr.speechllm import checkpoint
from ctxasr.speechllm.model import batch_frames
from ctxasr.speechllm.train import read_config, train

ROOT = Path(__file__).resolve().parents[2]
CLIP = ROOT / "tests" / "fixtures" / "audio" / "1272-128104-0000.wav"
TEXT = "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES AND WE ARE GLAD TO WELCOME HIS GOSPEL"
POOL = ["zanzibar", "kubernetes", "photosynthesis", "xylophone", "ombudsman", "quinoa"]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    """The tiny recipe next to a one-clip manifest (the clip twice: a batch of two)."""
    root = tmp_path_factory.mktemp("speechllm")
    row = {"audio_filepath": str(CLIP), "text": TEXT, "rare_words": ["quilter", "gospel"]}
    (root / "train.jsonl").write_text((json.dumps(row) + "\n") * 2)
    (root / "pool.txt").write_text("\n".join(POOL) + "\n")
    shutil.copy(ROOT / "configs" / "speechllm" / "tiny.toml", root / "tiny.toml")
    return root


def test_the_tiny_recipe_learns_its_clip(recipe: Path) -> None:
    result = CliRunner().invoke(app, ["train", "speechllm", str(recipe / "tiny.toml"), "-q"])
    assert result.exit_code == 0, result.output
    run = recipe / "run"
    scores = json.loads((run / "scores.json").read_text())
    assert scores["wer"] == 0.0 and scores["b_wer"] == 0.0, scores
    model = checkpoint.load(run)
    x, mask = batch_frames(model.encode_speech([load_audio(CLIP)] * 2))
    contexts = [["zanzibar", "gospel", "quilter"], []]
    assert model.generate(x, mask, contexts, max_new_tokens=32) == [TEXT.lower()] * 2


def test_the_loss_falls_and_a_stopped_run_resumes(recipe: Path) -> None:
    cfg = read_config(recipe / "tiny.toml")
    short = dataclasses.replace(cfg, out=str(recipe / "resumed"), steps=30, save_every=10,
                                word_pool=str(recipe / "pool.txt"), dev="")  # fmt: skip
    losses: list[float] = []
    train(dataclasses.replace(short, steps=20), lambda step, total, loss: losses.append(loss))
    assert losses[-1] < losses[0] - 1.0, losses  # nats
    steps: list[int] = []
    train(short, lambda step, total, loss: steps.append(step))
    assert steps == list(range(21, 31))
    assert json.loads((recipe / "resumed" / "state" / "step.json").read_text()) == {"step": 30}
    from safetensors import safe_open

    with safe_open(str(recipe / "resumed" / "state" / "model.safetensors"), "pt") as saved:
        names = list(saved.keys())  # the frozen LM is not copied into every save
    assert names and all(checkpoint.trained(k) for k in names)
    assert any("lora_" in k for k in names)
    assert json.loads((recipe / "resumed" / "scores.json").read_text())["step"] == 30


def test_without_a_terminal_training_logs_step_lines(recipe: Path) -> None:
    text = (recipe / "tiny.toml").read_text()
    text = text.replace('out = "run"', 'out = "logged"').replace("steps = 100", "steps = 10")
    (recipe / "logged.toml").write_text(text)
    result = CliRunner().invoke(app, ["train", "speechllm", str(recipe / "logged.toml")])
    assert result.exit_code == 0, result.output
    assert "step 10/10  loss " in result.output and " s/step" in result.output
