"""A damaged store: a clear message naming the file and what to do, never a raw sqlite3
traceback; and a file that is not a store (0 bytes included) is refused, never silently
re-created empty, unless asked with ``reprorun store init --force``.

Real files: a store holding runs corrupted mid-file, truncated to 0 bytes, overwritten; small
tmpfs mounts (tests run as root in CI) for a full disk and a read-only file system.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reprorun.errors import StoreFileError
from reprorun.tracking.entities import Metric
from reprorun.tracking.mlflow_api.api import MlflowApi
from reprorun.tracking.mlflow_api.context import ArtifactUris
from reprorun.tracking.store import SqlStore, close_stores, open_store
from tests.conftest import reprorun_cli, tmpfs
from tests.unit.test_migrations import make_v1_sqlite


def make_store(path: Path, runs: int = 150) -> list[str]:
    """A store holding ``runs`` runs with params and metrics, closed (WAL checkpointed)."""
    store = open_store(str(path))
    ids = []
    for i in range(runs):
        run = store.create_run("0", run_name=f"run-{i}", params={"lr": str(i), "note": "x" * 200})
        store.log_batch(run.info.run_id, metrics=[Metric("loss", i / 10, 1, i)])
        ids.append(run.info.run_id)
    close_stores()
    assert not Path(f"{path}-wal").exists()
    return ids


def overwrite(path: Path, offset: int, size: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xde\xad\xbe\xef" * (size // 4))


def assert_clear_failure(result: subprocess.CompletedProcess[str], path: Path, *words: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert "sqlite3." not in result.stderr
    assert f"Tracking store {path}:" in result.stderr
    for word in words:
        assert word in result.stderr


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB file system of the test's own, unmounted after."""
    with tmpfs(tmp_path / "disk", "2m") as folder:
        yield folder
        close_stores()


# --- damaged ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["middle", "schema page"])
def test_a_store_corrupted_mid_file_is_a_clear_error(tmp_path: Path, where: str) -> None:
    path = tmp_path / "store.db"
    make_store(path)
    size = path.stat().st_size
    # The middle holds the runs' pages; bytes 100.. of page 1 are the schema (sqlite_master).
    offset, length = (size // 2, 16384) if where == "middle" else (100, 2048)
    overwrite(path, offset, length)

    result = reprorun_cli("runs", "list", "--tracking-uri", str(path))
    assert_clear_failure(result, path, "damaged", "PRAGMA integrity_check", ".recover")
    assert f"reprorun store init --force --tracking-uri {path}" in result.stderr

    with pytest.raises(StoreFileError) as caught:
        open_store(str(path)).search_runs(["0"])
    assert caught.value.path == str(path)


def test_the_server_answers_503_with_the_message_for_a_damaged_store(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    make_store(path)
    overwrite(path, path.stat().st_size // 2, 16384)
    store = open_store(str(path))  # opening reads only the schema: the damage shows later
    api = MlflowApi(store, ArtifactUris(store.artifact_root, proxied=False))

    status, body = api.handle(
        "POST", "/api/2.0/mlflow/runs/search", {}, json.dumps({"experiment_ids": ["0"]}).encode()
    )
    assert status == 503
    assert body["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert str(path) in body["message"] and "integrity_check" in body["message"]


# --- not a store -----------------------------------------------------------------------------


def test_a_store_truncated_to_0_bytes_is_refused_not_recreated(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    make_store(path, runs=3)
    path.write_bytes(b"")

    result = reprorun_cli("runs", "list", "--tracking-uri", str(path))
    assert_clear_failure(result, path, "not a reprorun store", "0 bytes", "backup")
    assert path.stat().st_size == 0  # left as found, for the user to restore
    with pytest.raises(StoreFileError, match="0 bytes"):
        open_store(str(path))
    assert path.stat().st_size == 0

    # The message says exactly what to run to start afresh; that moves the file aside.
    command = f"reprorun store init --force --tracking-uri {path}"
    assert command in result.stderr
    done = reprorun_cli(*command.split()[1:])
    assert done.returncode == 0, done.stderr
    assert "Created a new empty store" in done.stdout
    [aside] = tmp_path.glob("store.db.broken-*")
    assert aside.stat().st_size == 0
    assert reprorun_cli("runs", "list", "--tracking-uri", str(path)).returncode == 0
    # Asked again: the store is fine now, nothing is moved.
    again = reprorun_cli(*command.split()[1:])
    assert "usable store; nothing changed" in again.stdout
    assert len(list(tmp_path.glob("store.db.broken-*"))) == 1


def test_store_init_force_replaces_a_damaged_store(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    make_store(path)
    overwrite(path, path.stat().st_size // 2, 16384)
    refused = reprorun_cli("store", "init", "--tracking-uri", str(path))
    assert_clear_failure(refused, path, "damaged")

    done = reprorun_cli("store", "init", "--force", "--tracking-uri", str(path))
    assert done.returncode == 0, done.stderr
    [aside] = tmp_path.glob("store.db.broken-*")
    assert aside.stat().st_size > 100_000  # the damaged store, kept whole for recovery
    assert open_store(str(path)).search_runs(["0"]) == []


def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    path.write_text("experiment notes\n")
    result = reprorun_cli("runs", "list", "--tracking-uri", str(path))
    assert_clear_failure(result, path, "not a SQLite database")
    assert path.read_text() == "experiment notes\n"


def test_another_programs_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "mlflow.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE experiments (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreFileError, match=r"other tables \(experiments\)"):
        open_store(str(path))
    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    conn.close()
    assert tables == ["experiments"]


# --- stores that are fine must stay fine -----------------------------------------------------


def test_a_new_store_is_created_silently_and_whole(tmp_path: Path) -> None:
    path = tmp_path / "new" / "store.db"
    store = open_store(str(path))
    store.create_run("0")
    assert sorted(
        p.name for p in path.parent.iterdir() if not p.name.endswith(("-wal", "-shm"))
    ) == ["store.db"]


def test_a_store_with_wal_and_shm_files_opens_in_another_process(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = open_store(str(path))
    ids = {store.create_run("0").info.run_id for _ in range(5)}
    # Still open: the runs are in the -wal file, not yet in the main file.
    assert Path(f"{path}-wal").stat().st_size > 0 and Path(f"{path}-shm").exists()
    result = reprorun_cli("runs", "list", "--json", "--tracking-uri", str(path))
    assert result.returncode == 0, result.stderr
    assert {r["info"]["run_id"] for r in json.loads(result.stdout)} == ids


OPENER = """
import os, sys, time
from reprorun.tracking.store import open_store
path, go = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + 30
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.001)
open_store(path).create_run("0")
"""


def test_many_processes_creating_one_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    path, go = tmp_path / "store.db", tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, str(path), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    time.sleep(0.5)  # let them start and wait at the gate (not an assertion)
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    assert len(open_store(str(path)).search_runs(["0"])) == 8
    assert not list(tmp_path.glob(".store.db.*"))  # no half-made file left behind


# --- read-only, full ------------------------------------------------------------------------


def test_a_store_on_a_read_only_file_system_is_a_clear_error(disk: Path) -> None:
    path = disk / "store.db"
    make_store(path, runs=5)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    result = reprorun_cli("runs", "list", "--tracking-uri", str(path))
    assert_clear_failure(result, path, "writable", "read-write")


def test_a_read_only_store_with_a_migration_pending_is_a_clear_error(disk: Path) -> None:
    path = disk / "store.db"
    make_v1_sqlite(path)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    with pytest.raises(StoreFileError) as caught:
        open_store(str(path))
    assert caught.value.path == str(path)
    assert "writable" in str(caught.value)


def test_a_full_disk_is_a_clear_error_and_the_store_works_once_space_is_freed(
    disk: Path,
) -> None:
    path = disk / "store.db"
    store = open_store(str(path))
    assert isinstance(store, SqlStore)
    run_id = store.create_run("0").info.run_id
    filler = disk / "filler"
    with open(filler, "wb") as f, pytest.raises(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())

    with pytest.raises(StoreFileError, match="full") as caught:
        for i in range(50):
            store.log_batch(run_id, params={f"p{i}": "v" * 8000})
    assert caught.value.path == str(path)

    filler.unlink()
    store.log_batch(run_id, params={"after": "1"})  # no transaction was left open
    assert store.get_run(run_id).data.params["after"] == "1"


def test_a_store_made_read_only_keeps_reading_and_refuses_writes_clearly(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    ids = make_store(path, runs=3)
    subprocess.run(["chattr", "+i", str(path)], check=True)  # root ignores modes, not this
    try:
        store = open_store(str(path))  # SQLite falls back to reading only
        assert {r.info.run_id for r in store.search_runs(["0"])} == set(ids)
        with pytest.raises(StoreFileError, match="readonly database") as caught:
            store.create_run("0")
        assert caught.value.path == str(path)

        result = reprorun_cli("experiments", "create", "new", "--tracking-uri", str(path))
        assert_clear_failure(result, path, "writable")
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
