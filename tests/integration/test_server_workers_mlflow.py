"""The real MLflow client against `reprorun server --workers 4` on PostgreSQL.

The compatibility tests of ``test_mlflow_compat.py`` whose scenarios write and read back runs,
search them page by page, move artifacts through the proxy and log models, each run here
against four workers over a PostgreSQL schema: a client's consecutive requests land on
different processes, so whatever one worker kept in memory and another did not would show.
Only the server differs (this module's ``server`` fixture); the scenarios, the values sent and
the checks are those of ``test_mlflow_compat.py``. Its experiments scenario is left to it
(experiment bookkeeping only; the runs scenario creates experiments too).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pg
from tests.integration import test_mlflow_compat as compat
from tests.integration.server_proc import ServerProcess, server_process
from tests.integration.test_mlflow_compat import (  # noqa: F401 (fixtures used by the tests)
    artifacts,
    mlflow_python,
    models,
    runs,
    scenario,
    search,
)

pytestmark = pytest.mark.slow

WORKERS = 4
SCENARIOS = ("runs", "search", "artifacts", "models")

COMPAT_TESTS = sorted(
    name
    for name, fn in vars(compat).items()
    if name.startswith("test_")
    and inspect.isfunction(fn)
    and set(inspect.signature(fn).parameters) & set(SCENARIOS)
)
globals().update({name: getattr(compat, name) for name in COMPAT_TESTS})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Four workers over an empty PostgreSQL schema (dropped after the module)."""
    with pg.fresh_schema() as url:
        work: Path = tmp_path_factory.mktemp("server-workers")
        with server_process(work, store_uri=url, workers=WORKERS) as running:
            assert len(running.workers()) == WORKERS, running.log()
            yield running
            assert running.alive(), running.log()


def test_every_scenario_module_test_runs_here() -> None:
    """The selection above picked the tests of each scenario (none silently dropped)."""
    picked = {
        scenario_name
        for name in COMPAT_TESTS
        for scenario_name in inspect.signature(getattr(compat, name)).parameters
        if scenario_name in SCENARIOS
    }
    assert picked == set(SCENARIOS)
    assert len(COMPAT_TESTS) >= 15, COMPAT_TESTS
