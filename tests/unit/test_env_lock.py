"""One reader of an environment's pip lock for the remote backends (Ray, Databricks)."""

from __future__ import annotations

from reprorun.envs.lock import read_lock_lines

LOCK = """\
# reprorun lock: uv
--index-url https://pypi.example.org/simple
six==1.16.0  # via -r requirements.in
-e git+https://github.com/org/tool@abc123#egg=tool
-e ./vendored
mypkg @ file:///home/me/mypkg
/wheels/other-1.0-py3-none-any.whl
requests==2.32.3
"""


def test_lock_lines_by_kind_in_order() -> None:
    lock = read_lock_lines(LOCK)
    assert lock.pip == [
        "--index-url https://pypi.example.org/simple",
        "six==1.16.0",
        "git+https://github.com/org/tool@abc123#egg=tool",
        "requests==2.32.3",
    ]
    assert lock.local == [
        "-e ./vendored",
        "mypkg @ file:///home/me/mypkg",
        "/wheels/other-1.0-py3-none-any.whl",
    ]


def test_no_lock_has_no_lines() -> None:
    assert read_lock_lines(None).pip == [] and read_lock_lines("").local == []
