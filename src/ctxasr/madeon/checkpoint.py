"""A trained MADEON model on disk.

A checkpoint folder holds::

    config.json         the ModelConfig, whether the text was lower-cased, the format
    model.safetensors   every weight of the decoder (tied head included once)
    tokenizer/          the speech tokenizer it reads (``ctxasr.madeon.tokens``)

Anything missing, corrupt or not matching is a one-line :class:`~ctxasr.errors.ModelError`
naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from ctxasr.errors import ModelError
from ctxasr.madeon.config import ModelConfig
from ctxasr.madeon.model import Madeon
from ctxasr.madeon.tokens import SpeechTokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
FORMAT = 1


def save(model: Madeon, tokenizer: SpeechTokenizer, folder: str | Path,
         lowercase: bool = True) -> None:  # fmt: skip
    """Write ``model`` and its ``tokenizer`` to ``folder`` (created if needed)."""
    from safetensors.torch import save_file

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(out / WEIGHTS_FILE))
    tokenizer.save(out / TOKENIZER_DIR)
    meta = {"format": FORMAT, "model": model.config.to_json(), "lowercase": lowercase}
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def read_meta(folder: str | Path) -> dict:
    """The checkpoint's ``config.json`` as a dict (checked)."""
    path = Path(folder) / CONFIG_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(str(path), "missing: not a MADEON checkpoint folder "
                         "(`ctxasr train madeon` writes one)") from None  # fmt: skip
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(str(path), f"cannot read the checkpoint's config: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
        raise ModelError(str(path), f"not a MADEON checkpoint config (format {FORMAT})")
    return meta


def load(folder: str | Path) -> tuple[Madeon, SpeechTokenizer, dict]:
    """The model (eval mode), its tokenizer and its ``config.json``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = Path(folder)
    meta = read_meta(root)
    try:
        cfg = ModelConfig.from_json(meta["model"])
    except (TypeError, ValueError) as err:
        raise ModelError(str(root / CONFIG_FILE), f"bad model config: {err}") from None
    tokenizer = SpeechTokenizer.load(root / TOKENIZER_DIR)
    if tokenizer.vocab_size != cfg.vocab:
        raise ModelError(str(root / TOKENIZER_DIR), f"has {tokenizer.vocab_size} tokens but "
                         f"the model was trained on {cfg.vocab}")  # fmt: skip
    path = root / WEIGHTS_FILE
    try:
        weights = load_file(str(path))
    except FileNotFoundError:
        raise ModelError(str(path), "missing from the checkpoint folder") from None
    except (OSError, SafetensorError) as err:
        raise ModelError(str(path), f"cannot read the weights: {err}") from None
    model = Madeon(cfg)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        problem = " ".join(str(err).split())[:300]
        raise ModelError(str(path), f"weights do not fit the config: {problem}") from None
    return model.eval(), tokenizer, meta
