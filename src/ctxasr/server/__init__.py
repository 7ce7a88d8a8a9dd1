"""``ctxasr serve``: an OpenAI-compatible transcription server with context."""

from ctxasr.server.app import create_app
from ctxasr.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
