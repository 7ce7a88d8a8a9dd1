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
    # both stages: CTC alone, then the LM's loss and CTC
    # scored at the end by joint CTC/attention decoding with the run's CTC head
    short = dataclasses.replace(cfg, out=str(tiny_recipe / "resumed"), ctc_steps=5, steps=25,
                                ctc_weight=0.3, dev_ctc_weight=0.5,
                                save_every=10, word_pool=str(tiny_recipe / "pool.txt"),
                                dev=str(tiny_recipe / "train.jsonl"))  # fmt: skip
    losses: list[float] = []
    train(dataclasses.replace(short, steps=15), lambda step, total, loss: losses.append(loss))
    assert len(losses) == 20
    assert losses[4] < losses[0]  # CTC alone
    assert losses[-1] < losses[5] - 1.0, losses  # then the LM's loss (and CTC), in nats
    steps: list[int] = []
    train(short, lambda step, total, loss: steps.append(step))
    assert steps == list(range(21, 31))
    assert json.loads((tiny_recipe / "resumed" / "state" / "step.json").read_text()) == {"step": 30}
    from safetensors import safe_open

    with safe_open(str(tiny_recipe / "resumed" / "state" / "model.safetensors"), "pt") as saved:
        names = list(saved.keys())
    # the frozen LM is not copied into every save; LoRA and the CTC head are
    assert not [k for k in names if k.startswith("model.lm.") and "lora_" not in k]
    assert any("lora_" in k for k in names) and "model.ctc.blank" in names
    scores = json.loads((tiny_recipe / "resumed" / "scores.json").read_text())
    assert scores["step"] == 30 and scores["dev_utterances"] == 2 and scores["wer"] >= 0


def test_the_ctc_stage_trains_the_speech_side_alone(tiny_recipe: Path, clip: Path,
                                                     clip_text: str) -> None:  # fmt: skip
    import torch

    from ctxasr.speechllm.model import SpeechLLM
    from ctxasr.speechllm.train import Objective

    model = SpeechLLM(read_config(tiny_recipe / "tiny.toml").model)
    model.add_ctc()
    objective = Objective(model)
    x, mask = batch_frames(model.encode_speech([load_audio(clip)]))
    objective(x, mask, [["gospel"]], [clip_text], lm=False, ctc_weight=1.0).backward()
    grads = {n for n, p in objective.named_parameters() if p.grad is not None}
    assert grads and all(
        n.startswith(("model.mose.", "model.projector.", "model.ctc.")) for n in grads
    )
    assert "model.ctc.blank" in grads and any(n.startswith("model.projector.") for n in grads)
    objective.zero_grad()
    objective(x, mask, [["gospel"]], [clip_text], lm=True, ctc_weight=0.3).backward()
    grads = {n for n, p in objective.named_parameters() if p.grad is not None}
    assert "model.ctc.blank" in grads and any("lora_" in n for n in grads)
    assert torch.isfinite(model.ctc.log_scale.grad)


def test_without_a_terminal_training_logs_step_lines(tiny_recipe: Path) -> None:
    text = (tiny_recipe / "tiny.toml").read_text()
    text = text.replace('out = "run"', 'out = "logged"').replace("steps = 100", "steps = 10")
    text = text.replace("[train]\n", "[train]\nctc_steps = 2\n")
    (tiny_recipe / "logged.toml").write_text(text)
    result = CliRunner().invoke(app, ["train", "speechllm", str(tiny_recipe / "logged.toml")])
    assert result.exit_code == 0, result.output
    assert "step 12/12  loss " in result.output and " s/step" in result.output
    assert "trained 12 steps" in result.output  # the CTC stage's steps count
