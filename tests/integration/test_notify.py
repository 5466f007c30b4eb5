"""Notifications of a run's end, delivered for real: a loopback HTTP server, a local SMTP
server (aiosmtpd), a command; a target that cannot be reached is recorded, the run stays."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from reprorun.backends import notify
from reprorun.errors import RunFailed, UserInputError
from reprorun.projects.launch import run_request
from reprorun.projects.request import RunRequest
from reprorun.tracking.entities import RunStatus, SystemTags
from reprorun.tracking.store import open_store
from tests.conftest import make_project, reprorun_cli

LOGS_A_METRIC = "entry_points:\n  main:\n    command: 'reprorun log metric accuracy 0.75'\n"


class Hooks:
    """A webhook receiver on 127.0.0.1: each POST's path and JSON body."""

    def __init__(self) -> None:
        received = self.received = []  # type: list[tuple[str, dict[str, Any]]]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append((self.path, json.loads(self.rfile.read(length))))
                self.send_response(404 if self.path.startswith("/missing") else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    server = Hooks()
    yield server
    server.close()


class Inbox:
    """aiosmtpd's handler: keeps each message's envelope and content."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    monkeypatch.setenv("REPRORUN_SMTP_URL", f"smtp://127.0.0.1:{controller.port}")
    monkeypatch.setenv("REPRORUN_SMTP_FROM", "runs@example.org")
    yield inbox
    controller.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def recorder(tmp_path: Path, exit_code: int = 0) -> tuple[str, Path]:
    """A cmd: target writing its stdin to a file (and exiting with ``exit_code``)."""
    script, out = tmp_path / "recorder.py", tmp_path / "payload.json"
    script.write_text(
        "import sys\n"
        f"open(sys.argv[1], 'w').write(sys.stdin.read())\n"
        f"print('recorder says no', file=sys.stderr)\n"
        f"sys.exit({exit_code})\n"
    )
    return f"cmd:{sys.executable} {script} {out}", out


def test_a_webhook_hears_the_end_of_a_run(home: Path, tmp_path: Path, hooks: Hooks) -> None:
    project = make_project(tmp_path / "p", LOGS_A_METRIC)
    request = RunRequest(
        str(project), experiment_name="nightly", notify=(f"{hooks.url}/hook?team=ml",)
    )
    submitted = run_request(request, echo=False)
    assert len(hooks.received) == 1
    path, body = hooks.received[0]
    assert path == "/hook?team=ml"
    assert body["event"] == "finished"
    assert body["run_id"] == submitted.run_id
    assert body["status"] == "FINISHED"
    assert body["metrics"] == {"accuracy": 0.75}
    assert body["experiment"] == "nightly"
    assert body["link"] == f"reprorun runs show {submitted.run_id}"
    assert body["duration_seconds"] >= 0
    run = open_store().get_run(submitted.run_id)
    assert SystemTags.NOTIFY_ERROR not in run.data.tags


def test_a_failed_run_is_mailed(home: Path, tmp_path: Path, smtp: Inbox) -> None:
    project = make_project(tmp_path / "p", "entry_points:\n  main:\n    command: 'exit 3'\n")
    request = RunRequest(str(project), notify=("mailto:ana@example.org",))
    with pytest.raises(RunFailed) as raised:
        run_request(request, echo=False)
    assert len(smtp.messages) == 1
    recipients, content = smtp.messages[0]
    assert recipients == ["ana@example.org"]
    message = message_from_bytes(content)
    assert message["From"] == "runs@example.org"
    assert message["Subject"].startswith("reprorun: ") and "failed: FAILED" in message["Subject"]
    assert raised.value.run_id in message.get_payload()


def test_a_command_gets_the_payload_on_stdin(home: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", LOGS_A_METRIC)
    target, out = recorder(tmp_path)
    submitted = run_request(RunRequest(str(project), notify=(target,)), echo=False)
    data = json.loads(out.read_text())
    assert data["run_id"] == submitted.run_id
    assert data["status"] == "FINISHED"


def test_an_undeliverable_notification_is_recorded_and_the_run_stays_finished(
    home: Path, tmp_path: Path, hooks: Hooks
) -> None:
    project = make_project(tmp_path / "p", LOGS_A_METRIC)
    command, _ = recorder(tmp_path, exit_code=3)
    targets = (f"http://127.0.0.1:{free_port()}/gone", f"{hooks.url}/missing/secret", command)
    started = time.monotonic()
    submitted = run_request(RunRequest(str(project), notify=targets), echo=False)
    assert time.monotonic() - started < 30
    assert submitted.get_status() is RunStatus.FINISHED
    run = open_store().get_run(submitted.run_id)
    assert run.info.status is RunStatus.FINISHED
    error = run.data.tags[SystemTags.NOTIFY_ERROR]
    assert "http://127.0.0.1/...: cannot connect" in error
    assert "http://127.0.0.1/...: HTTP 404" in error
    assert "exit 3: recorder says no" in error
    assert "secret" not in error


def test_a_mail_target_without_smtp_settings_is_recorded(home: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", LOGS_A_METRIC)
    submitted = run_request(RunRequest(str(project), notify=("ana@example.org",)), echo=False)
    run = open_store().get_run(submitted.run_id)
    assert run.info.status is RunStatus.FINISHED
    assert "REPRORUN_SMTP_URL is not set" in run.data.tags[SystemTags.NOTIFY_ERROR]


def test_the_setting_and_the_experiment_tag_are_honoured(
    home: Path, tmp_path: Path, hooks: Hooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path / "p", LOGS_A_METRIC)
    store = open_store()
    experiment_id = store.get_or_create_experiment("tagged")
    command, out = recorder(tmp_path)
    store.set_experiment_tag(experiment_id, notify.NOTIFY_TAG, command)
    monkeypatch.setenv("REPRORUN_NOTIFY", f"{hooks.url}/from-setting, {hooks.url}/from-setting")
    submitted = run_request(RunRequest(str(project), experiment_name="tagged"), echo=False)
    assert [path for path, _ in hooks.received] == ["/from-setting"]  # each target once
    assert json.loads(out.read_text())["run_id"] == submitted.run_id
    other = run_request(RunRequest(str(project), experiment_name="untagged"), echo=False)
    assert len(hooks.received) == 2 and hooks.received[1][1]["run_id"] == other.run_id


def test_notify_for_a_retry_or_a_lost_node(home: Path, tmp_path: Path, hooks: Hooks) -> None:
    """What the retry and heartbeat code call: ``notify(store, event, run)``."""
    store = open_store()
    experiment_id = store.get_or_create_experiment("e")
    store.set_experiment_tag(experiment_id, notify.NOTIFY_TAG, f"{hooks.url}/x")
    run = store.create_run(experiment_id, run_name="r", user_id="u", tags={}, params={})
    notify.notify(store, notify.Event.RETRY, store.get_run(run.info.run_id))
    assert hooks.received[0][1]["event"] == "retry"
    assert hooks.received[0][1]["status"] == "RUNNING"


def test_a_detached_run_notifies_the_experiments_targets(home: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", LOGS_A_METRIC)
    store = open_store()
    experiment_id = store.get_or_create_experiment("detached")
    command, out = recorder(tmp_path)
    store.set_experiment_tag(experiment_id, notify.NOTIFY_TAG, command)
    request = RunRequest(str(project), experiment_name="detached", synchronous=False, detach=True)
    submitted = run_request(request, echo=False)
    deadline = time.monotonic() + 60
    while not (out.exists() and out.read_text().endswith("}")):  # the whole payload
        assert time.monotonic() < deadline, "the supervisor notified nobody"
        time.sleep(0.1)
    data = json.loads(out.read_text())
    assert (data["run_id"], data["status"]) == (submitted.run_id, "FINISHED")


def test_notify_with_detach_is_refused_with_what_to_do(tmp_path: Path) -> None:
    request = RunRequest(str(tmp_path), synchronous=False, detach=True, notify=("a@b.org",))
    with pytest.raises(UserInputError, match="REPRORUN_NOTIFY or tag the experiment"):
        request.check()


def test_the_cli_notifies_and_refuses_a_target_of_no_kind(home: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", LOGS_A_METRIC)
    target, out = recorder(tmp_path)
    result = reprorun_cli("run", str(project), "--notify", target)
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["status"] == "FINISHED"
    refused = reprorun_cli("run", str(project), "--notify", "the-team")
    assert refused.returncode != 0
    assert "Notification target 'the-team' is not a webhook URL" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_run_whose_command_could_not_start_is_notified(
    home: Path, tmp_path: Path, hooks: Hooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path / "p", LOGS_A_METRIC)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no bash: a launch error
    request = RunRequest(str(project), env_manager="local", notify=(f"{hooks.url}/hook",))
    with pytest.raises(Exception):  # noqa: B017 - the launch's own error, whatever its class
        run_request(request, echo=False)
    assert len(hooks.received) == 1
    _, body = hooks.received[0]
    assert (body["event"], body["status"], body["exit_reason"]) == (
        "failed",
        "FAILED",
        "launch-error",
    )


def _tagged_run(store: Any, command: str) -> Any:
    experiment_id = store.get_or_create_experiment("tagged-cmd")
    store.set_experiment_tag(experiment_id, notify.NOTIFY_TAG, command)
    run = store.create_run(experiment_id, run_name="r", user_id="u", tags={}, params={})
    return store.get_run(run.info.run_id)


def test_a_command_named_by_the_tag_of_a_store_others_write_is_never_run(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever may tag an experiment would run commands as the notifying user: a tag's
    command runs only from the user's own store, never in a server."""
    command, out = recorder(tmp_path)
    store = open_store()
    run = _tagged_run(store, command)
    notify.notify(store, notify.Event.FINISHED, run)  # the user's own SQLite file: runs
    assert json.loads(out.read_text())["run_id"] == run.info.run_id
    out.unlink()
    # Group-writable: another user could have written the tag.
    db = Path(store.db.path)  # type: ignore[attr-defined]
    db.chmod(0o664)
    notify.notify(store, notify.Event.FINISHED, run)
    assert not out.exists()
    said = store.get_run(run.info.run_id).data.tags[SystemTags.NOTIFY_ERROR]
    assert "not run: a command named by the experiment's reprorun.notify tag" in said
    assert "--notify or REPRORUN_NOTIFY" in said
    db.chmod(0o644)
    # A server never runs one, whatever its store.
    monkeypatch.setattr(notify, "_tag_commands", True)
    notify.refuse_tag_commands()
    notify.notify(store, notify.Event.FINISHED, run)
    assert not out.exists()
    # The setting's command still runs there (the server's own configuration).
    monkeypatch.setenv("REPRORUN_NOTIFY", command)
    notify.notify(store, notify.Event.FINISHED, run)
    assert json.loads(out.read_text())["run_id"] == run.info.run_id


def test_a_command_gets_no_secrets_in_its_environment(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "env.json"
    script = tmp_path / "env.py"
    script.write_text(
        f"import json, os\nopen({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))\n"
    )
    secrets = {
        "REPRORUN_SERVER_TOKEN": "t0k",
        "MLFLOW_TRACKING_PASSWORD": "pw",
        "AWS_SECRET_ACCESS_KEY": "k",
        "AWS_ACCESS_KEY_ID": "id",
        "GITHUB_TOKEN": "gh",
        "REPRORUN_SERVER_CONFIG": "{}",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WIKI_URL", "http://ana:s3cret@wiki.example:5000/page")
    monkeypatch.setenv("TEAM_CHANNEL", "ml-alerts")
    monkeypatch.setenv("REPRORUN_NOTIFY", f"cmd:{sys.executable} {script}")
    store = open_store()
    run = store.create_run("0", run_name="r", user_id="u", tags={}, params={})
    notify.notify(store, notify.Event.FINISHED, store.get_run(run.info.run_id))
    env = json.loads(out.read_text())
    assert not set(secrets) & set(env)
    assert env["WIKI_URL"] == "http://wiki.example:5000/page"
    assert env["TEAM_CHANNEL"] == "ml-alerts"  # what the command may need stays
    assert "PATH" in env
