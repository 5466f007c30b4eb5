"""System metrics of a run, sampled from /proc while its command runs.

A thread of the process that supervises the command (the local backend's runner, which is
also what a detached supervisor runs; on a remote backend, the job's wrapper
``reprorun.tracking.heartbeat`` on the job's node) logs a batch of ``system/*`` metrics every
``interval`` seconds (``REPRORUN_SYSTEM_METRICS_INTERVAL``, 10 s as MLflow), steps 0, 1, 2, ...,
under the names MLflow's system-metrics feature writes, so MLflow's UI and clients show them
as theirs:

machine-wide, as MLflow's are (MLflow measures the machine, not the run):
    system/cpu_utilization_percentage       all CPUs busy since the last sample
    system/system_memory_usage_megabytes    used memory (psutil's ``used``)
    system/system_memory_usage_percentage   used / total
    system/disk_usage_percentage            the file system of the run's working folder
    system/disk_usage_megabytes             (MLflow measures ``/``; the same file system on
    system/disk_available_megabytes         most machines)
    system/network_receive_megabytes        every interface, since the run started
    system/network_transmit_megabytes
    system/gpu_{i}_utilization_percentage, gpu_{i}_memory_usage_megabytes,
    gpu_{i}_memory_usage_percentage, gpu_{i}_power_usage_watts, gpu_{i}_power_usage_percentage
                                            from ``nvidia-smi`` when it is on PATH

the run's process tree (the command's process, its descendants and every process of its
session), under the names of MLflow's process monitor:
    system/process_cpu_percentage           CPU time of the tree / wall time (100 = one core)
    system/process_memory_rss_megabytes     resident memory of the tree
    system/process_memory_vms_megabytes
    system/process_memory_percentage        the tree's resident memory / the machine's memory
    system/process_threads

Megabytes are 10^6 bytes, values rounded to one decimal, as MLflow writes them. The tree's
peak resident memory (``SystemTags.PEAK_MEMORY``, MB) is kept from a scan every second (at most
``interval``): the largest of the tree's summed resident memory and of each process's own
high-water mark (``VmHWM``), so a spike between scans of a process alive at a scan counts.
Nothing here may fail the run: an unreadable file is skipped, a store that refuses three
batches in a row is not asked again (the peak is still kept).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import NamedTuple

from reprorun.tracking.entities import Metric, SystemTags, now_ms
from reprorun.tracking.store.base import TrackingStore

MB = 1e6  # as MLflow
PREFIX = "system/"
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_PEAK_SECONDS = 1.0  # how often the tree is scanned for its peak memory
_GIVE_UP_AFTER = 3  # refused batches in a row
# The first reading waits this long: a command that ends sooner (most trivial ones) costs its
# run nothing, and the reading does not compete with the command's own start.
_SETTLE_SECONDS = 0.05
_NVIDIA_QUERY = "index,utilization.gpu,memory.used,memory.total,power.draw,power.limit"


class ProcStat(NamedTuple):
    """What one line of /proc/PID/stat says about a process."""

    pid: int
    ppid: int
    session: int
    state: str
    cpu_ticks: int  # utime + stime + cutime + cstime: reaped children's time moves, not goes
    threads: int
    vms: int  # bytes
    rss: int  # bytes


def parse_stat(text: bytes) -> ProcStat:
    """Parse /proc/PID/stat (the command name may hold spaces and parentheses)."""
    pid = int(text[: text.index(b" ")])
    fields = text[text.rindex(b")") + 2 :].split()
    # fields[0] is field 3 of proc(5): state, ppid, pgrp, session, ...
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        session=int(fields[3]),
        state=fields[0].decode(),
        cpu_ticks=sum(int(x) for x in fields[11:15]),
        threads=int(fields[17]),
        vms=int(fields[20]),
        rss=int(fields[21]) * _PAGE,
    )


def parse_hwm(status: bytes) -> int:
    """A process's peak resident memory in bytes (``VmHWM`` of /proc/PID/status; 0 if none)."""
    for line in status.splitlines():
        if line.startswith(b"VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def parse_cpu(text: bytes) -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs from /proc/stat, counted as psutil does: idle
    and iowait are idle; guest time is already in user time."""
    values = [int(x) for x in text.split(b"\n", 1)[0].split()[1:9]]
    total = sum(values)
    return total - values[3] - values[4], total


def parse_meminfo(text: bytes) -> tuple[int, int]:
    """(used, total) bytes from /proc/meminfo, ``used`` as psutil computes it (total - free
    - buffers - cached - reclaimable slab)."""
    kb: dict[bytes, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(b":")
        with contextlib.suppress(ValueError, IndexError):
            kb[name] = int(rest.split()[0]) * 1024
    total = kb.get(b"MemTotal", 0)
    free = kb.get(b"MemFree", 0)
    used = total - free - kb.get(b"Buffers", 0) - kb.get(b"Cached", 0) - kb.get(b"SReclaimable", 0)
    return (used if used >= 0 else total - free), total


def parse_net_dev(text: bytes) -> tuple[int, int]:
    """(received, transmitted) bytes summed over every interface of /proc/net/dev."""
    received = transmitted = 0
    for line in text.splitlines()[2:]:
        _, _, counters = line.partition(b":")
        values = counters.split()
        if len(values) >= 9:
            received += int(values[0])
            transmitted += int(values[8])
    return received, transmitted


def parse_nvidia_smi(text: str) -> dict[str, float]:
    """The ``gpu_{i}_*`` metrics from ``nvidia-smi --query-gpu=<_NVIDIA_QUERY>
    --format=csv,noheader,nounits``; a value the GPU does not report ("[N/A]") is left out."""

    def number(value: str) -> float | None:
        try:
            return float(value)
        except ValueError:
            return None

    metrics: dict[str, float] = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != 6 or not cells[0].isdigit():
            continue
        i = cells[0]
        utilization, used, total, power, limit = (number(c) for c in cells[1:])
        if utilization is not None:
            metrics[f"gpu_{i}_utilization_percentage"] = utilization
        if used is not None:
            metrics[f"gpu_{i}_memory_usage_megabytes"] = used * 2**20 / MB  # MiB -> MB
            if total:
                metrics[f"gpu_{i}_memory_usage_percentage"] = used / total * 100
        if power is not None:
            metrics[f"gpu_{i}_power_usage_watts"] = power
            if limit:
                metrics[f"gpu_{i}_power_usage_percentage"] = power / limit * 100
    return metrics


def process_tree(root: int, proc: Path = Path("/proc")) -> list[ProcStat]:
    """The live processes of ``root``'s tree: ``root``, its descendants, and the processes of
    its session (a command started in a session of its own: what it left behind counts)."""
    stats: list[ProcStat] = []
    for entry in os.scandir(proc):
        if entry.name.isdigit():
            try:
                with open(f"{entry.path}/stat", "rb") as fh:
                    stats.append(parse_stat(fh.read()))
            except (OSError, ValueError, IndexError):
                continue  # ended meanwhile, or not ours to read
    children: dict[int, list[int]] = {}
    for stat in stats:
        children.setdefault(stat.ppid, []).append(stat.pid)
    members = {s.pid for s in stats if s.session == root} | {root}
    todo = list(members)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in members:
                members.add(child)
                todo.append(child)
    return [s for s in stats if s.pid in members and s.state not in ("Z", "X")]


class _Reading(NamedTuple):
    """Counters at one moment, for the rates and totals between two samples."""

    at: float
    cpu: tuple[int, int] | None
    network: tuple[int, int] | None
    tree_ticks: int | None
    tree: list[ProcStat]


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


class SystemMetrics:
    """The sampling thread of one run. ``start`` it once the command runs; ``stop`` returns
    the tags to write with the run's end (its peak memory)."""

    def __init__(self, store: TrackingStore, run_id: str, root: int, interval: float, cwd: Path):
        self.store = store
        self.run_id = run_id
        self.root = root
        self.interval = interval
        self.cwd = cwd
        self.peak = 0  # bytes
        self.logged = 0  # batches the store took
        self._refused = 0
        self._stopping = threading.Event()
        self._gpu = shutil.which("nvidia-smi")
        self._thread = threading.Thread(
            target=self._loop, name=f"metrics-{run_id[:8]}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> dict[str, str]:
        """Stop sampling (waiting at most ``timeout`` for a batch being written) and return
        ``PEAK_MEMORY`` when anything was seen."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return {SystemTags.PEAK_MEMORY: f"{self.peak / MB:.1f}"} if self.peak else {}

    def _loop(self) -> None:
        try:
            if self._stopping.wait(min(self.interval, _SETTLE_SECONDS)):
                return
            previous = self._reading()
            start = previous
            step = 0
            tick = min(self.interval, _PEAK_SECONDS)
            due = previous.at + self.interval
            while not self._stopping.wait(max(0.0, min(tick, due - time.monotonic()))):
                if time.monotonic() < due:
                    self._scan()
                    continue
                current = self._reading()
                self._log(self.sample(start, previous, current), step)
                previous, step = current, step + 1
                due = max(due + self.interval, time.monotonic())
        except Exception:  # never the run's problem
            return

    def _scan(self) -> list[ProcStat]:
        """The tree now, keeping its peak memory."""
        tree = process_tree(self.root)
        peak = sum(s.rss for s in tree)
        for stat in tree:
            status = _read(f"/proc/{stat.pid}/status")
            if status:
                peak = max(peak, parse_hwm(status))
        self.peak = max(self.peak, peak)
        return tree

    def _reading(self) -> _Reading:
        cpu = _read("/proc/stat")
        network = _read("/proc/net/dev")
        tree = self._scan()
        return _Reading(
            at=time.monotonic(),
            cpu=parse_cpu(cpu) if cpu else None,
            network=parse_net_dev(network) if network else None,
            tree_ticks=sum(s.cpu_ticks for s in tree) if tree else None,
            tree=tree,
        )

    def sample(self, start: _Reading, previous: _Reading, current: _Reading) -> dict[str, float]:
        """The metrics between two readings (without the ``system/`` prefix)."""
        metrics: dict[str, float] = {}
        if previous.cpu and current.cpu:
            busy = current.cpu[0] - previous.cpu[0]
            total = current.cpu[1] - previous.cpu[1]
            metrics["cpu_utilization_percentage"] = busy / total * 100 if total > 0 else 0.0
        meminfo = _read("/proc/meminfo")
        used, total_memory = parse_meminfo(meminfo) if meminfo else (0, 0)
        if total_memory:
            metrics["system_memory_usage_megabytes"] = used / MB
            metrics["system_memory_usage_percentage"] = used / total_memory * 100
        with contextlib.suppress(OSError):
            disk = os.statvfs(self.cwd)
            disk_used = (disk.f_blocks - disk.f_bfree) * disk.f_frsize
            disk_free = disk.f_bavail * disk.f_frsize
            if disk_used + disk_free:
                metrics["disk_usage_percentage"] = disk_used / (disk_used + disk_free) * 100
            metrics["disk_usage_megabytes"] = disk_used / MB
            metrics["disk_available_megabytes"] = disk_free / MB
        if start.network and current.network:
            metrics["network_receive_megabytes"] = (current.network[0] - start.network[0]) / MB
            metrics["network_transmit_megabytes"] = (current.network[1] - start.network[1]) / MB
        if current.tree:
            rss = sum(s.rss for s in current.tree)
            metrics["process_memory_rss_megabytes"] = rss / MB
            metrics["process_memory_vms_megabytes"] = sum(s.vms for s in current.tree) / MB
            if total_memory:
                metrics["process_memory_percentage"] = rss / total_memory * 100
            metrics["process_threads"] = float(sum(s.threads for s in current.tree))
            if previous.tree_ticks is not None and current.tree_ticks is not None:
                seconds = current.at - previous.at
                ticks = max(0, current.tree_ticks - previous.tree_ticks)
                if seconds > 0:
                    metrics["process_cpu_percentage"] = ticks / _TICKS / seconds * 100
        if self._gpu:
            metrics.update(self._gpu_metrics(self._gpu))
        return metrics

    def _gpu_metrics(self, nvidia_smi: str) -> dict[str, float]:
        try:
            done = subprocess.run(
                [nvidia_smi, f"--query-gpu={_NVIDIA_QUERY}", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=5,
            )
        except (OSError, subprocess.SubprocessError):
            return {}
        return parse_nvidia_smi(done.stdout) if done.returncode == 0 else {}

    def _log(self, metrics: dict[str, float], step: int) -> None:
        if self._refused >= _GIVE_UP_AFTER or not metrics:
            return
        timestamp = now_ms()
        points = [
            Metric(PREFIX + key, round(value, 1), timestamp, step) for key, value in metrics.items()
        ]
        try:
            self.store.log_batch(self.run_id, metrics=points)
        except Exception:
            self._refused += 1
            return
        self._refused = 0
        self.logged += 1
