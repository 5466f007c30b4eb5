"""Start the server with uvicorn: one process, or ``workers`` processes sharing the port.

With ``--workers N`` uvicorn's supervisor binds the port, spawns N worker processes that each
build the app from the configuration in ``CONFIG_ENV`` (each with its own store connection or
pool), restarts a worker that dies, restarts them all one at a time on SIGHUP, and stops them
all on SIGTERM or Ctrl-C once their requests in flight are answered (``GRACE_SECONDS`` at
most). The store is opened (and migrated) once in the supervisor before any
worker starts, so a bad ``--backend-store-uri`` fails with its message and workers never race
to create tables; the supervisor then closes it: it serves nothing. The workers' lifecycle
(started, died, stopped) is logged; requests are not.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from reprorun.server.app import CONFIG_ENV, ServerConfig

# On SIGTERM or Ctrl-C, requests in flight get this long to finish before they are cut.
GRACE_SECONDS = 30

# What the workers' log keeps of uvicorn's messages: lifecycle, warnings and errors. The
# per-worker lifespan chatter ("Waiting for application startup." ...) says nothing here.
_LIFESPAN_CHATTER = (
    "Waiting for application startup",
    "Application startup complete",
    "Waiting for application shutdown",
    "Application shutdown complete",
    "Waiting for child process",
)


class WorkerLogFilter(logging.Filter):
    """Drops uvicorn's per-worker lifespan messages from the ``--workers`` log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not str(record.msg).startswith(_LIFESPAN_CHATTER)


def workers_log_config() -> dict[str, Any]:
    """uvicorn's logging for ``--workers``: its lifecycle messages at INFO on stderr
    (``Started server process [pid]``, ``Child process [pid] died``, ``Received SIGTERM``), no
    access log. Applied again in every worker process."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"lifecycle": {"()": f"{__name__}.WorkerLogFilter"}},
        "formatters": {
            "default": {
                "()": "uvicorn.logging.DefaultFormatter",
                "fmt": "%(levelprefix)s %(message)s",
                "use_colors": None,
            }
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["lifecycle"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def serve(config: ServerConfig, *, host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    from reprorun.server.app import application_for, create_app

    # Open (and migrate) the store before binding, so a bad --backend-store-uri fails with its
    # message rather than inside a worker, and workers never create tables at once.
    application = application_for(config)
    app = create_app(config, application)
    if workers == 1:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=GRACE_SECONDS,
        )
        return
    from reprorun.tracking.store import close_stores

    # The supervisor serves nothing: no pool kept open, none inherited by a worker, which
    # opens its own store.
    close_stores()
    _fork_workers()
    # Worker processes import the app by name and read the configuration from the env.
    os.environ[CONFIG_ENV] = config.to_env()
    global _failure
    _failure = _shared_text()
    uvicorn.run(
        f"{__name__}:worker_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=workers_log_config(),
        access_log=False,
        timeout_graceful_shutdown=GRACE_SECONDS,
    )
    why = _failure.value.decode(errors="replace") if _failure is not None else ""
    if why:
        from reprorun.errors import ReprorunError

        raise ReprorunError(f"A server worker could not start, so the server stopped: {why}")


# Written by a --workers process that cannot build its app, read by the supervisor once
# uvicorn has stopped (shared memory, inherited by the forked workers).
_failure: Any = None
_STARTUP_FAILURE = 3  # uvicorn's exit code for a worker that cannot start: it stops them all


def _shared_text() -> Any:
    import multiprocessing

    if not sys.platform.startswith("linux"):
        return None  # spawned workers would not share it
    return multiprocessing.get_context("fork").Array("c", 2000, lock=False)


def worker_app() -> Any:
    """The app of one ``--workers`` process (uvicorn's factory). A worker that cannot build
    it (the database unreachable when a dead worker is replaced, the password file gone)
    logs why and exits with uvicorn's start-up failure code: uvicorn then stops the server
    instead of restarting that worker in a loop, and the supervisor reports the reason."""
    from reprorun.errors import ReprorunError
    from reprorun.server.app import ServerConfig, create_app

    try:
        config = ServerConfig.from_env()
        # Read once, then gone: it may hold the auth token, and what the worker starts (a
        # notification's command) inherits its environment.
        os.environ.pop(CONFIG_ENV, None)
        return create_app(config)
    except Exception as exc:
        why = str(exc) if isinstance(exc, ReprorunError) else f"{type(exc).__name__}: {exc}"
        logging.getLogger("uvicorn.error").error("Worker [%d] cannot start: %s", os.getpid(), why)
        if _failure is not None:
            _failure.value = why.encode()[: len(_failure) - 1]
        raise SystemExit(_STARTUP_FAILURE) from None


def _fork_workers() -> None:
    """Start uvicorn's workers by fork rather than spawn: each inherits the supervisor's
    imported modules (Starlette, SQLAlchemy, the store code) instead of importing them again,
    and shares their pages until written. The supervisor holds no connection, thread or open
    store by then. uvicorn has no option for it: its module-level context is replaced."""
    import multiprocessing

    from uvicorn import _subprocess

    # Linux only: macOS's system libraries are not fork-safe (Python spawns there by default).
    if hasattr(_subprocess, "spawn") and sys.platform.startswith("linux"):
        _subprocess.spawn = multiprocessing.get_context("fork")  # type: ignore[assignment]


def pick_port(host: str, port: int) -> int:
    """``port`` if it is free on ``host`` (any free port for 0); a clear error if taken."""
    import errno
    import socket

    from reprorun.errors import UserInputError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As uvicorn binds: a port whose last server just stopped (TIME_WAIT) is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
