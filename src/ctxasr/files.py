"""Files given by the user: checked before use, and written atomically."""

from __future__ import annotations

import functools
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ctxasr.errors import CtxasrError


def cache_root() -> Path:
    """ctxasr's cache folder: ``$CTXASR_CACHE``, else ``$XDG_CACHE_HOME/ctxasr`` or
    ``~/.cache/ctxasr``. Context indexes, documents' language models, joined models and
    LLM conversions live in folders under it."""
    if os.environ.get("CTXASR_CACHE"):
        return Path(os.environ["CTXASR_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ctxasr"


def check_input_file(path: str | os.PathLike[str], error: type[CtxasrError], kind: str) -> Path:
    """``path`` as a readable regular file, or ``error`` naming it and the problem.

    ``kind`` says what was expected, e.g. ``"an audio file"``. A FIFO, socket or device
    is refused: reading a FIFO waits for a writer that may never come.
    """
    p = Path(path)
    try:
        info = p.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise error(str(path), "no such file") from None
    except (OSError, ValueError) as err:  # a name too long, a loop of links, a NUL
        raise error(str(path), f"cannot be read ({_reason(err)})") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(str(path), f"is a directory, not {kind}")
    if not stat.S_ISREG(info.st_mode):
        raise error(str(path), f"is not a regular file (a FIFO or a device?), not {kind}")
    if not os.access(p, os.R_OK):
        raise error(str(path), "permission denied")
    return p


def check_output_file(path: Path, flag: str = "--output") -> None:
    """Refuse, before any work, an output path that cannot become a regular file: a
    folder, a FIFO or device (a write would replace it), a name the system refuses,
    a missing folder.

    Raises:
        CtxasrError: naming ``path`` (``flag`` is the option that takes it).
    """
    try:
        info = path.stat()
    except FileNotFoundError:  # nothing there yet (or a link to nothing yet)
        info = None
    except NotADirectoryError:
        raise CtxasrError(str(path), f"{str(path.parent)!r} is not a folder") from None
    except (OSError, ValueError) as err:
        raise CtxasrError(str(path), f"cannot be written ({_reason(err)})") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise CtxasrError(str(path), f"is a directory; {flag} takes a file path")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise CtxasrError(str(path), f"is not a regular file (a FIFO or a device?); "
                          f"{flag} takes a file path")  # fmt: skip
    if not path.parent.is_dir():
        raise CtxasrError(str(path), f"folder {str(path.parent)!r} does not exist")


def _reason(err: OSError | ValueError) -> str:
    return getattr(err, "strerror", None) or str(err)


@functools.cache
def _file_mode() -> int:
    """Permissions of a newly created file under the process umask (e.g. 0o644).

    Read once: setting the umask to read it would race with files being created by
    other threads.
    """
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_write(path: str | Path, *, binary: bool = False) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path``.

    An error (or interrupt) inside the block removes the temporary file and leaves any
    earlier file at ``path`` untouched. Text is UTF-8 with ``\\n`` line endings. The
    file gets the usual permissions (``mkstemp`` would leave it readable by its owner
    only).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode())
        if binary:
            f = os.fdopen(fd, "wb")
        else:
            f = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        with f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json_object(path: Path, error: type[CtxasrError] = CtxasrError) -> dict[str, Any]:
    """The JSON object stored in ``path``, or ``error`` naming the file and the problem."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(str(path), f"cannot be read as JSON ({err})") from None
    if not isinstance(value, dict):
        raise error(str(path), "is not a JSON object")
    return value
