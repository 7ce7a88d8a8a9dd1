"""A trained speech LLM on disk: only what training changed, never the LM or the encoders.

A checkpoint folder holds::

    config.json                  the ModelConfig, the encoders' widths and frame rates
    speech_adapter.safetensors   MoSE, projector, pooling, the two new token embeddings
                                 and the CTC head (``ctc.*``), if the run trained one
    lora/                        peft's adapter (adapter_model.safetensors, adapter_config.json)

:func:`load` rebuilds the model from ``config.json`` (loading the same LM and encoders by
name) and puts the trained weights back. Anything missing, corrupt or not matching is a
one-line :class:`~ctxasr.errors.ModelError` naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ctxasr.errors import ModelError
from ctxasr.speechllm.config import ModelConfig
from ctxasr.speechllm.interfaces import SpeechEncoder, load_encoder
from ctxasr.speechllm.model import SpeechLLM

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "speech_adapter.safetensors"
LORA_DIR = "lora"
LORA_WEIGHTS = "adapter_model.safetensors"
FORMAT = 1


def save(model: SpeechLLM, folder: str | Path, lowercase: bool = True) -> None:
    """Write ``model``'s trained parts to ``folder`` (created if needed); ``lowercase``:
    whether it was trained on lower-cased transcripts and terms."""
    from safetensors.torch import save_file

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    trained = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
               if not k.startswith("lm.")}  # fmt: skip
    save_file(trained, str(out / WEIGHTS_FILE))
    if model.config.lora.r:
        # The resized embedding rows are not trained (the two markers' rows live in
        # ``new_tokens``): peft would otherwise copy the whole 220 MB matrix.
        model.lm.save_pretrained(str(out / LORA_DIR), safe_serialization=True,
                                 save_embedding_layers=False)  # fmt: skip
    meta = {
        "format": FORMAT,
        "model": model.config.to_json(),
        "encoders": _describe(model.encoders),
        "lowercase": lowercase,
    }
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def trained(name: str) -> bool:
    """Whether a state-dict entry of ``SpeechLLM`` is trained (the rest is the frozen LM)."""
    return not name.startswith("lm.") or "lora_" in name


def read_meta(folder: str | Path) -> dict:
    """The checkpoint's ``config.json`` as a dict (checked)."""
    return _meta(Path(folder) / CONFIG_FILE)


def read_model_config(folder: str | Path) -> ModelConfig:
    """The ``ModelConfig`` a checkpoint was trained with."""
    path = Path(folder) / CONFIG_FILE
    return ModelConfig.from_json(_meta(path)["model"])


def load(folder: str | Path, expected: ModelConfig | None = None,
         encoders: Sequence[SpeechEncoder] | None = None) -> SpeechLLM:  # fmt: skip
    """The model saved in ``folder``, in eval mode.

    ``expected``, when given, must name the same encoders and LLM as the checkpoint;
    ``encoders`` are used instead of loading them by name.
    """
    root = Path(folder)
    meta = _meta(root / CONFIG_FILE)
    config = read_model_config(root)
    if expected is not None and (expected.encoders, expected.llm) != (config.encoders, config.llm):
        raise ModelError(str(root / CONFIG_FILE), (
            f"trained with encoders {list(config.encoders)} and llm {config.llm!r}, not "
            f"{list(expected.encoders)} and {expected.llm!r}"))  # fmt: skip
    encoders = list(encoders or [load_encoder(n) for n in config.encoders])
    found = _describe(encoders)
    if found != meta.get("encoders"):
        raise ModelError(str(root / CONFIG_FILE), f"trained on encoders {meta.get('encoders')},"
                         f" but they load as {found}")  # fmt: skip
    model = SpeechLLM(config, encoders)
    _load_trained(model, root / WEIGHTS_FILE)
    if config.lora.r:
        _load_lora(model, root / LORA_DIR / LORA_WEIGHTS)
    return model.eval()


def _describe(encoders: Sequence[SpeechEncoder]) -> list[dict]:
    return [{"name": e.name, "dim": e.dim, "frame_rate": e.frame_rate} for e in encoders]


def _meta(path: Path) -> dict:
    if not path.is_file():
        raise ModelError(str(path), "missing: not a speech LLM checkpoint folder")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
        ModelConfig.from_json(meta["model"])
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError) as err:
        raise ModelError(str(path), f"not a speech LLM config ({type(err).__name__})") from None
    except (TypeError, ValueError) as err:
        raise ModelError(str(path), f"not a valid speech LLM config: {err}") from None
    return meta


def _read(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ModelError(str(path), "missing from the checkpoint")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(str(path), f"corrupt or unreadable: {err}") from None


def _load_trained(model: SpeechLLM, path: Path) -> None:
    weights = _read(path)
    if any(k.startswith("ctc.") for k in weights):
        model.add_ctc()
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("lm.")}
    bad = sorted(set(own) ^ set(weights)) or sorted(k for k in own
                                                    if own[k].shape != weights[k].shape)  # fmt: skip
    if bad:
        raise ModelError(str(path), f"does not match the config ({len(bad)} tensors differ, "
                         f"first {bad[0]!r})")  # fmt: skip
    model.load_state_dict(weights, strict=False)


def _load_lora(model: SpeechLLM, path: Path) -> None:
    from peft import set_peft_model_state_dict

    weights = _read(path)
    try:
        result = set_peft_model_state_dict(model.lm, weights)
    except RuntimeError as err:  # shapes that do not fit
        raise ModelError(str(path), f"does not fit the LLM: {str(err).splitlines()[0]}") from None
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise ModelError(str(path), f"does not fit the LLM ({len(missing)} missing, "
                         f"{len(result.unexpected_keys)} unexpected tensors)")  # fmt: skip
