"""Notification targets, payload and message bodies (backends/notify.py), without delivery."""

from __future__ import annotations

import pytest

from reprorun.backends.notify import (
    Event,
    Target,
    parse_target,
    payload,
    run_link,
    smtp_settings,
    split_targets,
    summary,
    webhook_body,
)
from reprorun.errors import UserInputError
from reprorun.projects.request import RunRequest
from reprorun.tracking.entities import Run, RunData, RunInfo, RunStatus, SystemTags


def a_run(metrics: dict[str, float] | None = None) -> Run:
    info = RunInfo(
        run_id="abc123",
        experiment_id="1",
        run_name="brave-owl",
        status=RunStatus.FAILED,
        start_time=1_000,
        end_time=63_500,
        artifact_uri="file:///tmp/a",
    )
    tags = {SystemTags.EXIT_REASON: "out-of-memory"}
    return Run(info, RunData(metrics=metrics or {}, tags=tags))


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("https://example.org/hook?x=1", "webhook", "https://example.org/hook?x=1"),
        ("http://127.0.0.1:8000/", "webhook", "http://127.0.0.1:8000/"),
        ("ana@example.org", "email", "ana@example.org"),
        ("mailto:ana@example.org", "email", "ana@example.org"),
        ("cmd:/usr/bin/notify-me --loud", "command", "/usr/bin/notify-me --loud"),
    ],
)
def test_targets_of_each_kind(text: str, kind: str, value: str) -> None:
    assert parse_target(text) == Target(kind, value)


@pytest.mark.parametrize("text", ["slack", "ana@localhost", "cmd:", "cmd:'unclosed", "https://"])
def test_a_target_of_no_kind_is_bad_input(text: str) -> None:
    with pytest.raises(UserInputError, match=r"(?i)target|command"):
        parse_target(text)


def test_a_request_with_a_bad_target_is_refused_before_anything_runs() -> None:
    with pytest.raises(UserInputError, match="not a webhook URL"):
        RunRequest(".", notify=("nobody",)).check()
    RunRequest(".", notify=("ana@example.org",)).check()


def test_a_request_keeps_its_targets_through_json() -> None:
    request = RunRequest(".", notify=("ana@example.org", "cmd:true"))
    assert RunRequest.from_json(request.to_json()).notify == ("ana@example.org", "cmd:true")


def test_errors_name_a_webhook_without_its_secret_path() -> None:
    target = parse_target("https://hooks.slack.com/services/T0/B0/secret")
    assert str(target) == "https://hooks.slack.com/..."
    assert "secret" not in str(target)


def test_split_targets_reads_a_comma_separated_list() -> None:
    assert split_targets(" a@b.org, ,cmd:true ") == ["a@b.org", "cmd:true"]
    assert split_targets(None) == []


def test_payload_says_what_happened_with_at_most_ten_metrics() -> None:
    metrics = {f"m{i:02}": float(i) for i in range(15)}
    metrics["system/cpu_utilization_percentage"] = 50.0
    data = payload(Event.FAILED, a_run(metrics), "mnist", None)
    assert data["event"] == "failed"
    assert data["run_id"] == "abc123"
    assert data["run_name"] == "brave-owl"
    assert data["status"] == "FAILED"
    assert data["exit_reason"] == "out-of-memory"
    assert data["duration_seconds"] == 62.5
    assert data["experiment"] == "mnist"
    assert data["metrics"] == {f"m{i:02}": float(i) for i in range(10)}
    assert data["link"] == "reprorun runs show abc123"


def test_the_link_is_the_ui_page_without_credentials() -> None:
    assert run_link("r1", "http://ana:pw@host:5000/") == "http://host:5000/#/runs/r1"
    assert run_link("r1", "sqlite:////tmp/store.db") == "reprorun runs show r1"


def test_a_slack_webhook_gets_a_text_body() -> None:
    data = payload(Event.FAILED, a_run({"loss": 0.25}), "mnist", None)
    body = webhook_body("https://hooks.slack.com/services/T0/B0/x", data)
    assert set(body) == {"text"}
    assert body["text"] == summary(data)
    assert "brave-owl failed: FAILED (out-of-memory) after 62.5 s" in body["text"]
    assert "loss = 0.25" in body["text"]
    assert "reprorun runs show abc123" in body["text"]
    assert webhook_body("https://example.org/hook", data) == data


def test_event_of_a_status() -> None:
    assert Event.of(RunStatus.FINISHED) is Event.FINISHED
    assert Event.of(RunStatus.FAILED) is Event.FAILED
    assert Event.of(RunStatus.KILLED) is Event.KILLED


def test_smtp_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserInputError, match="REPRORUN_SMTP_URL is not set"):
        smtp_settings()
    monkeypatch.setenv("REPRORUN_SMTP_URL", "smtp+starttls://ana%40x:p%3Aw@mail.example.org")
    smtp = smtp_settings()
    assert (smtp.host, smtp.port, smtp.security) == ("mail.example.org", 587, "starttls")
    assert (smtp.user, smtp.password) == ("ana@x", "p:w")
    monkeypatch.setenv("REPRORUN_SMTP_URL", "smtp://127.0.0.1:2525")
    assert smtp_settings().port == 2525
    assert smtp_settings().security == ""
    monkeypatch.setenv("REPRORUN_SMTP_URL", "imap://host")
    with pytest.raises(UserInputError, match="smtp://, smtp\\+starttls:// or smtps://"):
        smtp_settings()
