"""What the command-line shells (``ctxasr``, ``ctxasr batch``) share: choices of their
flags and their progress bars. A module of its own because ``ctxasr.batch.cli`` cannot
import ``ctxasr.cli``, which mounts it, at import time."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any


class Retriever(str, Enum):
    """``--retriever``: how a context reaches the decoder (``TranscribeOptions.retriever``)."""

    hybrid = "hybrid"
    a2p = "a2p"
    phonetic = "phonetic"
    all = "all"
    none = "none"


RETRIEVER_HELP = (
    "hybrid: a first pass's words shortlist the terms by sound, a trained audio scorer "
    "re-ranks them, the picks go to a second pass (any context size); a2p: the audio "
    "scorer alone over the whole list (small contexts); phonetic: the sound match "
    "alone; all: the whole list in the prompt, as far as it fits; none: ignore the context."
)


class ProgressBar:
    """A rich progress bar on stderr, or a no-op when disabled.

    ``with Bar(enabled) as progress:`` gives the callback to hand to the library (None
    when disabled). Subclasses say which columns to show and how a call updates them.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._task: Any = None

    def columns(self) -> list[Any]:
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """More keyword arguments for ``rich.progress.Progress``."""
        return {}

    def update(self, *args: Any) -> None:
        raise NotImplementedError

    def started(self) -> None:
        """Called once the bar shows (to add its task up front)."""

    def __enter__(self) -> Callable[..., None] | None:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import Progress

        self._bar = Progress(*self.columns(), console=Console(stderr=True), transient=True,
                             **self.options())  # fmt: skip
        self._bar.__enter__()
        self.started()
        return self.update

    def __exit__(self, *exc: object) -> bool:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False
