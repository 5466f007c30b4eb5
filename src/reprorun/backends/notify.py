"""Notifications: tell someone that a run ended, failed, is retried or lost its node.

A target is a webhook URL (a JSON POST of the payload; Slack's ``{"text": ...}`` when the host
is hooks.slack.com), an e-mail address (``mailto:`` or bare; sent through ``REPRORUN_SMTP_URL``
from ``REPRORUN_SMTP_FROM``) or a command (``cmd:/path/to/script args``, the payload as JSON on
its stdin). Targets come from ``reprorun run --notify``, the ``REPRORUN_NOTIFY`` setting and the
experiment's ``reprorun.notify`` tag (both comma-separated).

Delivery happens once the run's status is written, takes at most ``TIMEOUT_SECONDS`` per
target, and never fails the run: what could not be delivered is recorded on the run in the
``reprorun.notifyError`` tag. It lives in backends so that whatever closes a run (the launch,
a retry, a reader that finds a lost heartbeat) can call ``notify``.

A command runs as whoever delivers, so one named by an experiment's tag (which anyone who may
tag experiments wrote) runs only from the user's own store: a SQLite file this user owns that
nobody else may write. A tracking server (``refuse_tag_commands``), a shared database or
another user's file never runs it, and says so on the run. A command gets this process's
environment without its secrets (tokens, passwords, keys, credentials in URLs).
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlparse

from reprorun.config import setting
from reprorun.errors import UserInputError
from reprorun.tracking.entities import Run, RunStatus, SystemTags
from reprorun.tracking.store.base import TrackingStore

NOTIFY_TAG = "reprorun.notify"  # on an experiment: its runs' targets, comma-separated
_REFUSED = "refused-from-tag:"  # a command the experiment's tag named, not to be run here
_SECRET_NAME = re.compile(
    r"TOKEN|PASSW|SECRET|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_KEY|^AWS_|SERVER_CONFIG", re.I
)
_URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s]*@", re.I)
_tag_commands = True  # False in a tracking server: its clients write the experiments' tags


def refuse_tag_commands() -> None:
    """Never run a command named by an experiment's tag in this process (a tracking server:
    any client that may tag an experiment would run commands as the server's user)."""
    global _tag_commands
    _tag_commands = False


TIMEOUT_SECONDS = 5.0  # per target
MAX_METRICS = 10
_MAX_ERROR = 4000  # characters of the reprorun.notifyError tag
_SLACK_HOST = "hooks.slack.com"


class Event(str, Enum):
    """What is notified."""

    FINISHED = "finished"
    FAILED = "failed"
    KILLED = "killed"
    RETRY = "retry"  # a new attempt of the run starts
    NODE_LOST = "node-lost"  # its heartbeat stopped: closed as node-lost

    @classmethod
    def of(cls, status: RunStatus) -> Event:
        """The event of a run that ended with ``status``."""
        return {RunStatus.FAILED: cls.FAILED, RunStatus.KILLED: cls.KILLED}.get(
            status, cls.FINISHED
        )


@dataclass(frozen=True)
class Target:
    kind: str  # webhook, email or command
    value: str  # the URL, the address, the command line

    def __str__(self) -> str:
        """How the target is named in an error: without a webhook's secret path or query."""
        if self.kind == "webhook":
            parsed = urlparse(self.value)
            return f"{parsed.scheme}://{parsed.hostname}/..."
        if self.kind == "command":
            return "cmd:" + (shlex.split(self.value) or [""])[0]
        return self.value


def parse_target(text: str) -> Target:
    """The target ``text`` names; UserInputError if it is none of the three kinds."""
    text = text.strip()
    if text.startswith(("http://", "https://")):
        if not urlparse(text).hostname:
            raise UserInputError(f"Notification target {text!r} names no host.")
        return Target("webhook", text)
    if text.startswith("cmd:"):
        command = text[len("cmd:") :].strip()
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise UserInputError(f"Notification command {command!r}: {exc}.") from None
        if not argv:
            raise UserInputError("Notification target cmd: names no command.")
        return Target("command", command)
    address = text[len("mailto:") :] if text.startswith("mailto:") else text
    local, at, domain = address.partition("@")
    if at and local and "." in domain and not any(c.isspace() for c in address):
        return Target("email", address)
    raise UserInputError(
        f"Notification target {text!r} is not a webhook URL (https://...), an e-mail address "
        f"(name@example.org or mailto:...) or a command (cmd:/path/to/script args)."
    )


def split_targets(text: str | None) -> list[str]:
    """A comma-separated list of targets (the setting's and the tag's form)."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def targets_for(store: TrackingStore, experiment_id: str, given: Iterable[str] = ()) -> list[str]:
    """The run's targets: ``given`` (``--notify``), the setting's, the experiment's tag; each
    once, in that order."""
    found = [*given, *split_targets(setting("notify"))]
    try:
        tags = store.get_experiment(experiment_id).tags
    except Exception:  # an experiment the store cannot read: its tag is not known
        tags = {}
    for text in split_targets(tags.get(NOTIFY_TAG)):
        command = text.startswith("cmd:")
        found.append(_REFUSED + text if command and not _own_store(store) else text)
    return list(dict.fromkeys(found))


def _own_store(store: TrackingStore) -> bool:
    """Whether only this user writes ``store``'s experiments' tags: a SQLite file this user
    owns that neither its group nor others may write, and this process no server."""
    import os

    path = getattr(getattr(store, "db", None), "path", None)
    if not _tag_commands or not isinstance(path, str) or path == ":memory:":
        return False
    try:
        info = Path(path).stat()
    except OSError:
        return False
    return info.st_uid == os.getuid() and not info.st_mode & 0o022


def notify_end(
    store: TrackingStore,
    run_id: str,
    experiment_id: str,
    given: Iterable[str] = (),
    *,
    only_given: bool = False,
) -> None:
    """Notify the run's targets that it ended (its stored status says how); never raises.
    ``only_given``: the ``given`` ones alone (another process wrote the end, and told the
    setting's and the experiment's). Nothing is read beyond the experiment when there is no
    target."""
    targets = list(dict.fromkeys(given)) if only_given else targets_for(store, experiment_id, given)
    if not targets:
        return
    try:
        run = store.get_run(run_id)
    except Exception:
        return  # a store that cannot answer now: there is nothing to say
    notify(store, Event.of(run.info.status), run, targets)


def notify(
    store: TrackingStore, event: Event, run: Run, targets: Iterable[str] | None = None
) -> None:
    """Deliver ``event`` about ``run`` to ``targets`` (None: the setting's and the
    experiment's). What fails is recorded on the run (``reprorun.notifyError``); nothing is
    raised."""
    if targets is None:
        targets = targets_for(store, run.info.experiment_id)
    targets = list(targets)
    if not targets:
        return
    experiment = ""
    with suppress(Exception):  # an experiment the store cannot read now: its id is said
        experiment = store.get_experiment(run.info.experiment_id).name
    data = payload(event, run, experiment, getattr(store, "uri", None))
    errors = []
    for text in targets:
        if text.startswith(_REFUSED):
            errors.append(
                f"{_name(text[len(_REFUSED) :])}: not run: a command named by the experiment's "
                f"{NOTIFY_TAG} tag runs only from your own local store (on a server or a shared "
                f"store, whoever may tag experiments would run commands as this user); name it "
                f"with --notify or REPRORUN_NOTIFY instead"
            )
            continue
        try:
            deliver(parse_target(text), data)
        except UserInputError as exc:
            errors.append(str(exc)[:500])
        except Exception as exc:
            errors.append(f"{_name(text)}: {exc}"[:500])
    if errors:
        with suppress(Exception):  # the store refuses even that: the run is what matters
            store.set_tag(run.info.run_id, SystemTags.NOTIFY_ERROR, "; ".join(errors)[:_MAX_ERROR])


def _name(text: str) -> str:
    try:
        return str(parse_target(text))
    except UserInputError:
        return text


def payload(event: Event, run: Run, experiment: str, server: str | None) -> dict[str, Any]:
    """What every target receives (as JSON, or as the text of a message)."""
    info = run.info
    end = info.end_time or int(time.time() * 1000)
    metrics = {
        key: run.data.metrics[key]
        for key in sorted(run.data.metrics)
        if not key.startswith("system/")
    }
    return {
        "event": event.value,
        "run_id": info.run_id,
        "run_name": info.run_name,
        "status": info.status.value,
        "exit_reason": run.data.tags.get(SystemTags.EXIT_REASON),
        "duration_seconds": round(max(end - info.start_time, 0) / 1000, 3),
        "metrics": dict(list(metrics.items())[:MAX_METRICS]),
        "experiment_id": info.experiment_id,
        "experiment": experiment,
        "link": run_link(info.run_id, server),
    }


def run_link(run_id: str, server: str | None) -> str:
    """The UI's page of the run when the store is a tracking server, else the command."""
    if server and server.startswith(("http://", "https://")):
        parsed = urlparse(server)
        netloc = parsed.netloc.rpartition("@")[2]  # never the credentials user:password@
        return f"{parsed.scheme}://{netloc}{parsed.path.rstrip('/')}/#/runs/{run_id}"
    return f"reprorun runs show {run_id}"


def summary(data: dict[str, Any]) -> str:
    """The payload as one line, then one line per metric and the link."""
    reason = f" ({data['exit_reason']})" if data.get("exit_reason") else ""
    name = data["run_name"] or data["run_id"]
    lines = [
        f"reprorun: run {name} {data['event']}: {data['status']}{reason} after "
        f"{data['duration_seconds']:g} s, experiment {data['experiment'] or data['experiment_id']}"
    ]
    lines += [f"  {key} = {value:g}" for key, value in data["metrics"].items()]
    lines.append(data["link"])
    return "\n".join(lines)


def webhook_body(url: str, data: dict[str, Any]) -> dict[str, Any]:
    """A Slack webhook takes ``{"text": ...}``; any other webhook gets the payload."""
    if urlparse(url).hostname == _SLACK_HOST:
        return {"text": summary(data)}
    return data


def deliver(target: Target, data: dict[str, Any]) -> None:
    """Send ``data`` to ``target``; raises what went wrong (within TIMEOUT_SECONDS)."""
    if target.kind == "webhook":
        _post(target.value, data)
    elif target.kind == "email":
        _mail(target.value, data)
    else:
        _command(target.value, data)


def _post(url: str, data: dict[str, Any]) -> None:
    import base64

    from reprorun.tracking.http import HttpClient, Retries

    parsed = urlparse(url)
    auth = {}  # never MLflow's credentials: they are not this server's; user:password@ are
    if parsed.username:
        pair = f"{unquote(parsed.username)}:{unquote(parsed.password or '')}"
        auth["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    client = HttpClient(
        f"{parsed.scheme}://{parsed.netloc.rpartition('@')[2]}",
        timeout=TIMEOUT_SECONDS,
        auth=auth,
        retries=Retries(delays=(), unreachable=False),
        unreachable=lambda _what, exc: ConnectionError(f"cannot connect ({exc})"),
        keep_alive=False,
    )
    try:
        response = client.request(
            "POST",
            unquote(parsed.path) or "/",
            query=dict(parse_qsl(parsed.query)),
            body=json.dumps(webhook_body(url, data)).encode(),
            headers={"Content-Type": "application/json"},
            retry=False,
        )
    finally:
        client.close()
    if response.status >= 400:
        raise ConnectionError(f"HTTP {response.status}")


@dataclass(frozen=True)
class Smtp:
    """``REPRORUN_SMTP_URL``: smtp:// (plain), smtp+starttls:// (STARTTLS), smtps:// (TLS),
    with user:password@ when the server wants a login."""

    host: str
    port: int
    security: str  # "", "starttls" or "tls"
    user: str | None
    password: str | None


def smtp_settings() -> Smtp:
    raw = setting("smtp_url")
    if not raw:
        raise UserInputError("REPRORUN_SMTP_URL is not set (smtp://user:password@host:port).")
    parsed = urlparse(raw)
    security = {"smtp": "", "smtp+starttls": "starttls", "smtps": "tls"}.get(parsed.scheme)
    if security is None or not parsed.hostname:
        raise UserInputError(
            f"REPRORUN_SMTP_URL must be smtp://, smtp+starttls:// or smtps://host:port, got "
            f"{parsed.scheme}://..."
        )
    default_port = {"": 25, "starttls": 587, "tls": 465}[security]
    return Smtp(
        parsed.hostname,
        parsed.port or default_port,
        security,
        unquote(parsed.username) if parsed.username else None,
        unquote(parsed.password) if parsed.password else None,
    )


def _mail(address: str, data: dict[str, Any]) -> None:
    import smtplib
    import socket
    import ssl
    from email.message import EmailMessage

    smtp = smtp_settings()
    message = EmailMessage()
    message["From"] = setting("smtp_from") or f"reprorun@{socket.gethostname()}"
    message["To"] = address
    reason = f" ({data['exit_reason']})" if data.get("exit_reason") else ""
    message["Subject"] = (
        f"reprorun: {data['run_name'] or data['run_id']} {data['event']}: {data['status']}{reason}"
    )
    message.set_content(summary(data) + "\n\n" + json.dumps(data, indent=2) + "\n")
    client: smtplib.SMTP
    if smtp.security == "tls":
        context = ssl.create_default_context()
        client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=TIMEOUT_SECONDS, context=context)
    else:
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=TIMEOUT_SECONDS)
    with client:
        if smtp.security == "starttls":
            client.starttls(context=ssl.create_default_context())
        if smtp.user:
            client.login(smtp.user, smtp.password or "")
        client.send_message(message)


def _command(command: str, data: dict[str, Any]) -> None:
    import subprocess

    argv = shlex.split(command)
    try:
        done = subprocess.run(
            argv,
            input=json.dumps(data).encode(),
            env=command_env(),
            capture_output=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"still running after {TIMEOUT_SECONDS:g} s (stopped)") from None
    except OSError as exc:
        raise OSError(f"cannot start it ({exc.strerror or exc})") from None
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip()[-300:]
        raise RuntimeError(f"exit {done.returncode}" + (f": {said}" if said else ""))


def command_env() -> dict[str, str]:
    """This process's environment without what a notification command has no need of: the
    variables that name a secret (tokens, passwords, keys, credentials, AWS_*, a server's
    configuration) and the user:password of any URL in the others."""
    import os

    return {
        name: _URL_USERINFO.sub(r"\1", value)
        for name, value in os.environ.items()
        if not _SECRET_NAME.search(name)
    }
