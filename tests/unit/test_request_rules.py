"""The request rules shared by `reprorun server` and the per-run endpoint."""

from __future__ import annotations

import pytest

from reprorun.tracking.endpoint.request_rules import body_type_refusal, content_length


@pytest.mark.parametrize("value", ["abc", "-1", "+5", "1_0", "1e3", " ", "", "１", "0x10"])
def test_a_content_length_that_is_not_a_plain_number_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="Content-Length"):
        content_length(value)


def test_a_plain_content_length_is_its_number() -> None:
    assert content_length(None) == 0
    assert content_length(" 42 ") == 42
    assert content_length(str(2**70)) == 2**70  # the caller compares it with its limit


@pytest.mark.parametrize(
    ("method", "content_type", "has_body", "refused"),
    [
        ("GET", None, False, False),
        ("GET", "text/plain", True, False),
        ("POST", "application/json", True, False),
        ("POST", "Application/JSON; charset=utf-8", True, False),
        ("POST", None, False, True),  # MLflow's server: Content-Type is missing
        ("POST", "text/plain", True, True),  # a cross-site "simple" request
        ("POST", "text/plain", False, True),
        ("POST", "application/x-www-form-urlencoded", True, True),
        ("POST", "multipart/form-data; boundary=x", True, True),
        ("POST", "application/json-patch+json", True, True),
        ("PUT", None, False, True),
        ("PATCH", None, False, False),
        ("DELETE", None, False, False),
        ("DELETE", None, True, True),
        ("PATCH", "text/plain", True, True),
    ],
)
def test_changes_need_a_json_body(
    method: str, content_type: str | None, has_body: bool, refused: bool
) -> None:
    why = body_type_refusal(method, content_type, has_body)
    assert (why is not None) == refused
    if why:
        assert "application/json" in why
