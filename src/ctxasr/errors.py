"""Errors raised for bad user input.

Every user-facing failure is a :class:`CtxasrError` (a ``ValueError``) whose message
names the input and the problem in one line, so the CLI and the server can show it
as is and pick an exit code or HTTP status without parsing text.
"""

from __future__ import annotations


class CtxasrError(ValueError):
    """Bad user input: ``str(err)`` is ``"<source>: <problem>"``."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


class AudioError(CtxasrError):
    """An audio input that is missing, unreadable, corrupt or empty."""


class ContextError(CtxasrError):
    """A context input (term list, keywords, free text) that cannot be used."""


class ModelError(CtxasrError):
    """A model that cannot be found, fetched or loaded."""
