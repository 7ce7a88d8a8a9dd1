"""`ctxasr train speechllm`: the tiny recipe learns its one clip, and a stopped run resumes."""

from __future__ import annotations

import dataclasses
import json
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


def test_the_tiny_recipe_learns_its_clip(tiny_run: Path, clip: Path, clip_text: str) -> None:
    scores = json.loads((tiny_run / "scores.json").read_text())
    assert scores["wer"] == 0.0 and scores["b_wer"] == 0.0, scores
    model = checkpoint.load(tiny_run)
    x, mask = batch_frames(model.encode_speech([load_audio(clip)] * 2))
    contexts = [["zanzibar", "gospel", "quilter"], []]
    assert model.generate(x, mask, contexts, max_new_tokens=32) == [clip_text] * 2


def test_the_loss_falls_and_a_stopped_run_resumes(tiny_recipe: Path) -> None:
    cfg = read_config(tiny_recipe / "tiny.toml")
    short = dataclasses.replace(cfg, out=str(tiny_recipe / "resumed"), steps=30, save_every=10,
                                word_pool=str(tiny_recipe / "pool.txt"), dev="")  # fmt: skip
    losses: list[float] = []
    train(dataclasses.replace(short, steps=20), lambda step, total, loss: losses.append(loss))
    assert losses[-1] < losses[0] - 1.0, losses  # nats
    steps: list[int] = []
    train(short, lambda step, total, loss: steps.append(step))
    assert steps == list(range(21, 31))
    assert json.loads((tiny_recipe / "resumed" / "state" / "step.json").read_text()) == {"step": 30}
    from safetensors import safe_open

    with safe_open(str(tiny_recipe / "resumed" / "state" / "model.safetensors"), "pt") as saved:
        names = list(saved.keys())  # the frozen LM is not copied into every save
    assert names and all(checkpoint.trained(k) for k in names)
    assert any("lora_" in k for k in names)
    assert json.loads((tiny_recipe / "resumed" / "scores.json").read_text())["step"] == 30


def test_without_a_terminal_training_logs_step_lines(tiny_recipe: Path) -> None:
    text = (tiny_recipe / "tiny.toml").read_text()
    text = text.replace('out = "run"', 'out = "logged"').replace("steps = 100", "steps = 10")
    (tiny_recipe / "logged.toml").write_text(text)
    result = CliRunner().invoke(app, ["train", "speechllm", str(tiny_recipe / "logged.toml")])
    assert result.exit_code == 0, result.output
    assert "step 10/10  loss " in result.output and " s/step" in result.output
