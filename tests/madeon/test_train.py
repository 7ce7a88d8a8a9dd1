"""``ctxasr train madeon``: each variant of the tiny recipe overfits one clip until it
transcribes it exactly; checkpoints round-trip; a rerun resumes; the CLI's done-when run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("sentencepiece")
pytest.importorskip("accelerate")

from typer.testing import CliRunner

from ctxasr.audio import load_audio
from ctxasr.errors import CtxasrError, ModelError
from ctxasr.madeon import checkpoint
from ctxasr.madeon.recognizer import Clip, MadeonRecognizer
from ctxasr.madeon.train import read_recipe, train

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "madeon-tiny.yaml"
CLIP = ROOT / "tests" / "fixtures" / "audio" / "1272-128104-0000.wav"
TEXT = "mister quilter is the apostle of the middle classes and we are glad to welcome his gospel"

pytestmark = pytest.mark.model  # Whisper tiny.en's frames


@pytest.fixture(scope="module")
def one_clip(tmp_path_factory) -> Path:
    """The tiny recipe, retargeted at one clip: its tokenizer fitted once, here."""
    root = tmp_path_factory.mktemp("madeon")
    (root / "one.jsonl").write_text(json.dumps({"audio_filepath": str(CLIP), "text": TEXT}) + "\n")
    body = TINY.read_text().replace("../tests/fixtures/audio/manifest.jsonl", "one.jsonl")
    body = body.replace("tokenizer:\n", f"tokenizer:\n  train: {ROOT}/tests/fixtures/audio/"
                        f"manifest.jsonl\n  out: {root}/tok\n")  # fmt: skip
    (root / "tiny.yaml").write_text(body.replace("  train: one.jsonl\n",
                                                 "  train: one.jsonl\n  dev: one.jsonl\n"))  # fmt: skip
    return root / "tiny.yaml"


def variant(path: Path, kind: str, prefix: str) -> Path:
    body = path.read_text().replace("kind: mamba\n", f"kind: {kind}\n")
    body = body.replace("prefix: parallel\n", f"prefix: {prefix}\n")
    out = path.with_name(f"{kind}-{prefix}.yaml")
    out.write_text(body)
    return out


@pytest.mark.parametrize(("kind", "prefix"), [("mamba", "none"), ("mamba", "parallel"),
                                              ("mamba", "serial"), ("mamba2", "parallel"),
                                              ("transformer", "none")])  # fmt: skip
def test_each_variant_learns_its_one_clip_exactly(one_clip, kind, prefix, tmp_path):
    recipe = read_recipe(variant(one_clip, kind, prefix), steps=150, out=tmp_path / "run")
    losses = []
    scores = train(recipe, lambda step, total, loss: losses.append(loss))
    assert losses[-1] < 0.1 * losses[0]
    assert scores["wer"] == 0.0, scores
    rec = MadeonRecognizer(tmp_path / "run")
    assert rec.transcribe([Clip(load_audio(CLIP))], beam_size=3) == [TEXT]
    assert rec.name == "madeon:run"


@pytest.fixture(scope="module")
def trained(one_clip, tmp_path_factory) -> Path:
    """The tiny recipe overfitted on its one clip: a checkpoint that transcribes it."""
    out = tmp_path_factory.mktemp("trained") / "run"
    train(read_recipe(one_clip, steps=150, out=out))
    return out


def test_the_pipeline_decodes_with_madeon_and_fuses_the_terms(trained, monkeypatch):
    from ctxasr.options import ModelOptions, OptionError, TranscribeOptions
    from ctxasr.speechllm.fusion import GraphHook
    from ctxasr.transcribe import Transcriber

    fused: list[int] = []
    adjust = GraphHook.adjust
    monkeypatch.setattr(GraphHook, "adjust", lambda self, tokens, logp:
                        fused.append(len(tokens)) or adjust(self, tokens, logp))  # fmt: skip
    pipeline = Transcriber(model_options=ModelOptions(backend="madeon", checkpoint=str(trained)))
    opts = TranscribeOptions(retriever="phonetic", fusion_weight=1.0, beam_size=2)
    result = pipeline.transcribe(CLIP, ["Quilter", "zanzibar"], options=opts)
    assert result.text.lower() == TEXT and result.model == "madeon:run"
    assert 0 in fused and max(fused) >= 10  # the graph walked every step of the search
    with pytest.raises(OptionError, match="word timestamps"):
        pipeline.transcribe(CLIP, options=TranscribeOptions(word_timestamps=True))
    with pytest.raises(ModelError, match="needs a checkpoint folder"):
        Transcriber(model_options=ModelOptions(backend="madeon"))


def test_a_rerun_resumes_and_a_longer_one_continues(one_clip, tmp_path):
    out = tmp_path / "run"
    first = train(read_recipe(one_clip, steps=20, out=out))
    steps = []
    again = train(read_recipe(one_clip, steps=20, out=out), lambda s, t, loss: steps.append(s))
    assert steps == [] and again["wer"] == first["wer"]  # nothing left to train
    train(read_recipe(one_clip, steps=25, out=out), lambda s, t, loss: steps.append(s))
    assert steps == [21, 22, 23, 24, 25]
    assert json.loads((out / "scores.json").read_text())["step"] == 25
    with pytest.raises(CtxasrError, match="holds a run at step 25, past the recipe's 20"):
        train(read_recipe(one_clip, steps=20, out=out))


def test_the_cli_runs_the_tiny_recipe(tmp_path):
    from ctxasr.cli import app

    result = CliRunner().invoke(app, ["train", "madeon", str(TINY), "--max-steps", "30",
                                      "-o", str(tmp_path / "run"), "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "trained 30 steps" in result.output
    scores = json.loads((tmp_path / "run" / "scores.json").read_text())
    assert scores["step"] == 30 and scores["parameters"] > 0
    assert (tmp_path / "run" / "tokenizer" / "tokenizer.json").is_file()


def test_bad_recipes_and_checkpoints_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  train: a.jsonl\n  out: run\n  stepz: 3\ntokenizer: {}\n")
    with pytest.raises(CtxasrError, match=r"unknown key\(s\) in \[train\]: stepz"):
        read_recipe(bad)
    bad.write_text("train:\n  train: a.jsonl\n  out: run\nmodel:\n  kind: rnn\n")
    with pytest.raises(CtxasrError, match=r"\[model\] kind must be one of"):
        read_recipe(bad)
    bad.write_text("train:\n  train: a.jsonl\n  out: run\n")
    with pytest.raises(CtxasrError, match="needs \\[train\\] tokenizer"):
        read_recipe(bad)
    bad.write_text("train: [1, 2\n")
    with pytest.raises(CtxasrError, match="not a valid YAML file"):
        read_recipe(bad)
    with pytest.raises(ModelError, match="config.json: missing"):
        checkpoint.load(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="not a MADEON checkpoint"):
        checkpoint.load(tmp_path)
    with pytest.raises(ModelError, match="needs a checkpoint folder"):
        MadeonRecognizer(None)
