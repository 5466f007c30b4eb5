"""The Ray backend's options (``--backend-config``) and the job names and metadata it uses."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from urllib.parse import urlparse

from reprorun.errors import UserInputError

JOB_PREFIX = "reprorun-"


TIMEOUT_KEY = "reprorun.timeout_seconds"  # the job's metadata: --timeout, in seconds


@dataclass(frozen=True)
class RayBackendConfig:
    """Options of the ray backend (``--backend-config``)."""

    # The dashboard's HTTP address (Jobs API), e.g. http://head:8265; default $RAY_ADDRESS.
    address: str | None = None
    # Resources reserved for the command (Ray's entrypoint_num_cpus, ...); None: Ray's default.
    num_cpus: float | None = None
    num_gpus: float | None = None
    memory: int | None = None  # bytes
    resources: dict[str, float] = field(default_factory=dict)  # custom resources
    tracking_uri: str | None = None
    env_vars: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("num_cpus", "num_gpus", "memory"):
            value = getattr(self, key)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise UserInputError(
                    f"Backend config: option {key!r} of the ray backend must be >= 0, "
                    f"got {value!r}."
                )
        for key, amount in self.resources.items():
            if not math.isfinite(amount) or amount < 0:
                raise UserInputError(
                    f"Backend config: resources[{key!r}] of the ray backend must be >= 0, "
                    f"got {amount!r}."
                )


def jobs_address(given: str, where: str) -> str:
    """The Jobs API's base URL from an address as Ray's CLI accepts it (host:port = http)."""
    address = given.strip().rstrip("/")
    if "://" not in address:
        address = f"http://{address}"
    parsed = urlparse(address)
    if parsed.scheme not in ("http", "https") or given.strip() in ("auto", "local"):
        raise UserInputError(
            f"{where} is {given!r}: the ray backend submits through the Jobs API of the "
            "cluster's dashboard, so it needs its HTTP address, e.g. http://head-node:8265 "
            "(not a ray:// client address, 'auto', or the GCS port 6379)."
        )
    return address
