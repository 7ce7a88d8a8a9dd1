"""Speech LLM checkpoints: a saved model loads with identical outputs; a bad checkpoint is
one line naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from ctxasr.errors import ModelError
from ctxasr.speechllm import checkpoint
from ctxasr.speechllm.config import LoRAConfig, ModelConfig, PoolingConfig, ProjectorConfig
from ctxasr.speechllm.interfaces import RandomEncoder
from ctxasr.speechllm.model import SpeechLLM, batch_frames

CONFIG = ModelConfig(
    encoders=("random:32:50", "random:24:25"),  # MoSE
    llm="tiny-random",
    projector=ProjectorConfig(stack=2, kind="mlp", hidden=48),
    pooling=PoolingConfig(kind="sap", window=2, heads=4),
    lora=LoRAConfig(r=4, alpha=8, dropout=0.0),
)
CONTEXTS = [["quilter", "gospel"], []]
TARGETS = ["mister quilter", "hello"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[SpeechLLM, Path, tuple]:
    torch.manual_seed(0)
    model = SpeechLLM(CONFIG)
    model.add_ctc()
    with torch.no_grad():  # as if trained: LoRA's B starts at zero, SAP's query too
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.eval()
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(n).astype(np.float32) for n in (24_000, 16_000)]
    speech = batch_frames(model.encode_speech(clips))
    folder = tmp_path_factory.mktemp("ckpt") / "model"
    checkpoint.save(model, folder)
    return model, folder, speech


def test_a_saved_model_loads_with_identical_outputs(saved) -> None:
    model, folder, (x, mask) = saved
    assert {p.name for p in folder.iterdir()} >= {"config.json", "speech_adapter.safetensors",
                                                  "lora"}  # fmt: skip
    loaded = checkpoint.load(folder, expected=CONFIG)
    with torch.no_grad():
        assert torch.equal(model(x, mask, CONTEXTS, TARGETS), loaded(x, mask, CONTEXTS, TARGETS))
    assert model.generate(x, mask, CONTEXTS, 6) == loaded.generate(x, mask, CONTEXTS, 6)
    assert model.generate(x, mask, CONTEXTS, 6, beam_size=3) == loaded.generate(
        x, mask, CONTEXTS, 6, beam_size=3
    )
    assert loaded.ctc is not None and torch.equal(loaded.ctc.blank, model.ctc.blank)
    joint = {"max_new_tokens": 6, "beam_size": 2, "ctc_weight": 0.5}
    assert model.generate(x, mask, CONTEXTS, **joint) == loaded.generate(x, mask, CONTEXTS, **joint)


def test_the_checkpoint_holds_only_trained_parts(saved) -> None:
    _, folder, _ = saved
    from safetensors.numpy import load_file

    names = set(load_file(str(folder / "speech_adapter.safetensors")))
    assert not any(n.startswith("lm.") for n in names)
    assert {"new_tokens", "mose.gate.weight", "pooling.query.weight", "ctc.blank"} <= names
    lora = load_file(str(folder / "lora" / "adapter_model.safetensors"))
    assert lora and all("lora_" in n for n in lora)


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def _one_line(err: pytest.ExceptionInfo, path: Path, words: str) -> None:
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(path)) and words in text, text


def test_a_missing_file_is_one_line(saved, tmp_path: Path) -> None:
    folder = _copy(saved[1], tmp_path)
    (folder / "speech_adapter.safetensors").unlink()
    with pytest.raises(ModelError) as err:
        checkpoint.load(folder)
    _one_line(err, folder / "speech_adapter.safetensors", "missing")
    with pytest.raises(ModelError) as err:
        checkpoint.load(tmp_path / "nowhere")
    _one_line(err, tmp_path / "nowhere" / "config.json", "missing")


@pytest.mark.parametrize("name", ["speech_adapter.safetensors", "lora/adapter_model.safetensors"])
def test_a_corrupt_file_is_one_line(saved, tmp_path: Path, name: str) -> None:
    folder = _copy(saved[1], tmp_path)
    (folder / name).write_bytes(b"\x07garbage" * 10)
    with pytest.raises(ModelError) as err:
        checkpoint.load(folder)
    _one_line(err, folder / name, "corrupt")


def test_a_corrupt_config_is_one_line(saved, tmp_path: Path) -> None:
    folder = _copy(saved[1], tmp_path)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelError) as err:
        checkpoint.load(folder)
    _one_line(err, folder / "config.json", "not a speech LLM config")
    meta = json.loads((saved[1] / "config.json").read_text())
    meta["model"]["pooling"]["kind"] = "max"
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError) as err:
        checkpoint.load(folder)
    _one_line(err, folder / "config.json", "kind must be one of")


def test_other_encoders_or_llm_are_refused(saved, tmp_path: Path) -> None:
    folder = saved[1]
    import dataclasses

    for other in (dataclasses.replace(CONFIG, llm="HuggingFaceTB/SmolLM2-360M-Instruct"),
                  dataclasses.replace(CONFIG, encoders=("whisper:tiny.en",))):  # fmt: skip
        with pytest.raises(ModelError) as err:
            checkpoint.load(folder, expected=other)
        _one_line(err, folder / "config.json", "trained with encoders")
    wider = [RandomEncoder(40, 50, name="random:32:50"), RandomEncoder(24, 25)]
    with pytest.raises(ModelError) as err:
        checkpoint.load(folder, encoders=wider)
    _one_line(err, folder / "config.json", "but they load as")


def test_weights_of_another_shape_are_refused(saved, tmp_path: Path) -> None:
    folder = _copy(saved[1], tmp_path)
    meta = json.loads((folder / "config.json").read_text())
    meta["model"]["projector"]["hidden"] = 40
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError) as err:
        checkpoint.load(folder)
    _one_line(err, folder / "speech_adapter.safetensors", "does not match the config")
