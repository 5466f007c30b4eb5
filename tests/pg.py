"""PostgreSQL for the tests: the server REPRORUN_TEST_POSTGRES_URL names, one empty schema per test.

``.ci/run`` starts a local cluster (127.0.0.1 only), creates the role and database, and exports

    REPRORUN_TEST_POSTGRES_URL=postgresql://reprorun:reprorun@127.0.0.1:5432/reprorun_test

Without that variable the PostgreSQL tests fail (this project has no skips) and say how to set it;
no server is started behind your back. Each test gets a schema of its own, ``t_<random>``, made
empty before the test and dropped after it; the URL a test receives puts that schema first on the
``search_path``, so the store creates and finds its tables there and tests never see each other.

A URL without a driver (``postgresql://``) is given psycopg2 explicitly (``postgresql+psycopg2``),
the driver the dev extras install: SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3.
``test_store_postgres.py`` has one test of the bare URL through ``open_store``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

ENV_VAR = "REPRORUN_TEST_POSTGRES_URL"
EXAMPLE_URL = "postgresql://reprorun:reprorun@127.0.0.1:5432/reprorun_test"
HOW_TO = (
    f"The PostgreSQL tests need a server: set {ENV_VAR}, e.g.\n"
    f"  export {ENV_VAR}={EXAMPLE_URL}\n"
    "to a database the user may create schemas in. `bash .ci/run` starts a local cluster and sets "
    "it; by hand (Debian, as root):\n"
    "  pg_ctlcluster --skip-systemctl-redirect 15 main start -- -o '-c listen_addresses=127.0.0.1'\n"
    "  runuser -u postgres -- psql -c \"CREATE ROLE reprorun LOGIN PASSWORD 'reprorun'\" "
    '-c "CREATE DATABASE reprorun_test OWNER reprorun"'
)

# Read once, at import: the autouse clean_environ fixture removes every REPRORUN_* variable
# for the duration of each test.
_SERVER_URL = os.environ.get(ENV_VAR, "").strip() or None


def server_url() -> str:
    """The configured server's URL with an explicit driver; fails the test when there is none."""
    if _SERVER_URL is None:
        pytest.fail(f"{ENV_VAR} is not set. {HOW_TO}", pytrace=False)
    return with_psycopg2(_SERVER_URL)


def bare_server_url() -> str:
    """The configured URL as given (``postgresql://...``), for tests of URL handling itself."""
    server_url()
    assert _SERVER_URL is not None
    return _SERVER_URL


def with_psycopg2(url: str) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed.render_as_string(hide_password=False)


def in_schema(url: str, schema: str) -> str:
    """``url`` with ``schema`` first on the search_path of every connection."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    return parsed.render_as_string(hide_password=False)


@contextmanager
def fresh_schema(base_url: str | None = None) -> Iterator[str]:
    """Create an empty schema, yield a URL that uses it, drop it (and all in it) afterwards.

    Close every store opened on the URL before leaving the block.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.pool import NullPool

    url = base_url or server_url()
    schema = "t_" + uuid.uuid4().hex[:16]
    admin = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 10})
    try:
        try:
            with admin.begin() as conn:
                conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        except OperationalError as exc:
            pytest.fail(
                f"Cannot reach PostgreSQL at {ENV_VAR} ({_masked(url)}): {exc}\n{HOW_TO}",
                pytrace=False,
            )
        try:
            yield in_schema(url, schema)
        finally:
            with admin.begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    finally:
        admin.dispose()


def _masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
