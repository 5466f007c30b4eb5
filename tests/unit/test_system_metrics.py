"""The system-metrics sampler's /proc and nvidia-smi parsing, and its thread against a store
that refuses (it never fails the run)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from reprorun.backends import system_metrics as sm
from reprorun.tracking.entities import SystemTags

PAGE = os.sysconf("SC_PAGE_SIZE")


def stat_line(pid: int, ppid: int, session: int, state: str = "S", name: str = "cmd") -> bytes:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime priority nice threads itreal starttime vsize rss ...
    return (
        f"{pid} ({name}) {state} {ppid} {session} {session} 0 -1 4194560 10 0 0 0 "
        f"50 25 3 2 20 0 4 0 1000 2000000 300 18446744073709551615 0 0 0\n"
    ).encode()


def test_parse_stat_reads_the_fields_after_the_command_name() -> None:
    stat = sm.parse_stat(stat_line(1234, 1, 1234, name="my (odd) cmd) x"))
    assert stat == sm.ProcStat(
        pid=1234,
        ppid=1,
        session=1234,
        state="S",
        cpu_ticks=50 + 25 + 3 + 2,
        threads=4,
        vms=2000000,
        rss=300 * PAGE,
    )


def test_parse_stat_of_this_process() -> None:
    stat = sm.parse_stat(Path("/proc/self/stat").read_bytes())
    assert (stat.pid, stat.ppid, stat.session) == (os.getpid(), os.getppid(), os.getsid(0))
    assert stat.threads >= 1 and stat.rss > 1_000_000 and stat.vms >= stat.rss


def test_parse_hwm() -> None:
    status = b"Name:\tpython\nVmPeak:\t  20000 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 1000 kB\n"
    assert sm.parse_hwm(status) == 12345 * 1024
    assert sm.parse_hwm(b"Name:\tkthreadd\n") == 0  # kernel threads have none


def test_parse_cpu_counts_iowait_as_idle() -> None:
    text = b"cpu  100 5 50 1000 20 1 2 3 7 0\ncpu0 50 2 25 500 10 0 1 1 3 0\n"
    busy, total = sm.parse_cpu(text)
    assert total == 100 + 5 + 50 + 1000 + 20 + 1 + 2 + 3  # guest is inside user
    assert busy == total - 1000 - 20


def test_parse_meminfo_as_psutil() -> None:
    text = (
        b"MemTotal:       16000000 kB\nMemFree:         2000000 kB\n"
        b"MemAvailable:    9000000 kB\nBuffers:          500000 kB\n"
        b"Cached:          6000000 kB\nSwapCached:            0 kB\n"
        b"SReclaimable:     400000 kB\n"
    )
    used, total = sm.parse_meminfo(text)
    assert total == 16000000 * 1024
    assert used == (16000000 - 2000000 - 500000 - 6000000 - 400000) * 1024


def test_parse_net_dev_sums_every_interface() -> None:
    text = (
        b"Inter-|   Receive                                                |  Transmit\n"
        b" face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets "
        b"errs drop fifo colls carrier compressed\n"
        b"    lo:  1000      10    0    0    0     0          0         0     1000      10 "
        b"   0    0    0     0       0          0\n"
        b"  eth0:2000000   1500    0    0    0     0          0         0   500000     900 "
        b"   0    0    0     0       0          0\n"
    )
    assert sm.parse_net_dev(text) == (2001000, 501000)


def test_parse_nvidia_smi_csv() -> None:
    # nvidia-smi --query-gpu=index,utilization.gpu,memory.used,memory.total,power.draw,
    # power.limit --format=csv,noheader,nounits, on two GPUs (one without power readings)
    text = "0, 87, 10240, 40960, 250.5, 400.00\n1, 0, 0, 16384, [N/A], [N/A]\n"
    assert sm.parse_nvidia_smi(text) == {
        "gpu_0_utilization_percentage": 87.0,
        "gpu_0_memory_usage_megabytes": 10240 * 2**20 / 1e6,
        "gpu_0_memory_usage_percentage": 25.0,
        "gpu_0_power_usage_watts": 250.5,
        "gpu_0_power_usage_percentage": 250.5 / 400 * 100,
        "gpu_1_utilization_percentage": 0.0,
        "gpu_1_memory_usage_megabytes": 0.0,
        "gpu_1_memory_usage_percentage": 0.0,
    }
    assert sm.parse_nvidia_smi("No devices were found\n") == {}


def test_process_tree_follows_descendants_and_the_session(tmp_path: Path) -> None:
    processes = {
        100: stat_line(100, 50, 100),  # the command
        101: stat_line(101, 100, 100),  # its child
        102: stat_line(102, 101, 102),  # a grandchild in a session of its own
        103: stat_line(103, 1, 100),  # left behind, adopted by init
        104: stat_line(104, 100, 100, state="Z"),  # ended, not reaped
        200: stat_line(200, 50, 200),  # another command of the same parent
    }
    for pid, line in processes.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_bytes(line)
    (tmp_path / "self").mkdir()
    (tmp_path / "300").mkdir()  # gone while read: no stat
    assert sorted(s.pid for s in sm.process_tree(100, tmp_path)) == [100, 101, 102, 103]


def test_process_tree_of_a_real_command() -> None:
    proc = subprocess.Popen(["bash", "-c", "sleep 5 & sleep 5 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while len(tree := sm.process_tree(proc.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(tree) == 3 and {s.session for s in tree} == {proc.pid}
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


class RefusingStore:
    def __init__(self) -> None:
        self.calls = 0

    def log_batch(self, run_id: str, **kwargs: object) -> None:
        self.calls += 1
        raise OSError("disk full")


def test_a_store_that_refuses_is_asked_three_times_and_the_peak_is_kept(
    tmp_path: Path,
) -> None:
    store = RefusingStore()
    proc = subprocess.Popen(["sleep", "5"], start_new_session=True)
    try:
        sampler = sm.SystemMetrics(store, "r" * 32, proc.pid, 0.05, tmp_path)  # type: ignore[arg-type]
        sampler.start()
        time.sleep(1.0)  # room for more than three batches
        tags = sampler.stop()
    finally:
        proc.kill()
        proc.wait()
    assert store.calls == 3
    assert 0.1 < float(tags[SystemTags.PEAK_MEMORY]) < 100  # sleep's resident memory, in MB
    assert not sampler._thread.is_alive()


@pytest.mark.parametrize("value", ["abc", "0", "-1"])
def test_a_bad_interval_setting_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from reprorun.config import seconds
    from reprorun.errors import UserInputError

    monkeypatch.setenv("REPRORUN_SYSTEM_METRICS_INTERVAL", value)
    with pytest.raises(UserInputError, match="REPRORUN_SYSTEM_METRICS_INTERVAL"):
        seconds("system_metrics_interval")
