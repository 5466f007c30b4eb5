"""Run a project as a one-time Databricks job run (Jobs API ``runs/submit``) on a new cluster.

MLflow's databricks backend, through Databricks' documented REST API:

- The project's tree (without .git) is packed into a gzipped tar holding one folder,
  ``mlflow-project``, named by its SHA-256 and uploaded once to DBFS where MLflow keeps it:
  ``dbfs:/mlflow-experiments/<experiment id>/projects-code/<sha256>.tar.gz``.
- A one-time run on a new cluster of the configured spec runs reprorun's launcher (a
  ``spark_python_task``; MLflow submits a ``shell_command_task``, which Databricks does not
  document). The launcher unpacks the tree and reprorun's in-run client (so ``import reprorun``
  works on the cluster), then runs the command with bash in its subdirectory, with the run's
  variables.
- The lock's packages are the task's PyPI libraries: Databricks installs them on every node of
  the cluster (the driver and the workers that run Spark code) before the task starts.
- ``runs/get`` gives the state and the run's page, ``runs/get-output`` the task's output (its
  last 5 MB), ``runs/cancel`` stops it.

Credentials come from where the Databricks CLI and SDKs read them (DATABRICKS_HOST and
DATABRICKS_TOKEN, else a profile of ~/.databrickscfg); they are never kept with the run.
"""

from __future__ import annotations

import base64
import configparser
import gzip
import hashlib
import http.client
import json
import os
import re
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode, urlparse

from reprorun.backends.base import (
    JOB_ID_TAG,
    JOB_URL_TAG,
    Backend,
    LaunchSpec,
    SubmittedRun,
    parse_options,
    tracking_options,
)
from reprorun.backends.job import JobState, RemoteJob
from reprorun.errors import ExecutionError, UserInputError, WorkspaceError
from reprorun.tracking.entities import Run, RunStatus
from reprorun.tracking.store.base import TrackingStore

# The tags MLflow's databricks backend sets on a project run (mlflow/utils/mlflow_tags.py).
RUN_URL_TAG = "mlflow.databricks.runURL"
SHELL_JOB_RUN_ID_TAG = "mlflow.databricks.shellJobRunID"
SHELL_JOB_ID_TAG = "mlflow.databricks.shellJobID"
WEBAPP_URL_TAG = "mlflow.databricks.webappURL"

JOBS_API = "/api/2.1/jobs"
DBFS_API = "/api/2.0/dbfs"
PROJECTS_DIR = "/mlflow-experiments/{experiment_id}/projects-code"  # MLflow's place in DBFS
CLIENT_DIR = "/reprorun/client"
LAUNCHER_DIR = "/reprorun/launcher"
ARCHIVE_ROOT = "mlflow-project"  # the one folder of a project's tarball (as MLflow's)
TASK_KEY = "reprorun"
BLOCK_SIZE = 1 << 20  # DBFS takes at most 1 MB per put or add-block call
EXIT_MARKER = "[reprorun] the command exited with code "

_TIMEOUT = 60.0  # seconds for one API call
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_RETRY_DELAYS = (1.0, 2.0, 4.0)  # seconds; a Retry-After header takes precedence
_TAR_TIME = 315532800  # 1980-01-01: the same tree gives the same tarball, so the same name
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXIT_LINE = re.compile(r"^" + re.escape(EXIT_MARKER) + r"(-?\d+)\s*$", re.MULTILINE)
_LIBRARY_KINDS = ("pypi", "maven", "cran", "jar", "egg", "whl", "requirements")
# Provided by the Databricks Runtime: a PyPI copy would replace the cluster's own Spark.
_RUNTIME_PACKAGES = frozenset({"pyspark", "py4j", "databricks-connect"})


# --- options -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterSpec:
    """The ``new_cluster`` keys reprorun checks (Databricks' ClusterSpec); the spec is sent
    to Databricks as written."""

    spark_version: str | None = None
    num_workers: int | None = None
    node_type_id: str | None = None
    autoscale: dict[str, int] | None = None  # {"min_workers": 1, "max_workers": 4}
    driver_node_type_id: str | None = None
    instance_pool_id: str | None = None
    driver_instance_pool_id: str | None = None
    policy_id: str | None = None
    apply_policy_default_values: bool | None = None
    spark_conf: dict[str, str] | None = None
    spark_env_vars: dict[str, str] | None = None
    custom_tags: dict[str, str] | None = None
    aws_attributes: dict[str, Any] | None = None
    azure_attributes: dict[str, Any] | None = None
    gcp_attributes: dict[str, Any] | None = None
    data_security_mode: str | None = None
    single_user_name: str | None = None
    runtime_engine: str | None = None
    kind: str | None = None
    is_single_node: bool | None = None
    use_ml_runtime: bool | None = None
    enable_elastic_disk: bool | None = None
    enable_local_disk_encryption: bool | None = None
    init_scripts: list[dict[str, Any]] | None = None
    cluster_log_conf: dict[str, Any] | None = None
    docker_image: dict[str, Any] | None = None
    ssh_public_keys: list[str] | None = None
    workload_type: dict[str, Any] | None = None
    cluster_name: str | None = None
    autotermination_minutes: int | None = None


CLUSTER_KEYS = tuple(f.name for f in fields(ClusterSpec))


@dataclass(frozen=True)
class DatabricksBackendConfig(ClusterSpec):
    """Options of the databricks backend (``--backend-config``): the new cluster's spec,
    either as top-level keys or, as MLflow also accepts, ``{"new_cluster": {...},
    "libraries": [...]}``."""

    new_cluster: dict[str, Any] | None = None
    libraries: list[dict[str, Any]] = field(default_factory=list)  # more libraries for the task
    profile: str | None = None  # the ~/.databrickscfg profile with the workspace's credentials
    timeout_seconds: int | None = None  # Databricks ends the run TIMEDOUT after this long
    tracking_uri: str | None = None
    env_vars: dict[str, str] = field(default_factory=dict)

    def cluster(self) -> dict[str, Any]:
        """The ``new_cluster`` of the run, as given."""
        if self.new_cluster is not None:
            return dict(self.new_cluster)
        return {key: getattr(self, key) for key in CLUSTER_KEYS if getattr(self, key) is not None}


def create(config: Mapping[str, Any], source: str) -> Backend:
    where = f"Backend config {source}: " if source else "Backend config: "
    if isinstance(config, Mapping):
        nested = config.get("new_cluster")
        if "existing_cluster_id" in config or (
            isinstance(nested, Mapping) and "existing_cluster_id" in nested
        ):
            raise UserInputError(
                f"{where}the databricks backend runs each project run on a new cluster (as "
                "MLflow does): replace existing_cluster_id with the spec of the cluster to "
                "start (spark_version, num_workers, node_type_id, ...)."
            )
    options = parse_options("databricks", DatabricksBackendConfig, config, source)
    check_options(options, where, source)
    # Checked now, so a run is never created that cannot be submitted.
    return DatabricksBackend(options, credentials(options.profile))


def check_options(options: DatabricksBackendConfig, where: str, source: str = "") -> None:
    """What ``parse_options`` cannot see: values, and the cluster spec as a whole."""
    uri = options.tracking_uri
    if uri is not None and (uri == "databricks" or uri.startswith("databricks:")):
        raise UserInputError(
            f"{where}tracking_uri {uri!r} is the workspace's own MLflow, which does not hold "
            "reprorun's runs: the job must log into the reprorun server that keeps this run. "
            "Start one the cluster can reach (reprorun server --host 0.0.0.0) and set "
            "tracking_uri to its address, e.g. http://<this-host>:5000."
        )
    tracking_options(options.tracking_uri, options.env_vars)
    for name in options.env_vars:
        if not _ENV_NAME.fullmatch(name):
            raise UserInputError(
                f"{where}env_vars: {name!r} is not a variable name (letters, digits and _)."
            )
    if options.timeout_seconds is not None and options.timeout_seconds < 0:
        raise UserInputError(
            f"{where}timeout_seconds must be an integer >= 0 (0: no limit), "
            f"got {options.timeout_seconds}."
        )
    if options.profile is not None and not options.profile.strip():
        raise UserInputError(f"{where}profile must name a profile of ~/.databrickscfg.")
    for library in options.libraries:
        _check_library(library, where)
    flat = [key for key in CLUSTER_KEYS if getattr(options, key) is not None]
    if options.new_cluster is not None:
        if flat:
            raise UserInputError(
                f"{where}give the cluster either as top-level keys or inside new_cluster, not "
                f"both (top-level: {', '.join(flat)})."
            )
        nested = f"{source} (new_cluster)" if source else "(new_cluster)"
        spec = parse_options("databricks", ClusterSpec, options.new_cluster, nested)
        check_cluster(spec, f"Backend config {nested}: ")
    else:
        check_cluster(options, where)


def check_cluster(spec: ClusterSpec, where: str) -> None:
    if spec.num_workers is not None and spec.num_workers < 0:
        raise UserInputError(f"{where}num_workers must be an integer >= 0, got {spec.num_workers}.")
    if spec.autoscale is not None:
        low, high = spec.autoscale.get("min_workers"), spec.autoscale.get("max_workers")
        unknown = sorted(set(spec.autoscale) - {"min_workers", "max_workers"})
        if unknown or low is None or high is None or not 0 <= low <= high:
            raise UserInputError(
                f"{where}autoscale must be {{'min_workers': m, 'max_workers': n}} with "
                f"0 <= m <= n, got {spec.autoscale!r}."
            )
        if spec.num_workers is not None:
            raise UserInputError(f"{where}give num_workers or autoscale, not both.")
    if spec.policy_id is not None:
        return  # a cluster policy may supply the rest: Databricks checks the spec against it
    missing = []
    if not spec.spark_version:
        missing.append("spark_version (the runtime, e.g. '15.4.x-scala2.12')")
    if spec.num_workers is None and spec.autoscale is None and not spec.is_single_node:
        missing.append("num_workers (or autoscale)")
    if not spec.node_type_id and not spec.instance_pool_id:
        missing.append("node_type_id (e.g. 'i3.xlarge'; or instance_pool_id)")
    if missing:
        raise UserInputError(
            f"{where}the databricks backend needs the new cluster's {'; '.join(missing)}. "
            'Example: {"spark_version": "15.4.x-scala2.12", "num_workers": 1, '
            '"node_type_id": "i3.xlarge"}.'
        )


def _check_library(library: Mapping[str, Any], where: str) -> None:
    kinds = [key for key in library if key in _LIBRARY_KINDS]
    if len(kinds) != 1 or len(library) != 1:
        raise UserInputError(
            f"{where}each of libraries must have exactly one of {', '.join(_LIBRARY_KINDS)} "
            f'(e.g. {{"pypi": {{"package": "scikit-learn==1.5.2"}}}}), got {dict(library)!r}.'
        )
    if kinds == ["pypi"]:
        pypi = library["pypi"]
        if not isinstance(pypi, Mapping) or not isinstance(pypi.get("package"), str):
            raise UserInputError(
                f"{where}a pypi library needs a package, e.g. "
                f'{{"pypi": {{"package": "scikit-learn==1.5.2"}}}}, got {dict(library)!r}.'
            )


# --- credentials ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """A workspace and a personal access token, with where they were read."""

    host: str
    token: str = field(repr=False)
    source: str


def credentials(profile: str | None, environ: Mapping[str, str] | None = None) -> Credentials:
    """The workspace and token as the Databricks CLI and SDKs find them.

    A profile named in the backend config is used as a whole (it is kept with the run, so
    ``reprorun runs status`` reaches the same workspace from any shell). Otherwise each of
    DATABRICKS_HOST and DATABRICKS_TOKEN wins over the profile's ``host`` and ``token``; the
    profile is DATABRICKS_CONFIG_PROFILE or DEFAULT of DATABRICKS_CONFIG_FILE (default
    ~/.databrickscfg), read unless both variables are set.
    """
    env = os.environ if environ is None else environ
    path = Path(env.get("DATABRICKS_CONFIG_FILE") or "~/.databrickscfg").expanduser()
    explicit = profile is not None
    name = profile or env.get("DATABRICKS_CONFIG_PROFILE") or None
    host = "" if explicit else env.get("DATABRICKS_HOST", "").strip()
    token = "" if explicit else env.get("DATABRICKS_TOKEN", "").strip()
    host_from = "DATABRICKS_HOST" if host else ""
    token_from = "DATABRICKS_TOKEN" if token else ""
    if not (host and token):
        section = _profile(path, name or "DEFAULT", required=name is not None)
        if section is not None:
            where = f"profile {name or 'DEFAULT'} of {path}"
            if not host and section.get("host", "").strip():
                host, host_from = section["host"].strip(), where
            if not token and section.get("token", "").strip():
                token, token_from = section["token"].strip(), where
            if not token and any(k in section for k in ("client_id", "auth_type", "username")):
                raise UserInputError(
                    f"The {where} signs in with {section.get('auth_type') or 'OAuth or a password'}"
                    "; the databricks backend uses a personal access token: add `token = ...` "
                    "to that profile (databricks configure --token), or set DATABRICKS_TOKEN."
                )
    if not (host and token):
        found = [f"{key} from {src}" for key, src in (("host", host_from), ("token", token_from))]
        raise UserInputError(
            "No Databricks credentials for the databricks backend (found: "
            f"{', '.join(f for f in found if not f.endswith(' from ')) or 'nothing'}). It reads "
            "them as the Databricks CLI does: the environment variables DATABRICKS_HOST and "
            "DATABRICKS_TOKEN, else the keys host and token of a profile in "
            f"{path} (DEFAULT, or the one named by the option 'profile' or "
            "DATABRICKS_CONFIG_PROFILE; DATABRICKS_CONFIG_FILE names another file). Run "
            "`databricks configure --token`, or set DATABRICKS_HOST and DATABRICKS_TOKEN."
        )
    source = host_from if host_from == token_from else f"{host_from} and {token_from}"
    return Credentials(workspace_url(host, source), token, source)


def _profile(path: Path, name: str, required: bool) -> dict[str, str] | None:
    if not path.is_file():
        if required:
            raise UserInputError(
                f"Databricks profile {name!r} was asked for, but {path} does not exist "
                "(databricks configure --token --profile NAME writes it)."
            )
        return None
    # No DEFAULT merging into other profiles (as the SDKs read the file), no % interpolation.
    parser = configparser.ConfigParser(default_section="\0", interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"Cannot read the Databricks config file {path}: {exc}") from None
    if not parser.has_section(name):
        if not required:
            return None
        raise UserInputError(
            f"Databricks profile {name!r} is not in {path} (profiles there: "
            f"{', '.join(parser.sections()) or 'none'})."
        )
    return dict(parser.items(name))


def workspace_url(host: str, source: str) -> str:
    """``https://<host>`` from a host as the CLI accepts it (with or without a scheme)."""
    given = host.strip().rstrip("/")
    parsed = urlparse(given if "://" in given else f"https://{given}")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UserInputError(
            f"The Databricks host {host!r} (from {source}) is not a workspace URL such as "
            "https://adb-1234567890123456.7.azuredatabricks.net."
        )
    return f"{parsed.scheme}://{parsed.netloc}"


# --- the REST API --------------------------------------------------------------------------


class WorkspaceApi:
    """The few calls of the Databricks REST API the backend makes (standard library only)."""

    def __init__(self, creds: Credentials):
        self.host = creds.host
        self.source = creds.source
        self._token = creds.token

    def call(
        self,
        method: str,
        path: str,
        payload: Mapping[str, Any] | None = None,
        *,
        query: Mapping[str, Any] | None = None,
        what: str = "",
        retry: bool = True,
    ) -> dict[str, Any]:
        """One call; retried (bounded) when the workspace is busy (429, 5xx). A workspace
        that cannot be reached raises ExecutionError naming it."""
        url = self.host + path + (f"?{urlencode(query)}" if query else "")
        data = json.dumps(payload).encode("utf-8") if payload is not None else None
        what = what or f"{method} {path}"
        delays = list(_RETRY_DELAYS) if retry else []
        while True:
            request = urllib.request.Request(  # noqa: S310 - workspace_url allows http(s) only
                url,
                data=data,
                method=method,
                headers={
                    "Authorization": f"Bearer {self._token}",
                    "Content-Type": "application/json",
                    "User-Agent": "reprorun",
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:  # noqa: S310
                    return self._json(bytes(response.read()), what)
            except urllib.error.HTTPError as exc:
                with exc:
                    status, body = int(exc.code), bytes(exc.read())
                    retry_after = exc.headers.get("Retry-After") if exc.headers else None
                if status in _RETRY_STATUSES and delays:
                    time.sleep(_retry_delay(retry_after, delays.pop(0)))
                    continue
                raise self._error(status, body, what) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
                # HTTPException: something that is not an HTTP server answered
                reason = getattr(exc, "reason", None) or repr(exc)
                raise ExecutionError(
                    f"Could not reach the Databricks workspace {self.host} ({what}: {reason}). "
                    f"Check the host (from {self.source}) and this machine's network or proxy."
                ) from None

    def _json(self, data: bytes, what: str) -> dict[str, Any]:
        try:
            parsed = json.loads(data or b"{}")
        except ValueError:
            raise ExecutionError(
                f"{self.host} answered {what} with something other than JSON: is it the URL "
                f"of a Databricks workspace (from {self.source})? It said: {data[:200]!r}"
            ) from None
        return parsed if isinstance(parsed, dict) else {}

    def _error(self, status: int, data: bytes, what: str) -> WorkspaceError:
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            code = str(parsed.get("error_code") or status)
            said = str(parsed.get("message") or "").strip() or "(no message)"
        else:
            code = str(status)
            said = data.decode("utf-8", "replace").strip()[:300] or "(no message)"
        if status in (401, 403):
            return WorkspaceError(
                f"The Databricks workspace {self.host} refused the token from {self.source} "
                f"({what}: HTTP {status} {code}: {said}). The token is wrong, expired or "
                "revoked, or lacks the permission: create a personal access token (Settings > "
                "Developer > Access tokens) and set DATABRICKS_TOKEN or the profile's token.",
                status,
                code,
            )
        return WorkspaceError(
            f"The Databricks workspace {self.host} refused {what}: HTTP {status} {code}: {said}",
            status,
            code,
        )

    # --- DBFS ----------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        try:
            self.call("GET", f"{DBFS_API}/get-status", query={"path": path}, what=f"DBFS {path}")
        except WorkspaceError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or exc.status == 404:
                return False
            raise
        return True

    def upload(self, source: IO[bytes], size: int, path: str) -> None:
        """Write ``source`` to DBFS ``path``: one ``put`` up to 1 MB, else the streaming
        ``create``, ``add-block`` (1 MB each), ``close``."""
        what = f"uploading {path} ({size} bytes) to DBFS"
        if size <= BLOCK_SIZE:
            contents = base64.b64encode(source.read()).decode("ascii")
            body = {"path": path, "contents": contents, "overwrite": True}
            self.call("POST", f"{DBFS_API}/put", body, what=what)
            return
        handle = self.call(
            "POST", f"{DBFS_API}/create", {"path": path, "overwrite": True}, what=what
        )
        for block in iter(lambda: source.read(BLOCK_SIZE), b""):
            data = base64.b64encode(block).decode("ascii")
            # Not retried: a block the workspace took before failing would be written twice.
            self.call(
                "POST",
                f"{DBFS_API}/add-block",
                {"handle": handle.get("handle"), "data": data},
                what=what,
                retry=False,
            )
        self.call("POST", f"{DBFS_API}/close", {"handle": handle.get("handle")}, what=what)

    def publish(self, folder: str, suffix: str, write: Callable[[IO[bytes]], None]) -> str:
        """Store what ``write`` produces as ``<folder>/<sha256><suffix>`` unless DBFS has it
        already (the same content, the same name); returns the DBFS path."""
        with tempfile.TemporaryFile(prefix="reprorun-databricks-") as out:
            write(out)
            size = out.tell()
            out.seek(0)
            digest = hashlib.sha256()
            for chunk in iter(lambda: out.read(BLOCK_SIZE), b""):
                digest.update(chunk)
            path = f"{folder}/{digest.hexdigest()}{suffix}"
            if not self.exists(path):
                out.seek(0)
                self.upload(out, size, path)
        return path


def _retry_delay(retry_after: str | None, default: float) -> float:
    try:
        return min(max(float(retry_after), 0.0), 30.0) if retry_after else default
    except ValueError:
        return default


# --- what is shipped -----------------------------------------------------------------------


def pack_tree(
    root: Path, out: IO[bytes], prefix: str, skip: Callable[[str], bool] | None = None
) -> None:
    """A gzipped tar of ``root``'s files under ``prefix/``, without .git (or what ``skip``
    refuses, by name), byte-for-byte the same for the same tree (sorted, fixed dates and
    owners); modes and symlinks are kept."""
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in _walk(root, skip or (lambda name: name == ".git")):
            info = tar.gettarinfo(str(path), f"{prefix}/{path.relative_to(root).as_posix()}")
            info.mtime = _TAR_TIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isreg():
                with path.open("rb") as src:
                    tar.addfile(info, src)
            elif info.isdir() or info.issym():
                tar.addfile(info)


def _walk(root: Path, skip: Callable[[str], bool]) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not skip(d))
        here = Path(folder)
        if here != root:
            yield here
        for name in sorted(files):
            if not skip(name):  # .git as a file: a submodule's link to its repository
                yield here / name
        for name in dirs:
            if (here / name).is_symlink():
                yield here / name  # os.walk lists a link to a folder as a folder


def pack_client(out: IO[bytes]) -> None:
    """reprorun's package as ``client/reprorun`` (its in-run client needs only the standard
    library). Only sources: caches differ between machines and would change the name."""
    from reprorun.envs.client import package_dir

    package = package_dir()

    def skip(name: str) -> bool:
        return name == "__pycache__" or name.endswith(".pyc")

    pack_tree(package, out, "client/reprorun", skip)


def lock_libraries(lock_text: str | None) -> list[dict[str, Any]]:
    """The lock's packages as the task's PyPI libraries, minus those the Databricks Runtime
    provides itself (pyspark, py4j). Packages installed from this machine's files cannot be
    installed on the cluster: refused, naming them."""
    libraries: list[dict[str, Any]] = []
    local = []
    for raw in (lock_text or "").splitlines():
        given = line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-e ", "--editable ")):
            line = line.split(None, 1)[1]  # an editable install from a VCS URL installs anywhere
        if line.startswith(("file:", "/", ".", "-")) or "@ file:" in line or "@file:" in line:
            local.append(given)
            continue
        name = re.split(r"[\s=<>!~\[;@(]", line, maxsplit=1)[0].lower().replace("_", "-")
        if name not in _RUNTIME_PACKAGES:
            libraries.append({"pypi": {"package": line}})
    if local:
        raise ExecutionError(
            "The environment's lock installs packages from this machine's files, which the "
            f"Databricks cluster cannot install: {'; '.join(local)}. Publish them to an index "
            "the workspace reaches (or a git URL), pin that in the project's environment, and "
            "rerun."
        )
    return libraries


LAUNCHER = '''\
"""reprorun's launcher on a Databricks cluster (the run's spark_python_task): unpack the
project and reprorun's client, then run the project's command with bash in its folder with the
run's variables. Its output is the task's output; a command that fails fails the task."""
import json
import os
import subprocess
import sys
import tarfile
import tempfile

MARKER = "[reprorun] the command exited with code "


def unpack(archive, into):
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "tar_filter"):
            tar.extractall(into, filter="tar")
        else:
            tar.extractall(into)


def main(argv):
    args = dict(arg.split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
    work = tempfile.mkdtemp(prefix="reprorun-")
    unpack(args["--project"], work)
    unpack(args["--client"], work)
    project = os.path.join(work, "mlflow-project")
    cwd = os.path.join(project, args["--subdirectory"]) if args["--subdirectory"] else project
    env = dict(os.environ)
    env.update(json.loads(args["--env"]))
    client = os.path.join(work, "client")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (client, env.get("PYTHONPATH")) if p)
    # `python` and `reprorun` in the command: this interpreter, which has the libraries.
    bin_dir = os.path.join(work, "bin")
    os.mkdir(bin_dir)
    shim = os.path.join(bin_dir, "reprorun")
    with open(shim, "w") as f:
        f.write('#!/bin/sh\\nexec "%s" -m reprorun "$@"\\n' % sys.executable)
    os.chmod(shim, 0o755)
    path = [bin_dir, os.path.dirname(sys.executable), env.get("PATH", "")]
    env["PATH"] = os.pathsep.join(p for p in path if p)
    proc = subprocess.Popen(
        ["bash", "-c", args["--command"]],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = getattr(sys.stdout, "buffer", None)
    last = b"\\n"
    for chunk in iter(lambda: proc.stdout.read1(65536), b""):
        if out is not None:
            out.write(chunk)
        else:
            sys.stdout.write(chunk.decode("utf-8", "replace"))
        sys.stdout.flush()
        last = chunk[-1:]
    code = proc.wait()
    sys.stdout.write(("" if last == b"\\n" else "\\n") + MARKER + str(code) + "\\n")
    sys.stdout.flush()
    if code != 0:
        raise RuntimeError("reprorun: the project's command exited with code %d" % code)


if __name__ == "__main__":
    main(sys.argv[1:])
'''


def write_launcher(out: IO[bytes]) -> None:
    out.write(LAUNCHER.encode("utf-8"))


def launcher_parameters(
    project: str, client: str, subdirectory: str, command: str, env: Mapping[str, str]
) -> list[str]:
    """The launcher's arguments (``--name=value``: a command starting with '-' stays a value)."""
    return [
        f"--project={fuse_path(project)}",
        f"--client={fuse_path(client)}",
        f"--subdirectory={subdirectory}",
        f"--command={command}",
        f"--env={json.dumps(dict(sorted(env.items())))}",
    ]


def fuse_path(dbfs_path: str) -> str:
    """Where the cluster's nodes see a DBFS file (the /dbfs mount, as MLflow's command)."""
    return "/dbfs" + dbfs_path


def submit_body(
    config: DatabricksBackendConfig,
    spec: LaunchSpec,
    launcher: str,
    parameters: list[str],
    libraries: list[dict[str, Any]],
) -> dict[str, Any]:
    """The body of ``runs/submit``: one task on a new cluster; the run's id as the
    idempotency token, so a retried submission never starts a second run."""
    task: dict[str, Any] = {
        "task_key": TASK_KEY,
        "new_cluster": config.cluster(),
        "spark_python_task": {"python_file": f"dbfs:{launcher}", "parameters": parameters},
    }
    if libraries:
        task["libraries"] = libraries
    body: dict[str, Any] = {
        "run_name": f"reprorun {spec.run_id}",
        "idempotency_token": spec.run_id,
        "tasks": [task],
    }
    if config.timeout_seconds is not None:
        body["timeout_seconds"] = config.timeout_seconds
    return body


# --- states --------------------------------------------------------------------------------

_WAITING = frozenset({"QUEUED", "PENDING", "BLOCKED", "WAITING_FOR_RETRY"})


def job_state(
    state: Mapping[str, Any], run_id: str, error: str | None = None, exit_code: int | None = None
) -> JobState:
    """A Databricks run state (``life_cycle_state``, ``result_state``, ``state_message``) and
    its task's error as reprorun's JobState."""
    life = str(state.get("life_cycle_state") or "")
    result = state.get("result_state")
    details = [str(state.get("state_message") or "").strip(), (error or "").strip()]
    said = "; ".join(dict.fromkeys(d for d in details if d))
    said = f": {said}" if said else ""
    if life in _WAITING:
        return JobState(RunStatus.SCHEDULED)
    if life == "SKIPPED":
        return JobState(RunStatus.FAILED, f"Databricks skipped run {run_id}{said}")
    if life == "INTERNAL_ERROR":
        return JobState(
            RunStatus.FAILED, f"Databricks run {run_id} ended INTERNAL_ERROR{said}", exit_code
        )
    if life == "TERMINATED":
        if result == "SUCCESS":
            return JobState(RunStatus.FINISHED, exit_code=exit_code)
        if result == "CANCELED":
            return JobState(RunStatus.KILLED, f"Databricks run {run_id} was CANCELED{said}")
        if not result:
            return JobState(RunStatus.FAILED, f"Databricks run {run_id} ended without a result")
        hint = " (timeout_seconds)" if result == "TIMEDOUT" else ""
        return JobState(
            RunStatus.FAILED, f"Databricks run {run_id} ended {result}{hint}{said}", exit_code
        )
    # RUNNING, TERMINATING (the result is final once TERMINATED), and states added later.
    return JobState(RunStatus.RUNNING)


def exit_code_of(logs: str) -> int | None:
    """The command's exit code, from the launcher's last line."""
    found = _EXIT_LINE.findall(logs)
    return int(found[-1]) if found else None


# --- the backend ---------------------------------------------------------------------------


class DatabricksBackend(Backend):
    name = "databricks"
    remote = True
    shares_filesystem = False  # the cluster gets a copy of the project; it logs over HTTP

    def __init__(self, config: DatabricksBackendConfig, creds: Credentials):
        self.config = config
        self.tracking_uri = config.tracking_uri
        self.api = WorkspaceApi(creds)

    def _submit(self, spec: LaunchSpec) -> SubmittedRun:
        libraries = [*self.config.libraries, *lock_libraries(spec.lock_text)]
        api = self.api
        projects = PROJECTS_DIR.format(experiment_id=spec.experiment_id)
        project = api.publish(
            projects, ".tar.gz", lambda out: pack_tree(spec.root, out, ARCHIVE_ROOT)
        )
        client = api.publish(CLIENT_DIR, ".tar.gz", pack_client)
        launcher = api.publish(LAUNCHER_DIR, ".py", write_launcher)
        env = {**self.config.env_vars, **spec.job_env}  # the run's own variables win
        parameters = launcher_parameters(project, client, spec.subdirectory, spec.command, env)
        body = submit_body(self.config, spec, launcher, parameters, libraries)
        answer = api.call("POST", f"{JOBS_API}/runs/submit", body, what="runs/submit")
        if "run_id" not in answer:
            raise ExecutionError(f"{api.host} answered runs/submit without a run_id: {answer}")
        job = DatabricksJob(
            api,
            spec.run_id,
            str(answer["run_id"]),
            spec.store,
            spec.artifact_uri,
            _server_uri(spec.store),
        )
        tags = {SHELL_JOB_RUN_ID_TAG: job.job_id, WEBAPP_URL_TAG: api.host}
        try:
            info = job.info()
        except ExecutionError:
            info = None  # the run is submitted: its page is a nicety, not a reason to fail
        if info:
            if info.get("run_page_url"):
                job.job_url = str(info["run_page_url"])
                tags[RUN_URL_TAG] = job.job_url
            if info.get("job_id") is not None:
                tags[SHELL_JOB_ID_TAG] = str(info["job_id"])
        spec.store.set_tags(spec.run_id, tags)
        # Waiting for its cluster until Databricks runs it; following the job moves it on.
        spec.store.update_run(
            spec.run_id, status=RunStatus.SCHEDULED, only_if_status=RunStatus.RUNNING
        )
        return job

    def attach(self, run: Run, store: TrackingStore) -> SubmittedRun:
        tags = run.data.tags
        job_id = tags.get(JOB_ID_TAG, "")
        if not job_id and not run.info.status.is_terminal:
            raise ExecutionError(
                f"Run {run.info.run_id} has no Databricks run id yet (tag {JOB_ID_TAG}): it "
                "is being submitted, or its submitter died before Databricks answered."
            )
        workspace = tags.get(WEBAPP_URL_TAG, "").rstrip("/")
        if job_id and workspace and workspace != self.api.host:
            raise UserInputError(
                f"Run {run.info.run_id} runs in the Databricks workspace {workspace}, but the "
                f"credentials found ({self.api.source}) are for {self.api.host}: set "
                "DATABRICKS_HOST and DATABRICKS_TOKEN (or DATABRICKS_CONFIG_PROFILE) for that "
                "workspace."
            )
        job = DatabricksJob(
            self.api, run.info.run_id, job_id, store, run.info.artifact_uri, _server_uri(store)
        )
        job.job_url = tags.get(JOB_URL_TAG) or tags.get(RUN_URL_TAG)
        return job


def _server_uri(store: TrackingStore) -> str | None:
    """The tracking server keeping the run's artifacts, when the store is one."""
    uri = getattr(store, "uri", None)
    return uri if isinstance(uri, str) and uri.startswith(("http://", "https://")) else None


class DatabricksJob(RemoteJob):
    backend = "databricks"
    poll_seconds = 5.0  # a cluster takes minutes to start; spare the workspace's rate limits

    def __init__(
        self,
        api: WorkspaceApi,
        run_id: str,
        job_id: str,
        store: TrackingStore,
        artifact_uri: str,
        tracking_uri: str | None = None,
    ):
        super().__init__(run_id, job_id, store, artifact_uri, tracking_uri)
        self.api = api
        self._task_run_id: int | None = None
        self._output: dict[str, Any] | None = None  # an ended run's output no longer changes

    def _db_run_id(self) -> int:
        try:
            return int(self.job_id)
        except ValueError:
            raise ExecutionError(
                f"Run {self.run_id}'s job id {self.job_id!r} is not a Databricks run id."
            ) from None

    def info(self) -> dict[str, Any] | None:
        """``runs/get``; None when the workspace does not know the run (any more)."""
        try:
            return self.api.call(
                "GET",
                f"{JOBS_API}/runs/get",
                query={"run_id": self._db_run_id()},
                what=f"runs/get of run {self.job_id}",
            )
        except WorkspaceError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "does not exist" in str(exc):
                return None
            raise

    def _state(self) -> JobState:
        info = self.info()
        if info is None:
            return JobState(
                RunStatus.FAILED,
                f"The Databricks workspace {self.api.host} no longer knows run {self.job_id} "
                "(it deletes runs after 60 days, or someone deleted it); its outcome is unknown.",
            )
        state = info.get("state") or {}
        found = job_state(state, self.job_id)
        if not found.status.is_terminal:
            return found
        output = self._fetch_output(info)
        self._output = output
        logs = str(output.get("logs") or "")
        return job_state(state, self.job_id, output.get("error"), exit_code_of(logs))

    def _fetch_output(self, info: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The task's output (``runs/get-output`` takes the task's run id, not the run's)."""
        if self._task_run_id is None:
            info = info if info is not None else self.info()
            tasks = (info or {}).get("tasks") or []
            if not tasks or tasks[0].get("run_id") is None:
                return {}
            self._task_run_id = int(tasks[0]["run_id"])
        try:
            return self.api.call(
                "GET",
                f"{JOBS_API}/runs/get-output",
                query={"run_id": self._task_run_id},
                what=f"runs/get-output of run {self.job_id}",
            )
        except WorkspaceError as exc:
            if exc.status in (400, 404):
                return {}  # not started yet, or gone: no output to show
            raise

    def _read_log(self) -> bytes:
        if not self.job_id:
            return b""  # never submitted: no output anywhere
        output = self._output if self._output is not None else self._fetch_output()
        text = str(output.get("logs") or "")
        if output.get("logs_truncated"):
            text = "[reprorun] Databricks keeps only the end of this output (5 MB)\n" + text
        trace = str(output.get("error_trace") or "").strip()
        if trace and trace not in text:
            text += ("" if not text or text.endswith("\n") else "\n") + trace + "\n"
        return text.encode("utf-8")

    def _stop(self) -> None:
        try:
            self.api.call(
                "POST",
                f"{JOBS_API}/runs/cancel",
                {"run_id": self._db_run_id()},
                what=f"runs/cancel of run {self.job_id}",
            )
        except WorkspaceError as exc:
            if "does not exist" not in str(exc) and exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise  # an unknown run: the next look at its state says so
