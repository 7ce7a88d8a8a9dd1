"""Run the app under uvicorn: SIGTERM or Ctrl-C stops accepting connections, lets
in-flight requests finish for ``shutdown_grace`` seconds, then cancels the rest."""

from __future__ import annotations

from ctxasr.server.app import create_app
from ctxasr.server.settings import ServerSettings


def serve(settings: ServerSettings, *, log_level: str = "info") -> None:
    """Serve until a signal stops the server; the model loads before the port opens."""
    import uvicorn

    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        timeout_graceful_shutdown=settings.shutdown_grace,
        # The body limit is ours (BodyLimit); this bounds idle keep-alive sockets.
        timeout_keep_alive=30,
    )
    uvicorn.Server(config).run()
