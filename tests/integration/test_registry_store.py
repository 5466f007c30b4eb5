"""The model registry in the SQL store, on stdlib sqlite3, SQLAlchemy over pysqlite and
PostgreSQL: MLflow's semantics (version numbers, stages, aliases, search) and errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from reprorun.errors import ResourceAlreadyExists, ResourceNotFound, SearchError, UserInputError
from reprorun.tracking.registry_entities import parse_models_uri
from reprorun.tracking.store.database import SqlAlchemyDatabase, SqliteDatabase
from reprorun.tracking.store.sql import SqlStore

BACKENDS = ("sqlite3", "sqlite+pysqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    root = (tmp_path / "artifacts").as_uri()
    if request.param == "sqlite3":
        s = SqlStore(SqliteDatabase(str(tmp_path / "a.db")), root)
    elif request.param == "sqlite+pysqlite":
        s = SqlStore(SqlAlchemyDatabase(f"sqlite+pysqlite:///{tmp_path / 'b.db'}"), root)
    else:
        s = SqlStore(SqlAlchemyDatabase(request.getfixturevalue("postgres_url")), root)
    yield s
    s.close()


def test_create_get_update_and_duplicate_names(store: SqlStore) -> None:
    model = store.create_registered_model("iris", tags={"team": "a"}, description="flowers")
    assert (model.name, model.tags, model.description) == ("iris", {"team": "a"}, "flowers")
    assert model.creation_timestamp == model.last_updated_timestamp > 0
    with pytest.raises(ResourceAlreadyExists, match=r"Registered Model \(name=iris\) already"):
        store.create_registered_model("iris")
    with pytest.raises(UserInputError, match="name cannot be empty"):
        store.create_registered_model("")
    with pytest.raises(ResourceNotFound, match="Registered Model with name=nope not found"):
        store.get_registered_model("nope")
    updated = store.update_registered_model("iris", "new words")
    assert updated.description == "new words"
    assert updated.last_updated_timestamp >= model.last_updated_timestamp


def test_versions_are_numbered_per_name_and_never_reused(store: SqlStore) -> None:
    store.create_registered_model("a")
    store.create_registered_model("b")
    assert [store.create_model_version("a", f"/s/{i}").version for i in range(3)] == [1, 2, 3]
    assert store.create_model_version("b", "/s/b", run_id="r" * 32).version == 1
    store.delete_model_version("a", 3)
    with pytest.raises(ResourceNotFound, match=r"Model Version \(name=a, version=3\) not found"):
        store.get_model_version("a", "3")
    assert store.create_model_version("a", "/s/again").version == 4
    version = store.get_model_version("b", "1")
    assert (version.source, version.run_id, version.status, version.current_stage) == (
        "/s/b",
        "r" * 32,
        "READY",
        "None",
    )
    with pytest.raises(UserInputError, match="Parameter 'version' must be an integer, got 'x'"):
        store.get_model_version("a", "x")
    with pytest.raises(ResourceNotFound, match="Registered Model with name=c not found"):
        store.create_model_version("c", "/s")


def test_aliases_and_latest_versions(store: SqlStore) -> None:
    store.create_registered_model("iris")
    for i in range(3):
        store.create_model_version("iris", f"/s/{i}")
    store.set_registered_model_alias("iris", "champion", "2")
    assert store.get_model_version_by_alias("iris", "champion").version == 2
    assert store.get_model_version("iris", 2).aliases == ["champion"]
    store.set_registered_model_alias("iris", "champion", 3)  # moves
    assert store.get_registered_model("iris").aliases == {"champion": 3}
    for bad, message in (("latest", "reserved"), ("v2", "reserved"), ("a b", "Invalid alias")):
        with pytest.raises(UserInputError, match=message):
            store.set_registered_model_alias("iris", bad, 1)
    with pytest.raises(ResourceNotFound):
        store.set_registered_model_alias("iris", "x", 9)
    store.delete_registered_model_alias("iris", "champion")
    with pytest.raises(ResourceNotFound, match="alias champion not found"):
        store.get_model_version_by_alias("iris", "champion")
    # Stages, for old clients: the newest version of each stage.
    store.transition_model_version_stage("iris", 1, "production")
    store.transition_model_version_stage("iris", 2, "Production", archive_existing_versions=True)
    assert store.get_model_version("iris", 1).current_stage == "Archived"
    latest = store.get_latest_versions("iris")
    assert [(v.version, v.current_stage) for v in latest] == [
        (1, "Archived"),
        (2, "Production"),
        (3, "None"),
    ]
    assert [v.version for v in store.get_latest_versions("iris", ["production"])] == [2]
    with pytest.raises(UserInputError, match="Invalid Model Version stage: Nope"):
        store.transition_model_version_stage("iris", 1, "Nope")
    with pytest.raises(UserInputError, match="not an Active stage"):
        store.transition_model_version_stage("iris", 1, "None", archive_existing_versions=True)


def test_tags_rename_and_delete(store: SqlStore) -> None:
    store.create_registered_model("old", tags={"k": "v"})
    store.create_model_version("old", "/s", tags={"t": "1"})
    store.set_registered_model_alias("old", "prod", 1)
    store.set_model_version_tag("old", 1, "t2", "2")
    store.delete_model_version_tag("old", 1, "t")
    store.set_registered_model_tag("old", "k2", "v2")
    store.delete_registered_model_tag("old", "k")
    renamed = store.rename_registered_model("old", "new")
    assert (renamed.name, renamed.tags, renamed.aliases) == ("new", {"k2": "v2"}, {"prod": 1})
    assert store.get_model_version("new", 1).tags == {"t2": "2"}
    with pytest.raises(ResourceNotFound):
        store.get_registered_model("old")
    store.create_registered_model("other")
    with pytest.raises(ResourceAlreadyExists):
        store.rename_registered_model("new", "other")
    store.delete_registered_model("new")
    with pytest.raises(ResourceNotFound):
        store.get_model_version("new", 1)
    store.create_registered_model("new")  # the name is free again, versions start over
    assert store.create_model_version("new", "/s").version == 1


def test_search_registered_models(store: SqlStore) -> None:
    for name, team in (("iris-a", "x"), ("iris-B", "y"), ("wine", "x")):
        store.create_registered_model(name, tags={"team": team})

    def names(*args: object, **kwargs: object) -> list[str]:
        return [m.name for m in store.search_registered_models(*args, **kwargs)]  # type: ignore[arg-type]

    assert names() == ["iris-B", "iris-a", "wine"]
    assert names("name LIKE 'iris%'") == ["iris-B", "iris-a"]
    assert names("name ILIKE 'IRIS-b'") == ["iris-B"]
    assert names("name = 'wine'") == ["wine"]
    assert names("tags.team = 'x'") == ["iris-a", "wine"]
    assert names("name != 'wine' AND tags.team = 'x'") == ["iris-a"]
    assert names(order_by=["name DESC"]) == ["wine", "iris-a", "iris-B"]
    first = store.search_registered_models(max_results=2)
    assert [m.name for m in first] == ["iris-B", "iris-a"] and first.token
    rest = store.search_registered_models(max_results=2, page_token=first.token)
    assert [m.name for m in rest] == ["wine"] and rest.token is None
    with pytest.raises(SearchError):
        store.search_registered_models("run_id = 'x'")
    with pytest.raises(UserInputError, match="at most 1000"):
        store.search_registered_models(max_results=1001)


def test_search_model_versions(store: SqlStore) -> None:
    store.create_registered_model("a")
    store.create_registered_model("b")
    store.create_model_version("a", "/x/1", run_id="1" * 32, tags={"ok": "yes"})
    store.create_model_version("a", "/x/2", run_id="2" * 32)
    store.create_model_version("b", "/y/1", run_id="1" * 32)

    def found(text: str | None = None, **kwargs: object) -> list[tuple[str, int]]:
        page = store.search_model_versions(text, **kwargs)  # type: ignore[arg-type]
        return [(v.name, v.version) for v in page]

    assert found() == [("a", 2), ("a", 1), ("b", 1)]
    assert found(f"run_id = '{'1' * 32}'") == [("a", 1), ("b", 1)]
    assert found(f"run_id IN ('{'2' * 32}', 'zzz')") == [("a", 2)]
    assert found("source_path LIKE '/x/%'") == [("a", 2), ("a", 1)]
    assert found("name = 'a' AND version_number > 1") == [("a", 2)]
    assert found("tags.ok = 'yes'") == [("a", 1)]
    assert found(order_by=["version_number ASC"]) == [("a", 1), ("b", 1), ("a", 2)]
    store.delete_model_version("a", 2)
    assert found() == [("a", 1), ("b", 1)]


def test_a_version_from_a_logged_model(store: SqlStore) -> None:
    run = store.create_run("0")
    logged = store.create_logged_model("0", name="model", source_run_id=run.info.run_id)
    store.create_registered_model("m")
    version = store.create_model_version("m", f"models:/{logged.model_id}")
    assert version.model_id == logged.model_id and version.run_id == run.info.run_id
    assert store.get_model_version_download_uri("m", 1) == logged.artifact_location
    store.create_model_version("m", logged.artifact_location, model_id=logged.model_id)
    tag = store.get_logged_model(logged.model_id).tags["mlflow.modelVersions"]
    assert json.loads(tag) == [{"name": "m", "version": 1}, {"name": "m", "version": 2}]
    with pytest.raises(ResourceNotFound, match="Logged model with id=m-nope not found"):
        store.create_model_version("m", "models:/m-nope")
    # A version of a version: the same files.
    store.set_registered_model_alias("m", "champion", 1)
    again = store.create_model_version("m", "models:/m@champion")
    assert again.download_uri == logged.artifact_location


def test_models_uris_parse_as_mlflow_reads_them() -> None:
    assert parse_models_uri("models:/iris/3").version == 3
    assert parse_models_uri("models:/iris@champion").alias == "champion"
    latest = parse_models_uri("models:/iris/latest")
    assert (latest.name, latest.version, latest.stage) == ("iris", None, None)
    assert parse_models_uri("models:/iris/production").stage == "Production"
    assert parse_models_uri("models:/m-0123").model_id == "m-0123"
    for bad in ("models:/", "models:/iris/nope", "runs:/x/y"):
        with pytest.raises(UserInputError):
            parse_models_uri(bad)


def test_prompts_are_left_out_unless_asked_for(store: SqlStore) -> None:
    """MLflow keeps prompts as models tagged mlflow.prompt.is_prompt; its clients add
    ``!= 'true'`` to every search, which a model without the tag satisfies."""
    store.create_registered_model("model")
    store.create_registered_model("prompt", tags={"mlflow.prompt.is_prompt": "true"})
    store.create_model_version("prompt", "/p")
    store.create_model_version("model", "/m")
    not_prompts = "tags.`mlflow.prompt.is_prompt` != 'true'"
    prompts = "tags.`mlflow.prompt.is_prompt` = 'true'"
    for text in (None, not_prompts):
        assert [m.name for m in store.search_registered_models(text)] == ["model"]
        assert [v.name for v in store.search_model_versions(text)] == ["model"]
    assert [m.name for m in store.search_registered_models(prompts)] == ["prompt"]
    assert [v.name for v in store.search_model_versions(prompts)] == ["prompt"]


def test_concurrent_registrations_get_distinct_numbers(store: SqlStore, tmp_path: Path) -> None:
    """Writers racing to add versions of one model (several connections of one store, as a
    server's threads) each get their own number, with none lost."""
    from concurrent.futures import ThreadPoolExecutor

    store.create_registered_model("race")

    def add(i: int) -> int:
        return store.create_model_version("race", f"/s/{i}").version

    with ThreadPoolExecutor(max_workers=6) as pool:
        numbers = list(pool.map(add, range(24)))
    assert sorted(numbers) == list(range(1, 25))
    sources = {v.version: v.source for v in store.search_model_versions("name = 'race'")}
    assert sorted(sources.values()) == sorted(f"/s/{i}" for i in range(24))


def test_pages_read_in_chunks_keep_every_models_details(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tags, aliases and latest versions are read for a page's names a chunk at a time."""
    from reprorun.tracking.store.sql import registry_rows

    monkeypatch.setattr(registry_rows, "CHUNK", 2)
    for i in range(5):
        store.create_registered_model(f"m{i}", tags={"i": str(i)})
        for _ in range(i + 1):
            store.create_model_version(f"m{i}", f"/s/{i}", tags={"of": f"m{i}"})
        store.set_registered_model_alias(f"m{i}", "best", 1)
    store.transition_model_version_stage("m4", 2, "Staging")
    found = store.search_registered_models()
    assert [(m.name, m.tags, m.aliases) for m in found] == [
        (f"m{i}", {"i": str(i)}, {"best": 1}) for i in range(5)
    ]
    assert [[v.version for v in m.latest_versions] for m in found] == [[1], [2], [3], [4], [2, 5]]
    versions = store.search_model_versions()
    assert len(versions) == 15
    assert all(v.tags == {"of": v.name} for v in versions)
    assert sorted((v.name, v.aliases) for v in versions if v.aliases) == [
        (f"m{i}", ["best"]) for i in range(5)
    ]
