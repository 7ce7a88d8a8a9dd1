"""`ctxasr data retriever-set`: planned voices, a small set end to end, resume and refusal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ctxasr.a2p.config import A2PConfig
from ctxasr.a2p.data import HELD_OUT_VOICES, SetOptions, plan_examples, read_examples
from ctxasr.cli import app

SENTENCES = [
    "The miller ground the corn before the sun came up over the hill.",
    "A heron stood in the shallow water and watched the reeds.",
    "Nobody in the village remembered the name of the old bridge.",
    "She carried the lantern down the cellar steps without a sound.",
    "The captain wrote the longitude in his book and closed it.",
    "Rain fell on the orchard all through the grey afternoon.",
] * 20  # enough blocks of 50 for a dev split of its own
POOL = ["heron", "lantern", "longitude", "orchard", "miller", "zanzibar", "kubernetes",
        "herring", "lanterns", "latitude", "orchid", "mellow", "cellar"]  # fmt: skip


def test_plans_are_seeded_and_use_every_voice_and_rate() -> None:
    voices = ("en-us", "flite:slt", "kokoro:jf_alpha")
    options = SetOptions(seed=3)
    plans = plan_examples(SENTENCES, 60, 0, options, voices, (140, 180))
    assert plans == plan_examples(SENTENCES, 60, 0, options, voices, (140, 180))
    assert plans != plan_examples(SENTENCES, 60, 1, options, voices, (140, 180))
    assert {p.voice for p in plans} == set(voices)
    assert {p.rate for p in plans} == {140, 180}
    for p in plans:  # consecutive sentences, none longer than max_seconds at its rate
        assert 1 <= len(p.sentences) <= options.max_sentences


def test_neural_engines_weigh_as_one_voice_each() -> None:
    from ctxasr.a2p.data import voice_weights

    w = voice_weights(("en-us", "en", "kokoro:jf_alpha", "kokoro:jm_kumo", "piper:joe"))
    assert np.allclose(w * 4, [1, 1, 0.5, 0.5, 1])


def test_held_out_voices_are_voices_of_the_engines() -> None:
    from ctxasr.data.engines import ENGINE_VOICES, split_voice

    for voice in HELD_OUT_VOICES:
        engine, name = split_voice(voice)
        assert name in ENGINE_VOICES[engine]


@pytest.mark.model
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_small_set_end_to_end_resumes_and_refuses_other_voices(tmp_path: Path) -> None:
    (tmp_path / "sentences.txt").write_text("\n".join(SENTENCES) + "\n")
    (tmp_path / "pool.txt").write_text("\n".join(POOL) + "\n")
    out = tmp_path / "set"
    args = ["data", "retriever-set", str(out), "--train", "3", "--dev", "1", "--workers", "1",
            "--voices", "en-us,en-gb-x-rp", "--sentences", str(tmp_path / "sentences.txt"),
            "--pool", str(tmp_path / "pool.txt")]  # fmt: skip
    runner = CliRunner()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["voices"] == ["en-us", "en-gb-x-rp"]
    assert meta["counts"] == {"train": 3, "dev": 1}
    config = A2PConfig()
    frames = np.load(out / "train" / "frames.npy")
    assert frames.shape == (3, config.slots, config.encoder_dim)
    assert np.isfinite(frames.astype(np.float32)).all() and frames.any(axis=(1, 2)).all()
    examples = read_examples(out / "train")
    assert len(examples) == 3
    for ex in examples:
        assert ex.voice.rsplit(":", 1)[0] in ("en-us", "en-gb-x-rp")
        assert ex.words and set(ex.hard).isdisjoint(ex.words)
    vocab = json.loads((out / "vocab.json").read_text())
    assert all(w in vocab for ex in examples for w in ex.words)

    again = runner.invoke(app, args)  # nothing left to do: same rows, none doubled
    assert again.exit_code == 0, again.output
    assert read_examples(out / "train") == examples

    other = runner.invoke(app, [*args[:-6], "--voices", "en-us", *args[-4:]])
    assert other.exit_code != 0
    assert "other options" in other.output and "\n" not in other.output.strip()
