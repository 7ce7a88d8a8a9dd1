"""The batch output: an append-only JSONL file that a killed job resumes from.

Crash safety rests on two rules. Each finished row is written with one ``os.write`` of
the whole line, newline included, to a file opened with ``O_APPEND``, then fsynced, so
a kill at any moment leaves at worst one torn last line and never a torn line in the
middle. And a resuming job repairs only that: it cuts a torn or unparseable last line
off and leaves every complete line as it is.

One job at a time writes an output: :class:`OutputLock` holds ``<output>.lock`` for the
job's life, so a second job on the same file (by any spelling of its path) is refused
before it reads or changes anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

from ctxasr.batch.rows import Task, audio_key
from ctxasr.errors import CtxasrError
from ctxasr.files import atomic_write, check_output_file


@dataclass(frozen=True)
class Finished:
    """The rows an output file already holds, by manifest line."""

    lines: frozenset[int] = frozenset()
    errors: frozenset[int] = frozenset()  # those of ``lines`` that ended with an error
    repaired: bool = False  # whether a torn last line was cut off


def check_output(output: Path, manifest: Path) -> None:
    """Refuse an output path that would clobber the manifest or cannot be a file (a
    FIFO would block the reading of what it holds)."""
    check_output_file(output, "-o")
    if output.exists() and output.resolve() == manifest.resolve():
        raise CtxasrError(str(output), "is the manifest; refusing to append results to it")


def read_finished(output: Path, tasks: Sequence[Task]) -> Finished:
    """The rows ``output`` holds for this manifest, after cutting off a torn last line.

    Raises:
        CtxasrError: ``output`` holds another manifest's rows (a transcript whose
            ``manifest_line`` has another audio path in the manifest, or a line the
            manifest does not have), or a line that is not a result row anywhere but
            at the end. Nothing is changed then.
    """
    if not output.exists():
        return Finished()
    expected = {t.line: t.key for t in tasks}
    lines: set[int] = set()
    errors: set[int] = set()
    good_end = 0  # byte offset just past the last good row
    broken: int | None = None  # number of a line that is no result row
    for number, start, raw in _raw_lines(output):
        if broken is not None:  # only the last line may be broken: a kill tears no other
            raise _foreign(output, broken)
        row = _parse(raw)
        if row is None:
            # A torn write: the end of the file, no newline. Our rows carry a manifest
            # line: a whole object without one is another file's line, never cut off.
            torn = not raw.endswith(b"\n") and not _foreign_object(raw)
            if not torn and not lines:
                raise _foreign(output, number)
            broken = number
            continue
        line = row["manifest_line"]
        # An error row is matched by its line alone: the user may have fixed that very
        # line (its JSON, its audio path) since, for --retry-errors to run it again.
        if line not in expected or ("error" not in row and audio_key(row) != expected[line]):
            raise CtxasrError(str(output), _mismatch(line, audio_key(row), expected))
        lines.add(line)
        if "error" in row:
            errors.add(line)
        good_end = start + len(raw)
    repaired = good_end < output.stat().st_size
    if repaired:
        os.truncate(output, good_end)
    return Finished(frozenset(lines), frozenset(errors), repaired)


def _foreign(output: Path, number: int) -> CtxasrError:
    return CtxasrError(f"{output}:{number}", "is not a batch result row; "
                       "not a ctxasr batch output? (pass another -o)")  # fmt: skip


def _raw_lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset, raw bytes with the newline) of each line of ``path``."""
    offset = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            yield number, offset, raw
            offset += len(raw)


def _parse(raw: bytes) -> dict[str, Any] | None:
    """A complete result row, or None for a torn or foreign line."""
    if not raw.endswith(b"\n"):
        return None  # cut short by a kill, even if what is there happens to parse
    row = _load(raw)
    if not isinstance(row, dict):
        return None
    line = row.get("manifest_line")
    if not isinstance(line, int) or isinstance(line, bool) or line < 1:
        return None
    return row


def _foreign_object(raw: bytes) -> bool:
    obj = _load(raw)
    return isinstance(obj, dict) and "manifest_line" not in obj


def _load(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, a 4,300-digit number, deep nesting
        return None


def _mismatch(line: int, got: str | None, expected: dict[int, str | None]) -> str:
    if line not in expected:
        said = f"has a row for manifest line {line}, which the manifest does not have"
    else:
        said = (f"has a row for manifest line {line} with audio {got!r}, "
                f"where the manifest has {expected[line]!r}")  # fmt: skip
    return f"{said}: it holds another manifest's results; pass another -o"


def drop_error_rows(output: Path) -> int:
    """Rewrite ``output`` without its error rows (atomically); returns how many went.

    Complete lines are copied byte for byte; call after :func:`read_finished` has
    repaired the end of the file.
    """
    dropped = 0
    with atomic_write(output, binary=True) as f:
        for _, _, raw in _raw_lines(output):
            row = _parse(raw)
            if row is not None and "error" in row:
                dropped += 1
            else:
                f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    return dropped


class AppendLog:
    """Appends result rows to a JSONL file, each durable once ``write`` returns.

    The file is created at the first row, so a job that fails before any row finishes
    leaves no empty output behind.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def write(self, row: dict[str, Any]) -> None:
        data = encode_row(row)
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        # One write call per line: with O_APPEND it lands whole at the end of the file,
        # so a kill leaves at most this line torn, which the next run cuts off.
        written = os.write(self._fd, data)
        if written != len(data):
            raise CtxasrError(str(self.path), f"short write ({written} of {len(data)} bytes); "
                              "disk full? Free space and re-run to resume")  # fmt: skip
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def encode_row(row: dict[str, Any]) -> bytes:
    """One JSONL line, UTF-8, newline included."""
    try:
        return (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate read from a "\ud800" escape
        return (json.dumps(row) + "\n").encode("ascii")


# --- one job an output ---------------------------------------------------------------

LOCK_SUFFIX = ".lock"
# msvcrt.locking locks bytes (mandatory on Windows: a locked byte cannot be read), so
# there the lock is one byte far past the holder's line, which stays readable.
_MSVCRT_LOCK_OFFSET = 1 << 20


class OutputLock:
    """Holds ``<output>.lock`` (beside the output, symlinks resolved) while a job writes.

    The lock is the kernel's, not the file's existence: ``fcntl.flock`` on the open lock
    file (on Windows ``msvcrt.locking``, which also dies with its process), kept open for
    the job's life. So a job killed by SIGKILL or the OOM killer holds nothing once it is
    gone: its lock file stays behind, and the next job takes it over. A pid check on an
    ``O_EXCL`` file would need guessing whether a pid was reused, and is not needed where
    the kernel releases locks. Worker processes do not inherit the descriptor (Python's
    files are not inheritable), so a worker outliving its driver does not keep the lock.

    The file holds the holder's pid, host and start time, for the refusal message.
    ``release`` removes it (an ``O.lock`` left by a kill is harmless).
    """

    def __init__(self, output: Path) -> None:
        self.output = output
        target = output.resolve()  # another spelling or a symlink: the same lock
        self.path = target.with_name(target.name + LOCK_SUFFIX)
        self._fd: int | None = None

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, or raise at once.

        Raises:
            CtxasrError: another job holds it (naming its pid, host and start), or the
                lock file cannot be created.
        """
        while self._fd is None:
            fd = self._open()
            if not _try_lock(fd):
                holder = _holder(fd)
                os.close(fd)
                raise CtxasrError(str(self.output), f"another batch job{holder} is writing "
                                  "it; wait for it or stop it")  # fmt: skip
            # A holder that released removes the file first: a lock taken on its old
            # inode, or on one removed since, is no lock. Open the path again.
            if _same_file(fd, self.path):
                self._fd = fd
            else:
                os.close(fd)
        _write_holder(self._fd)

    def release(self) -> None:
        """Remove the lock file and let go of the lock; a no-op when not held."""
        if self._fd is None:
            return
        # Removed while still locked, so that no job can lock this inode and think it
        # holds the lock on the path (see ``acquire``).
        with contextlib.suppress(OSError):  # on Windows an open file cannot be removed
            self.path.unlink()
        os.close(self._fd)  # closing lets go of the lock
        self._fd = None

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise CtxasrError(str(self.path), f"cannot create the lock file "
                              f"({err.strerror or err}); is the folder writable?") from None  # fmt: skip


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            os.lseek(fd, _MSVCRT_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:  # BlockingIOError with flock, PermissionError with msvcrt
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _write_holder(fd: int) -> None:
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    line = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started})
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (line + "\n").encode("utf-8"))


def _holder(fd: int) -> str:
    """`` (pid 1234 on host h, started ...)`` from the lock file, or "" if unreadable."""
    # The holder writes its line just after it takes the lock: give it a moment.
    for _ in range(20):
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 4096)
        if data.endswith(b"\n"):
            break
        time.sleep(0.01)
    found = _load(data)
    if not isinstance(found, dict):
        return ""
    pid, host, started = found.get("pid"), found.get("host"), found.get("started")
    if not isinstance(pid, int) or not isinstance(host, str) or not isinstance(started, str):
        return ""
    return f" (pid {pid} on host {host}, started {started})"
