"""``reprorun models`` on the embedded store: register a run's model, alias it, load it back
through ``models:/`` URIs (``reprorun.load_model``, ``mlflow-cli artifacts download``), list,
show, tag and delete; errors users can act on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import reprorun
from reprorun.errors import ResourceNotFound, UserInputError
from reprorun.tracking.registry import resolve_model_uri
from reprorun.tracking.store import open_store


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reprorun", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def ok(*args: str) -> str:
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def run_id(home: Path) -> str:
    """A finished run with a reprorun model at ``model`` (weights 1) and ``other`` (2)."""
    with reprorun.start_run(run_name="train") as run:
        reprorun.log_model({"w": 1}, "model")
        reprorun.log_model({"w": 2}, "other")
    return run.run_id


def test_register_alias_and_load(run_id: str, tmp_path: Path) -> None:
    out = ok("models", "register", f"{run_id[:8]}/model", "--name", "iris", "--alias", "champion")
    assert "Created registered model 'iris'" in out and "models:/iris/1" in out
    done = json.loads(ok("models", "register", f"runs:/{run_id}/other", "-n", "iris", "--json"))
    assert (done["version"], done["run_id"], done["created_model"]) == (2, run_id, False)

    assert reprorun.load_model("models:/iris@champion") == {"w": 1}
    assert reprorun.load_model("models:/iris/2") == {"w": 2}
    assert reprorun.load_model("models:/iris/latest") == {"w": 2}
    assert resolve_model_uri("models:/iris/1").endswith(f"{run_id}/artifacts/model")

    ok("models", "alias", "iris", "champion", "2")
    assert reprorun.load_model("models:/iris@champion") == {"w": 2}
    # The R package loads models:/ URIs through `mlflow artifacts download -u`.
    path = ok(
        "mlflow-cli", "artifacts", "download", "-u", "models:/iris@champion", "-d", str(tmp_path)
    )
    assert (Path(path.strip()) / "model.pkl").is_file()
    assert "other" in path

    listed = json.loads(ok("models", "list", "--json"))
    assert [(m["name"], m["latest_version"], m["aliases"]) for m in listed] == [
        ("iris", 2, {"champion": 2})
    ]
    shown = json.loads(ok("models", "show", "iris", "--json"))
    assert [(v["version"], v["aliases"], v["run_name"]) for v in shown["versions"]] == [
        (2, ["champion"], "train"),
        (1, [], "train"),
    ]
    table = ok("models", "show", "iris")
    assert "champion" in table and "train" in table
    shown_run = ok("runs", "show", run_id)  # the run lists the versions made from it
    assert "Registered" in shown_run and "models:/iris/2" in shown_run
    assert "@champion" in shown_run.split("models:/iris/2", 1)[1].splitlines()[0]

    ok("models", "tag", "iris", "team=vision")
    ok("models", "tag", "iris", "checked=yes", "--version", "1")
    store = open_store()
    assert store.get_registered_model("iris").tags == {"team": "vision"}
    assert store.get_model_version("iris", 1).tags == {"checked": "yes"}
    ok("models", "tag", "iris", "--delete", "team")
    assert store.get_registered_model("iris").tags == {}

    ok("models", "delete", "iris", "--version", "1", "--yes")
    with pytest.raises(ResourceNotFound):
        store.get_model_version("iris", 1)
    ok("models", "alias", "iris", "champion", "--delete")
    with pytest.raises(ResourceNotFound, match="alias champion not found"):
        reprorun.load_model("models:/iris@champion")
    ok("models", "delete", "iris", "-y")
    assert json.loads(ok("models", "list", "--json")) == []


def test_the_python_api_registers_like_mlflow(run_id: str) -> None:
    version = reprorun.register_model(f"runs:/{run_id}/model", "py", tags={"via": "api"})
    assert (version.name, version.version, version.run_id) == ("py", 1, run_id)
    assert version.tags == {"via": "api"}
    assert reprorun.register_model(f"{run_id[:6]}/other", "py").version == 2
    assert reprorun.load_model("models:/py/1") == {"w": 1}
    assert reprorun.load_model("models:/py/latest") == {"w": 2}


def test_clear_errors(run_id: str) -> None:
    missing = cli("models", "show", "nope")
    assert missing.returncode != 0
    assert "Registered Model with name=nope not found" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad_alias = cli("models", "register", f"runs:/{run_id}/model", "-n", "m", "--alias", "latest")
    assert bad_alias.returncode != 0 and "reserved" in bad_alias.stderr
    assert json.loads(ok("models", "list", "--json")) == []  # nothing registered
    typo = cli("models", "register", f"runs:/{run_id}/modle", "-n", "m")
    assert typo.returncode != 0 and "No model at runs:/" in typo.stderr
    assert "modle" in typo.stderr and "Traceback" not in typo.stderr
    assert json.loads(ok("models", "list", "--json")) == []
    no_version = cli("models", "alias", "m", "champion")
    assert no_version.returncode != 0 and "VERSION" in no_version.stderr
    with pytest.raises(UserInputError, match="Invalid model URI"):
        reprorun.load_model("models:/m/not-a-version")
    with pytest.raises(ResourceNotFound):
        reprorun.load_model("models:/unknown/1")


def test_register_a_logged_model_by_id(home: Path) -> None:
    """A logged model (MLflow 3) is registered by models:/<id>; its run comes along."""
    store = open_store()
    run = store.create_run("0")
    logged = store.create_logged_model("0", name="model", source_run_id=run.info.run_id)
    folder = Path(logged.artifact_location.removeprefix("file://"))
    folder.mkdir(parents=True)
    (folder / "MLmodel").write_text("flavors: {}\n")
    done = json.loads(ok("models", "register", f"models:/{logged.model_id}", "-n", "lm", "--json"))
    assert (done["model_id"], done["run_id"]) == (logged.model_id, run.info.run_id)
    assert resolve_model_uri("models:/lm/1") == logged.artifact_location
    assert resolve_model_uri(f"models:/{logged.model_id}") == logged.artifact_location
    tag = store.get_logged_model(logged.model_id).tags["mlflow.modelVersions"]
    assert json.loads(tag) == [{"name": "lm", "version": 1}]
