"""Real git repositories and servers on 127.0.0.1 for the source tests: `git daemon` (git://)
and smart HTTP (`git http-backend` behind a small threaded HTTP server)."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.conftest import stop_process

GIT = [
    "git",
    "-c",
    "user.name=Test",
    "-c",
    "user.email=test@example.com",
    "-c",
    "init.defaultBranch=main",
]


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        [*GIT, *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    git("add", "-A", cwd=repo)
    git("commit", "-qm", message, cwd=repo)
    return git("rev-parse", "HEAD", cwd=repo)


def make_repository(root: Path) -> dict[str, str]:
    """A repository with a project in sub/proj, two commits, a tag and a branch.

    Returns the commits: {"v1": first (tagged v1.0), "v2": second (main), "feature": branch}.
    """
    repo = root / "work"
    project = repo / "sub" / "proj"
    project.mkdir(parents=True)
    git("init", "-q", str(repo), cwd=root)
    (project / "MLproject").write_text(
        "name: versioned\nentry_points:\n  main:\n    parameters:\n      x: {type: int, default: 1}\n"
        "    command: 'python show.py {x}'\n"
    )
    (project / "show.py").write_text("import sys\nprint('version one', sys.argv[1])\n")
    (project / "data.txt").write_text("one\n")
    commits = {"v1": commit_all(repo, "first")}
    git("tag", "v1.0", cwd=repo)
    (project / "show.py").write_text("import sys\nprint('version two', sys.argv[1])\n")
    commits["v2"] = commit_all(repo, "second")
    git("checkout", "-qb", "feature", cwd=repo)
    (project / "show.py").write_text("import sys\nprint('feature branch', sys.argv[1])\n")
    commits["feature"] = commit_all(repo, "feature work")
    git("checkout", "-q", "main", cwd=repo)
    bare = root / "served" / "repo.git"
    bare.parent.mkdir()
    git("clone", "-q", "--bare", str(repo), str(bare), cwd=root)
    git("config", "http.receivepack", "true", cwd=bare)
    # Pushes go to the bare repository, as a developer pushes to a server.
    git("remote", "add", "server", str(bare), cwd=repo)
    return commits


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 15
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early: {proc.communicate()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing answers on 127.0.0.1:{port}")


@contextmanager
def git_daemon(base: Path) -> Iterator[str]:
    """`git daemon` serving ``base`` on 127.0.0.1; yields git://127.0.0.1:PORT."""
    port = free_port()
    proc = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            f"--base-path={base}",
            "--export-all",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, proc)
        yield f"git://127.0.0.1:{port}"
    finally:
        stop_process(proc, grace=5)
        if proc.stderr is not None:
            proc.stderr.close()


class _GitHttpHandler(BaseHTTPRequestHandler):
    """CGI bridge to `git http-backend` (the smart HTTP protocol)."""

    project_root: str = ""

    def do_GET(self) -> None:
        self._backend()

    def do_POST(self) -> None:
        self._backend()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _backend(self) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = {
            **os.environ,
            "GIT_PROJECT_ROOT": self.project_root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@contextmanager
def smart_http(base: Path) -> Iterator[str]:
    """Smart HTTP git server for ``base`` on 127.0.0.1; yields http://127.0.0.1:PORT."""
    handler = type("Handler", (_GitHttpHandler,), {"project_root": str(base)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
