"""Whisper weight files: CTranslate2, openai-whisper and Hugging Face, loaded as one model.

Each format has a loader that returns ``(ModelDims, state, config)``: ``state`` uses
:class:`~ctxasr.whisper.model.Whisper`'s parameter names (openai-whisper's), ``config``
uses the keys of CTranslate2's ``config.json`` (``alignment_heads``, ``suppress_ids``,
``suppress_ids_begin``, ``lang_ids``). :func:`load_whisper` picks the loader from what
is on disk and builds the model.

Memory: the model is built on the ``meta`` device and takes the loaded tensors as its
parameters (``assign=True``), so a load holds about one copy of the weights plus one
tensor being converted, and a CTranslate2 file is read through a memory map.
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ctxasr.errors import ModelError
from ctxasr.files import read_json_object
from ctxasr.whisper.model import ModelDims, Whisper

# CTranslate2's DataType enum (include/ctranslate2/types.h); bfloat16 has no numpy dtype.
_CT2_DTYPES: dict[int, np.dtype[Any] | None] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: None,  # bfloat16: read as uint16, widened to float32
}
# Binary versions < 4 stored an item size instead of a type id; CTranslate2 itself maps
# it this way (so a float16 tensor in such a file is read as int16, as it does).
_CT2_ITEM_SIZE_DTYPES = {4: np.dtype("<f4"), 2: np.dtype("<i2"), 1: np.dtype("i1")}
_CT2_BINARY_VERSIONS = range(3, 7)  # 3 added aliases; 4 type ids; 6 is current
_CT2_INT16_SCALE = 1000.0  # CTranslate2's scale for int16 weights saved without one
_CT2_GELU = 3  # common_spec.Activation.GELU


@dataclass(frozen=True)
class LoadedWhisper:
    """A Whisper model ready to run, with the decoding hints its files carry."""

    model: Whisper  # eval mode, requires_grad off
    source: str  # "ctranslate2" | "openai" | "huggingface"
    path: str
    alignment_heads: tuple[tuple[int, int], ...]  # (decoder layer, head) for word timing
    suppress_ids: tuple[int, ...]  # tokens never sampled; () when the files do not say
    suppress_ids_begin: tuple[int, ...]  # tokens not sampled first


def load_whisper(path: str | os.PathLike[str], dtype: torch.dtype = torch.float32) -> LoadedWhisper:
    """Load a Whisper model from a CTranslate2 or Hugging Face directory or a ``.pt`` file.

    The parameters are converted to ``dtype``, except the layer norms' (a few kB), which
    stay float32 because :class:`~ctxasr.whisper.model.LayerNorm` normalises in float32.

    Raises:
        ModelError: the path is not a Whisper model in a known format, or its files are
            truncated, inconsistent or missing tensors.
    """
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype, not {dtype}")
    p = Path(path)
    if not p.exists():
        raise ModelError(str(path), "does not exist")
    if p.is_dir() and (p / "model.bin").is_file():
        source = "ctranslate2"
        dims, state, config = load_ct2(p)
    elif p.is_dir() and (p / "config.json").is_file() and _hf_weight_files(p, check=False):
        source = "huggingface"
        dims, state, config = load_hf(p)
    elif p.is_file() and p.suffix == ".pt":
        source = "openai"
        dims, state, config = load_openai(p)
    else:
        raise ModelError(
            str(path),
            "is not a Whisper model: expected a CTranslate2 directory (model.bin), a "
            "Hugging Face directory (config.json and *.safetensors) or an openai-whisper "
            ".pt checkpoint",
        )
    model = _build(str(path), dims, state, dtype)
    return LoadedWhisper(
        model=model,
        source=source,
        path=str(path),
        alignment_heads=_alignment_heads(str(path), config, dims),
        suppress_ids=_int_tuple(str(path), config, "suppress_ids"),
        suppress_ids_begin=_int_tuple(str(path), config, "suppress_ids_begin"),
    )


def _build(source: str, dims: ModelDims, state: dict[str, Tensor], dtype: torch.dtype) -> Whisper:
    # On "meta" the model allocates nothing; assign=True then makes the loaded tensors its
    # parameters instead of copying them into freshly initialised ones. (The first meta
    # build in a process imports torch's meta kernels, about 1 s; initialising real
    # parameters instead would take seconds for small and a second copy of the weights.)
    with torch.device("meta"):
        model = Whisper(dims)
    expected = model.state_dict()
    _check_names(source, expected, state)
    norms = {
        f"{name}.{param}"
        for name, module in model.named_modules()
        if isinstance(module, nn.LayerNorm)
        for param in ("weight", "bias")
    }
    for name in list(state):
        target = torch.float32 if name in norms else dtype
        state[name] = state.pop(name).to(target)
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    model.requires_grad_(False)
    return model


def _check_names(source: str, expected: dict[str, Tensor], state: dict[str, Tensor]) -> None:
    """Raise a ModelError naming the first few missing, unexpected or misshapen tensors."""
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    misshapen = [
        f"{name} {tuple(state[name].shape)} (expected {tuple(tensor.shape)})"
        for name, tensor in expected.items()
        if name in state and state[name].shape != tensor.shape
    ]
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected),
                         ("wrong shape", misshapen)):  # fmt: skip
        if names:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            problems.append(f"{label}: {', '.join(names[:3])}{more}")
    if problems:
        raise ModelError(
            source, "does not match the Whisper model's tensors: " + "; ".join(problems)
        )


def _alignment_heads(
    source: str, config: dict[str, Any], dims: ModelDims
) -> tuple[tuple[int, int], ...]:
    heads = config.get("alignment_heads") or ()
    try:
        pairs = tuple((int(layer), int(head)) for layer, head in heads)
    except (TypeError, ValueError):
        raise ModelError(source, "alignment_heads is not a list of [layer, head] pairs") from None
    for layer, head in pairs:
        if not (0 <= layer < dims.n_text_layer and 0 <= head < dims.n_text_head):
            raise ModelError(
                source,
                f"alignment head ({layer}, {head}) is outside the decoder's "
                f"{dims.n_text_layer} layers x {dims.n_text_head} heads",
            )
    return pairs


def _int_tuple(source: str, config: dict[str, Any], key: str) -> tuple[int, ...]:
    try:
        return tuple(int(i) for i in config.get(key) or ())
    except (TypeError, ValueError):
        raise ModelError(source, f"{key} is not a list of token ids") from None


# --- CTranslate2 -------------------------------------------------------------------------


class _Cursor:
    """Reads little-endian fields from a buffer, reporting truncation as a ModelError."""

    def __init__(self, buffer: np.ndarray, source: str) -> None:
        self.buffer = buffer  # (n_bytes,) uint8, usually a read-only memory map
        self.pos = 0
        self.source = source

    def fail(self, problem: str) -> ModelError:
        return ModelError(self.source, f"{problem} at byte {self.pos}; the file is corrupt")

    def take(self, n: int, what: str) -> int:
        """Advance past ``n`` bytes of ``what``; return where they start."""
        if self.pos + n > self.buffer.size:
            raise ModelError(
                self.source,
                f"is truncated: {what} needs {n} bytes at byte {self.pos} but the file "
                f"has {self.buffer.size}",
            )
        start = self.pos
        self.pos += n
        return start

    def unpack(self, fmt: str, what: str) -> int:
        start = self.take(struct.calcsize(fmt), what)
        return struct.unpack_from("<" + fmt, self.buffer, start)[0]

    def string(self, what: str) -> str:
        n = self.unpack("H", f"the length of {what}")  # counts the trailing NUL
        start = self.take(n, what)
        raw = self.buffer[start : start + n].tobytes()
        if n == 0 or raw[-1] != 0:
            self.pos = start
            raise self.fail(f"{what} is not NUL-terminated")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            self.pos = start
            raise self.fail(f"{what} is not UTF-8") from None


def read_ct2_variables(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The named tensors of a CTranslate2 ``model.bin``, aliases resolved.

    Arrays keep the file's dtype (float32, int8, int16, int32, float16) and shape; rank-0
    scalars are 0-d arrays. bfloat16 tensors are widened to float32. Except for those,
    the arrays are read-only views of a memory map of the file.

    Raises:
        ModelError: the file is missing, truncated, of an unsupported binary version, or
            garbled.
    """
    return _read_ct2(path)[1]


def _read_ct2(path: str | os.PathLike[str]) -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, variables) of a ``model.bin``; the layout is ModelSpec._serialize's."""
    source = str(path)
    try:
        size = os.path.getsize(path)
        if size == 0:
            raise ModelError(source, "is empty (0 bytes)")
        # A plain ndarray view of the map: slices and views of it are then plain arrays too.
        buffer = np.asarray(np.memmap(path, dtype=np.uint8, mode="r"))
    except OSError as err:
        raise ModelError(source, f"cannot be read ({err.strerror or err})") from None
    cursor = _Cursor(buffer, source)
    version = cursor.unpack("I", "the binary version")
    if version not in _CT2_BINARY_VERSIONS:
        raise ModelError(
            source,
            f"has CTranslate2 binary version {version}; this reader supports "
            f"{_CT2_BINARY_VERSIONS.start} to {_CT2_BINARY_VERSIONS.stop - 1}",
        )
    spec = cursor.string("the spec name")
    cursor.unpack("I", "the spec revision")
    variables: dict[str, np.ndarray] = {}
    for i in range(cursor.unpack("I", "the variable count")):
        name, array = _read_variable(cursor, version, f"variable {i}")
        if name in variables:
            raise cursor.fail(f"variable {name!r} appears twice")
        variables[name] = array
    for i in range(cursor.unpack("I", "the alias count")):
        alias = cursor.string(f"alias {i}")
        target = cursor.string(f"the target of alias {alias!r}")
        if target not in variables:
            raise cursor.fail(f"alias {alias!r} points to unknown variable {target!r}")
        variables[alias] = variables[target]
    if cursor.pos != buffer.size:
        raise cursor.fail(f"{buffer.size - cursor.pos} unexpected bytes follow the last alias")
    return spec, variables


def _read_variable(cursor: _Cursor, version: int, what: str) -> tuple[str, np.ndarray]:
    name = cursor.string(f"the name of {what}")
    rank = cursor.unpack("B", f"the rank of {name!r}")
    shape = tuple(cursor.unpack("I", f"the shape of {name!r}") for _ in range(rank))
    if version >= 4:
        type_id = cursor.unpack("B", f"the dtype of {name!r}")
        if type_id not in _CT2_DTYPES:
            raise cursor.fail(f"{name!r} has unknown dtype id {type_id}")
        dtype = _CT2_DTYPES[type_id]
        n_bytes = cursor.unpack("I", f"the byte count of {name!r}")
    else:
        item_size = cursor.unpack("B", f"the item size of {name!r}")
        if item_size not in _CT2_ITEM_SIZE_DTYPES:
            raise cursor.fail(f"{name!r} has unknown item size {item_size}")
        dtype = _CT2_ITEM_SIZE_DTYPES[item_size]
        n_bytes = cursor.unpack("I", f"the item count of {name!r}") * item_size
    item_size = 2 if dtype is None else dtype.itemsize
    if n_bytes != int(np.prod(shape, dtype=np.int64)) * item_size:
        raise cursor.fail(f"{name!r} has {n_bytes} bytes for shape {list(shape)}")
    start = cursor.take(n_bytes, f"the data of {name!r}")
    raw = cursor.buffer[start : start + n_bytes]
    if dtype is None:  # bfloat16 is the top half of a float32
        array = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        array = raw.view(dtype)
    return name, array.reshape(shape)


class _Ct2Weights:
    """Float32 tensors out of a CTranslate2 Whisper's variables, dequantised as needed."""

    def __init__(self, source: str, variables: dict[str, np.ndarray]) -> None:
        self.source = source
        self.variables = variables
        self.used: set[str] = set()

    def raw(self, name: str) -> np.ndarray:
        if name not in self.variables:
            raise ModelError(self.source, f"has no variable {name!r}; is it a Whisper model?")
        self.used.add(name)
        return self.variables[name]

    def scalar(self, name: str) -> int:
        value = self.raw(name)
        if value.shape != ():
            raise ModelError(self.source, f"variable {name!r} is not a scalar")
        return int(value)

    def array(self, name: str) -> np.ndarray:
        """Variable ``name`` as a new, writable float32 array."""
        value = self.raw(name)
        if value.dtype.kind == "f":
            return value.astype(np.float32)  # always a copy: the map is read-only
        if value.dtype not in (np.int8, np.int16):
            raise ModelError(self.source, f"variable {name!r} is {value.dtype}, not weights")
        # model_spec.py quantises q = rint(w * scale): one scale per output row for int8
        # (rows of a conv kernel flattened), one per tensor for int16.
        scale_name = name + "_scale"
        if scale_name in self.variables:
            scale = self.raw(scale_name).astype(np.float32)
        elif value.dtype == np.int16:
            scale = np.float32(_CT2_INT16_SCALE)
        else:
            raise ModelError(self.source, f"int8 variable {name!r} has no {scale_name!r}")
        if scale.size == value.shape[0] and scale.ndim == 1:
            scale = scale.reshape((-1,) + (1,) * (value.ndim - 1))
        elif scale.size != 1:
            raise ModelError(
                self.source, f"{scale_name!r} has shape {list(scale.shape)} for {list(value.shape)}"
            )
        return value.astype(np.float32) / scale

    def split(self, name: str, parts: int) -> list[np.ndarray]:
        """A fused projection (parts * D, ...) as ``parts`` arrays (D, ...), rows in order."""
        value = self.array(name)
        if value.shape[0] % parts:
            raise ModelError(
                self.source, f"{name!r} {list(value.shape)} is not {parts} fused parts"
            )
        return np.split(value, parts)


def load_ct2(
    model_dir: str | os.PathLike[str],
) -> tuple[ModelDims, dict[str, Tensor], dict[str, Any]]:
    """Read a CTranslate2 Whisper directory: dims, float32 state (our names), config.json.

    Quantised weights (int8 or int16 with a ``*_scale``) are dequantised. Fused query,
    key and value projections are split; the key's bias block is dropped, which changes
    nothing (a key bias adds the same q.b to every score of a query, and softmax ignores
    that).

    Raises:
        ModelError: the directory holds no readable Whisper ``model.bin`` or config.
    """
    root = Path(model_dir)
    spec, variables = _read_ct2(root / "model.bin")
    source = str(root / "model.bin")
    if spec != "WhisperSpec":
        raise ModelError(source, f"is a CTranslate2 {spec or 'unnamed'} model, not Whisper")
    w = _Ct2Weights(source, variables)
    _check_ct2_flags(w)
    dims = _ct2_dims(w)
    state: dict[str, np.ndarray] = {}
    _ct2_encoder(w, dims, state)
    _ct2_decoder(w, dims, state)
    _check_ct2_leftovers(w)
    config_path = root / "config.json"
    config = read_json_object(config_path, ModelError) if config_path.is_file() else {}
    return dims, {name: torch.from_numpy(a) for name, a in state.items()}, config


def _check_ct2_flags(w: _Ct2Weights) -> None:
    # Flags a Whisper spec sets; anything else would need model code this port lacks.
    expected = {"decoder/pre_norm": 1, "decoder/activation": _CT2_GELU,
                "decoder/scale_embeddings": 0, "decoder/alibi": 0}  # fmt: skip
    for name, value in expected.items():
        if name in w.variables and w.scalar(name) != value:
            raise ModelError(w.source, f"has {name} = {w.scalar(name)}; Whisper uses {value}")


def _layer_count(w: _Ct2Weights, stack: str) -> int:
    pattern = re.compile(rf"{stack}/layer_(\d+)/")
    found = {int(m.group(1)) for name in w.variables if (m := pattern.match(name))}
    if found != set(range(len(found))):
        raise ModelError(w.source, f"has {stack} layers {sorted(found)}; expected 0 to n-1")
    return len(found)


def _ct2_dims(w: _Ct2Weights) -> ModelDims:
    conv1 = w.raw("encoder/conv1/weight")  # (D, n_mels, 3)
    embeddings = w.raw("decoder/embeddings/weight")  # (V, D)
    return ModelDims(
        n_mels=conv1.shape[1],
        n_audio_ctx=w.raw("encoder/position_encodings/encodings").shape[0],
        n_audio_state=conv1.shape[0],
        n_audio_head=w.scalar("encoder/num_heads"),
        n_audio_layer=_layer_count(w, "encoder"),
        n_vocab=embeddings.shape[0],
        n_text_ctx=w.raw("decoder/position_encodings/encodings").shape[0],
        n_text_state=embeddings.shape[1],
        n_text_head=w.scalar("decoder/num_heads"),
        n_text_layer=_layer_count(w, "decoder"),
    )


def _ct2_linear(w: _Ct2Weights, src: str, dst: str, state: dict[str, np.ndarray]) -> None:
    state[f"{dst}.weight"] = w.array(f"{src}/weight")
    state[f"{dst}.bias"] = w.array(f"{src}/bias")


def _ct2_norm(w: _Ct2Weights, src: str, dst: str, state: dict[str, np.ndarray]) -> None:
    state[f"{dst}.weight"] = w.array(f"{src}/gamma")
    state[f"{dst}.bias"] = w.array(f"{src}/beta")


def _ct2_qkv(w: _Ct2Weights, src: str, dst: str, state: dict[str, np.ndarray]) -> None:
    """Fused (3D, D) query;key;value -> ``dst``.{query,key,value}."""
    state[f"{dst}.query.weight"], state[f"{dst}.key.weight"], state[f"{dst}.value.weight"] = (
        w.split(f"{src}/weight", 3)
    )
    state[f"{dst}.query.bias"], _, state[f"{dst}.value.bias"] = w.split(f"{src}/bias", 3)


def _ct2_ffn(w: _Ct2Weights, src: str, dst: str, state: dict[str, np.ndarray]) -> None:
    _ct2_norm(w, f"{src}/ffn/layer_norm", f"{dst}.mlp_ln", state)
    _ct2_linear(w, f"{src}/ffn/linear_0", f"{dst}.mlp.0", state)
    _ct2_linear(w, f"{src}/ffn/linear_1", f"{dst}.mlp.2", state)


def _ct2_self_attention(w: _Ct2Weights, src: str, dst: str,
                        state: dict[str, np.ndarray]) -> None:  # fmt: skip
    _ct2_qkv(w, f"{src}/self_attention/linear_0", f"{dst}.attn", state)
    _ct2_linear(w, f"{src}/self_attention/linear_1", f"{dst}.attn.out", state)
    _ct2_norm(w, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln", state)


def _ct2_encoder(w: _Ct2Weights, dims: ModelDims, state: dict[str, np.ndarray]) -> None:
    for conv in ("conv1", "conv2"):
        _ct2_linear(w, f"encoder/{conv}", f"encoder.{conv}", state)
    state["encoder.positional_embedding"] = w.array("encoder/position_encodings/encodings")
    for i in range(dims.n_audio_layer):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        _ct2_self_attention(w, src, dst, state)
        _ct2_ffn(w, src, dst, state)
    _ct2_norm(w, "encoder/layer_norm", "encoder.ln_post", state)


def _ct2_decoder(w: _Ct2Weights, dims: ModelDims, state: dict[str, np.ndarray]) -> None:
    state["decoder.token_embedding.weight"] = w.array("decoder/embeddings/weight")
    state["decoder.positional_embedding"] = w.array("decoder/position_encodings/encodings")
    for i in range(dims.n_text_layer):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        _ct2_self_attention(w, src, dst, state)
        _ct2_linear(w, f"{src}/attention/linear_0", f"{dst}.cross_attn.query", state)
        # Fused (2D, D) key;value from the audio features.
        cross = f"{dst}.cross_attn"
        state[f"{cross}.key.weight"], state[f"{cross}.value.weight"] = w.split(
            f"{src}/attention/linear_1/weight", 2
        )
        _, state[f"{cross}.value.bias"] = w.split(f"{src}/attention/linear_1/bias", 2)
        _ct2_linear(w, f"{src}/attention/linear_2", f"{cross}.out", state)
        _ct2_norm(w, f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln", state)
        _ct2_ffn(w, src, dst, state)
    _ct2_norm(w, "decoder/layer_norm", "decoder.ln", state)


def _check_ct2_leftovers(w: _Ct2Weights) -> None:
    """Fail on tensors the mapping did not use: they would change what the model computes."""
    projection = w.variables.get("decoder/projection/weight")
    if projection is not None:
        # Whisper ties its output projection to the token embedding; the converter stores
        # it as an alias, so it is normally the very same array.
        embeddings = w.variables["decoder/embeddings/weight"]
        if projection is not embeddings and not np.array_equal(projection, embeddings):
            raise ModelError(w.source, "has an output projection unlike the token embedding")
        w.used.update({"decoder/projection/weight", "decoder/projection/weight_scale"})
    left = sorted(
        name for name, value in w.variables.items() if name not in w.used and value.ndim > 0
    )
    if left:
        more = f" and {len(left) - 3} more" if len(left) > 3 else ""
        raise ModelError(
            w.source, f"has tensors this loader does not map: {', '.join(left[:3])}{more}"
        )


# --- openai-whisper ------------------------------------------------------------------------


def load_openai(
    path: str | os.PathLike[str],
) -> tuple[ModelDims, dict[str, Tensor], dict[str, Any]]:
    """Read an openai-whisper ``.pt`` checkpoint: dims, state (already our names), ``{}``.

    Only tensors and plain containers are unpickled (``weights_only=True``).

    Raises:
        ModelError: the file is not a readable openai-whisper checkpoint.
    """
    source = str(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load raises many types for one cause
        reason = str(err).splitlines()[0] if str(err) else ""
        raise ModelError(
            source, f"cannot be read as a PyTorch checkpoint ({type(err).__name__}: {reason})"
        ) from None
    if not isinstance(checkpoint, dict) or not {"dims", "model_state_dict"} <= checkpoint.keys():
        raise ModelError(
            source, "is not an openai-whisper checkpoint (no dims and model_state_dict)"
        )
    raw_dims = checkpoint["dims"]
    fields = [f.name for f in dataclasses.fields(ModelDims)]
    if not isinstance(raw_dims, dict) or not set(fields) <= raw_dims.keys():
        raise ModelError(source, f"has dims without all of {', '.join(fields)}")
    dims = ModelDims(**{name: int(raw_dims[name]) for name in fields})
    state = checkpoint["model_state_dict"]
    if not isinstance(state, dict) or not all(isinstance(t, Tensor) for t in state.values()):
        raise ModelError(source, "has a model_state_dict that is not a dict of tensors")
    return dims, dict(state), {}


# --- Hugging Face transformers -----------------------------------------------------------

# Per-layer module names: transformers' WhisperEncoderLayer/WhisperDecoderLayer -> ours.
_HF_LAYER_MODULES = {
    "self_attn.q_proj": "attn.query",
    "self_attn.k_proj": "attn.key",
    "self_attn.v_proj": "attn.value",
    "self_attn.out_proj": "attn.out",
    "self_attn_layer_norm": "attn_ln",
    "encoder_attn.q_proj": "cross_attn.query",
    "encoder_attn.k_proj": "cross_attn.key",
    "encoder_attn.v_proj": "cross_attn.value",
    "encoder_attn.out_proj": "cross_attn.out",
    "encoder_attn_layer_norm": "cross_attn_ln",
    "fc1": "mlp.0",
    "fc2": "mlp.2",
    "final_layer_norm": "mlp_ln",
}
_HF_NAMES = {
    "encoder.embed_positions.weight": "encoder.positional_embedding",
    "encoder.layer_norm.weight": "encoder.ln_post.weight",
    "encoder.layer_norm.bias": "encoder.ln_post.bias",
    "decoder.embed_tokens.weight": "decoder.token_embedding.weight",
    "decoder.embed_positions.weight": "decoder.positional_embedding",
    "decoder.layer_norm.weight": "decoder.ln.weight",
    "decoder.layer_norm.bias": "decoder.ln.bias",
}
_HF_LAYER_NAME = re.compile(r"(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)")
_HF_DIMS = {  # ModelDims field -> transformers' WhisperConfig field
    "n_mels": "num_mel_bins",
    "n_audio_ctx": "max_source_positions",
    "n_audio_state": "d_model",
    "n_audio_head": "encoder_attention_heads",
    "n_audio_layer": "encoder_layers",
    "n_vocab": "vocab_size",
    "n_text_ctx": "max_target_positions",
    "n_text_state": "d_model",
    "n_text_head": "decoder_attention_heads",
    "n_text_layer": "decoder_layers",
}


def _hf_name(name: str) -> str | None:
    """Our name for a transformers tensor name; None for tensors we drop on purpose.

    A name this does not know is returned as it is, so the strict load reports it.
    """
    name = name.removeprefix("model.")
    if name == "proj_out.weight":
        return None  # tied to the token embedding
    if name in _HF_NAMES:
        return _HF_NAMES[name]
    if name.startswith(("encoder.conv1.", "encoder.conv2.")):
        return name
    m = _HF_LAYER_NAME.fullmatch(name)
    if m is None or m.group(3) not in _HF_LAYER_MODULES:
        return name
    stack, index, module, param = m.groups()
    if module.endswith("k_proj") and param == "bias":
        return None  # a key bias cannot change attention (see load_ct2)
    return f"{stack}.blocks.{index}.{_HF_LAYER_MODULES[module]}.{param}"


def _hf_weight_files(root: Path, check: bool = True) -> list[Path]:
    """The safetensors files of a transformers checkpoint, sharded or not."""
    single = root / "model.safetensors"
    if single.is_file():
        return [single]
    index = root / "model.safetensors.index.json"
    if not index.is_file():
        return []
    if not check:
        return [index]
    weight_map = read_json_object(index, ModelError).get("weight_map")
    if not isinstance(weight_map, dict):
        raise ModelError(str(index), "has no weight_map")
    files = [root / name for name in sorted(set(weight_map.values()))]
    for file in files:
        if not file.is_file():
            raise ModelError(str(index), f"lists {file.name}, which is missing")
    return files


def load_hf(path: str | os.PathLike[str]) -> tuple[ModelDims, dict[str, Tensor], dict[str, Any]]:
    """Read a transformers Whisper directory: dims, state (our names), decoding config.

    The config comes from ``generation_config.json`` (or ``config.json``) and is given in
    CTranslate2's keys: ``alignment_heads``, ``suppress_ids``, ``suppress_ids_begin``,
    ``lang_ids``.

    Raises:
        ModelError: the config is not a Whisper config or the safetensors are unreadable.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = Path(path)
    hf_config = read_json_object(root / "config.json", ModelError)
    source = str(root / "config.json")
    if hf_config.get("model_type", "whisper") != "whisper":
        raise ModelError(source, f"is a {hf_config['model_type']} model, not Whisper")
    missing = sorted({key for key in _HF_DIMS.values() if key not in hf_config})
    if missing:
        raise ModelError(source, f"lacks {', '.join(missing)}")
    dims = ModelDims(**{field: int(hf_config[key]) for field, key in _HF_DIMS.items()})
    files = _hf_weight_files(root)
    if not files:
        raise ModelError(str(root), "has no model.safetensors or model.safetensors.index.json")
    state: dict[str, Tensor] = {}
    for file in files:
        try:
            tensors = load_file(file)
        except (OSError, SafetensorError) as err:
            raise ModelError(str(file), f"cannot be read as safetensors ({err})") from None
        for name in list(tensors):
            ours = _hf_name(name)
            tensor = tensors.pop(name)
            if ours is not None:
                state[ours] = tensor
    generation = root / "generation_config.json"
    hints = read_json_object(generation, ModelError) if generation.is_file() else hf_config
    config = {
        "alignment_heads": hints.get("alignment_heads") or [],
        "suppress_ids": hints.get("suppress_tokens") or [],
        "suppress_ids_begin": hints.get("begin_suppress_tokens") or [],
        "lang_ids": sorted((hints.get("lang_to_id") or {}).values()),
    }
    return dims, state, config
