"""`ctxasr train retriever`: the tiny recipe overfits one clip, and a stopped run resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("accelerate")

from typer.testing import CliRunner

from ctxasr.a2p.config import A2PConfig, term_tokens
from ctxasr.a2p.data import Example, encode_stretch, load_encoder, pool_frames
from ctxasr.a2p.scorer import A2PScorer
from ctxasr.a2p.train import read_config, train
from ctxasr.audio import load_audio
from ctxasr.cli import app
from ctxasr.context.phonetic import Pronouncer
from ctxasr.errors import CtxasrError

ROOT = Path(__file__).resolve().parents[2]
CLIP = ROOT / "tests" / "fixtures" / "audio" / "1272-128104-0000.wav"
TEXT = "mister quilter is the apostle of the middle classes and we are glad to welcome his gospel"
DISTRACTORS = ["zanzibar", "kubernetes", "photosynthesis", "xylophone", "ombudsman",
               "sarsaparilla", "chrysanthemum", "quinoa", "tchaikovsky", "hephzibah"]  # fmt: skip
HARD = ["quilt", "apostate", "gossip", "quitter"]

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def one_clip(tmp_path_factory) -> Path:
    """A retriever set of one clip (train and dev), as `ctxasr data retriever-set` lays it."""
    root = tmp_path_factory.mktemp("a2p")
    config = A2PConfig()
    frames = pool_frames(encode_stretch(load_encoder(2), load_audio(CLIP)), config.pool)
    words = tuple(TEXT.split())
    example = Example(TEXT, words, (), "real", 5.9, {}, tuple(HARD))
    for split in ("train", "dev"):
        (root / "set" / split).mkdir(parents=True)
        np.save(root / "set" / split / "frames.npy", frames[None].astype(np.float16))
        (root / "set" / split / "examples.jsonl").write_text(json.dumps(example.to_json()) + "\n")
    terms = sorted({*words, *DISTRACTORS, *HARD})
    prons = Pronouncer(g2p=False).terms(terms, max_variants=1)
    vocab = {t: term_tokens(p[0], config.max_tokens) for t, p in zip(terms, prons)}
    (root / "set" / "vocab.json").write_text(json.dumps(vocab))
    (root / "set" / "distractors.json").write_text(json.dumps(DISTRACTORS))
    shutil.copy(ROOT / "configs" / "retriever" / "tiny-overfit.toml", root / "tiny.toml")
    return root


def _probs(folder: Path, clip_frames: np.ndarray, terms: list[str]) -> np.ndarray:
    scorer = A2PScorer.load(folder)
    prons = Pronouncer(g2p=False).terms(terms, max_variants=1)
    table = scorer.term_table([p[0] for p in prons])
    return scorer.score(scorer.listen(clip_frames), table, np.arange(len(terms)))


def test_the_tiny_recipe_overfits_one_clip(one_clip: Path) -> None:
    result = CliRunner().invoke(app, ["train", "retriever", str(one_clip / "tiny.toml"), "-q"])
    assert result.exit_code == 0, result.output
    run = one_clip / "run"
    assert {"model.safetensors", "config.json", "MODEL_CARD.md"} <= {p.name for p in run.iterdir()}
    frames = encode_stretch(load_encoder(2), load_audio(CLIP))
    said = _probs(run, frames, ["quilter", "apostle", "gospel"])
    unsaid = _probs(run, frames, ["zanzibar", "quilt", "kubernetes"])
    assert said.min() > unsaid.max(), (said, unsaid)
    assert "rare_recall" in (run / "MODEL_CARD.md").read_text()


def test_a_stopped_run_resumes_where_it_stopped(one_clip: Path) -> None:
    cfg = read_config(one_clip / "tiny.toml")
    import dataclasses

    short = dataclasses.replace(cfg, out=str(one_clip / "resumed"), steps=30)
    train(short)  # saves its state at step 30
    steps = []
    train(dataclasses.replace(short, steps=40), lambda step, total, loss: steps.append(step))
    assert steps == list(range(31, 41))
    assert json.loads((one_clip / "resumed" / "state" / "step.json").read_text()) == {"step": 40}


def test_bad_configs_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\ndata = "x"\nout = "y"\nstepz = 3\n')
    with pytest.raises(CtxasrError, match="unknown key.*stepz"):
        read_config(bad)
    bad.write_text("[train\n")
    with pytest.raises(CtxasrError, match="not a valid TOML"):
        read_config(bad)
    bad.write_text('[train]\ndata = "x"\nout = "y"\n[model]\nd_model = 63\n')
    with pytest.raises(CtxasrError, match="multiple of heads"):
        read_config(bad)
