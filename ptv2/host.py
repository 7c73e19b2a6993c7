"""What the host allows: whether its int8 products saturate, and how many threads its CPU quota pays for (read by
the serving sessions and the training loop). Standard library only (the registered model carries this code)."""
from __future__ import annotations

import os
import platform
import re
from pathlib import Path, PurePosixPath
from typing import Any

from ptv2.errors import ConfigError

CGROUP_ROOT = Path("/sys/fs/cgroup")


def saturating_int8(machine: str | None = None, cpuinfo: str | None = None) -> bool:
    """Whether this CPU's int8 products saturate: x86 without VNNI (or AMX) sums neighbouring uint8 x int8
    products in 16 bits (PMADDUBSW) and clamps them, so the int8 encoder would answer otherwise than where the
    export checked it. Such hosts get onnxruntime's exact uint8 x uint8 products (``session.x64quantprecision``):
    the same answers, slower. Where the flags cannot be read (no /proc/cpuinfo), an x86 CPU counts as one."""
    if (machine or platform.machine()).lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False  # ARM's int8 dot products sum in 32 bits
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return True
    return re.search(r"\b(avx512_vnni|avx_vnni|amx_int8)\b", cpuinfo) is None


def cpu_quota(cgroups: str | None = None, root: Path = CGROUP_ROOT) -> float | None:
    """The CPUs this process's cgroups pay for per period (`docker run --cpus`, a Kubernetes CPU limit): the
    tightest quota on its cgroup's path up to the root (v2 ``cpu.max``; v1 ``cpu.cfs_quota_us`` over
    ``cpu.cfs_period_us``). None without one, or where cgroups cannot be read (not Linux).
    ``cgroups``: /proc/self/cgroup's text."""
    if cgroups is None:
        try:
            cgroups = Path("/proc/self/cgroup").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    quotas = []
    for line in cgroups.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and not controllers:  # v2: one tree
            base = root
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's own mount ("cpu" or "cpu,cpuacct")
            base = next((b for b in (root / controllers, root / "cpu") if b.is_dir()), None)
            if base is None:
                continue
        else:
            continue
        here = PurePosixPath(path if path.startswith("/") else "/" + path)
        for folder in (here, *here.parents):  # in a container the path may be the host's; its root is the container
            q = _quota(base / str(folder).lstrip("/"), v2=hierarchy == "0" and not controllers)
            if q is not None:
                quotas.append(q)
    return min(quotas) if quotas else None


def _quota(folder: Path, v2: bool) -> float | None:
    try:
        if v2:
            limit, period = (folder / "cpu.max").read_text().split()[:2]
            return None if limit == "max" else int(limit) / int(period)
        limit = int((folder / "cpu.cfs_quota_us").read_text())
        return None if limit <= 0 else limit / int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError, ZeroDivisionError):
        return None


_READ: Any = object()  # read this host's


def affinity_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: taskset, a container's cpuset)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def quota_threads(quota: float | None = _READ, cpus: int | None = None) -> int | None:
    """The whole CPUs a CPU quota pays for (at least 1) where that is fewer than the CPUs this process may use (its
    affinity mask, which thread pools already follow); None otherwise. onnxruntime and torch size their pools to
    the cores, blind to quotas: a pool of a many-core host's size under `--cpus 2` is throttled."""
    quota = cpu_quota() if quota is _READ else quota
    cpus = affinity_cpus() if cpus is None else cpus
    if quota is None or quota >= cpus:
        return None
    return max(1, int(quota))


def intra_op_threads(quota: float | None = _READ, cpus: int | None = None) -> int | None:
    """onnxruntime's intra-op pool for a session here: ``quota_threads``, unless $ORT_INTRA_OP_NUM_THREADS is set
    (onnxruntime reads it itself); None: onnxruntime's own choice."""
    if own := os.environ.get("ORT_INTRA_OP_NUM_THREADS", "").strip():
        if not own.isdigit():  # onnxruntime's own answer was a C++ parse error's traceback at load
            raise ConfigError(f"ORT_INTRA_OP_NUM_THREADS = {own!r} is not a thread count: set a whole number (0: "
                              f"onnxruntime's own choice), or unset it")
        return None
    return quota_threads(quota, cpus)
