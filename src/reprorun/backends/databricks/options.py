"""The databricks backend's options (``--backend-config``): the new cluster's spec, as
MLflow's databricks backend takes it, and what the backend adds; checked before any work."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from reprorun.backends.base import parse_options, tracking_options
from reprorun.errors import UserInputError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LIBRARY_KINDS = ("pypi", "maven", "cran", "jar", "egg", "whl", "requirements")


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


def read_config(config: Mapping[str, Any], source: str) -> DatabricksBackendConfig:
    """The backend config, parsed and checked (``source`` names its file in messages)."""
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
    return options


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
