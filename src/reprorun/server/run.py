"""Start the server with uvicorn (one process, or ``workers`` processes sharing the port)."""

from __future__ import annotations

import os

from reprorun.server.app import CONFIG_ENV, ServerConfig


def serve(config: ServerConfig, *, host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    from reprorun.server.app import create_app

    # Open the store before binding, so a bad --backend-store-uri fails with its message
    # rather than inside a worker.
    app = create_app(config)
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
        return
    # Worker processes import the app by name and read the configuration from the env.
    os.environ[CONFIG_ENV] = config.to_env()
    uvicorn.run(
        "reprorun.server.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )
