"""``ctxasr serve``: an OpenAI-compatible transcription server with context.

``create_app`` and ``ServerSettings`` load on first use, so that the command line can
read the settings' defaults without importing the app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ctxasr.server.app import create_app
    from ctxasr.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from ctxasr.server.app import create_app

        return create_app
    if name == "ServerSettings":
        from ctxasr.server.settings import ServerSettings

        return ServerSettings
    raise AttributeError(f"module 'ctxasr.server' has no attribute {name!r}")
