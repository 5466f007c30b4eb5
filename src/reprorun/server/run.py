"""Start the server with uvicorn (one process, or ``workers`` processes sharing the port)."""

from __future__ import annotations

import os

from reprorun.server.app import CONFIG_ENV, ServerConfig


def serve(config: ServerConfig, *, host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    from reprorun.server.app import application_for, create_app

    # Open the store before binding, so a bad --backend-store-uri fails with its message
    # rather than inside a worker. Worker processes build their application the same way.
    app = create_app(config, application_for(config))
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


def pick_port(host: str, port: int) -> int:
    """``port`` if it is free on ``host`` (any free port for 0); a clear error if taken."""
    import errno
    import socket

    from reprorun.errors import UserInputError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserInputError(
                    f"Port {port} on {host} is already in use (another server?). Choose another "
                    "with --port, or --port 0 for any free one."
                ) from None
            raise UserInputError(f"Cannot listen on {host}:{port}: {exc.strerror}.") from None
        return int(sock.getsockname()[1])


def open_browser_when_ready(url: str, host: str, port: int, timeout: float = 30.0) -> None:
    """Open ``url`` in the user's browser once the server accepts connections (in a thread,
    so the server starts meanwhile)."""
    import threading

    def wait_then_open() -> None:
        import socket
        import time
        import webbrowser

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, port), timeout=1).close()
            except OSError:
                time.sleep(0.05)
                continue
            webbrowser.open(url)
            return

    threading.Thread(target=wait_then_open, name="open-browser", daemon=True).start()
