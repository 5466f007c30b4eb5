"""System metrics of a local run: the sampler lives in ``reprorun.tracking.system_sampler``,
where the remote jobs' wrapper (``reprorun.tracking.heartbeat``, which may import no backend)
uses it too. This module keeps the names the local backend and its tests know."""

from __future__ import annotations

from reprorun.tracking.system_sampler import (
    MB,
    PREFIX,
    ProcStat,
    SystemMetrics,
    parse_cpu,
    parse_hwm,
    parse_meminfo,
    parse_net_dev,
    parse_nvidia_smi,
    parse_stat,
    process_tree,
)

__all__ = [
    "MB",
    "PREFIX",
    "ProcStat",
    "SystemMetrics",
    "parse_cpu",
    "parse_hwm",
    "parse_meminfo",
    "parse_net_dev",
    "parse_nvidia_smi",
    "parse_stat",
    "process_tree",
]
