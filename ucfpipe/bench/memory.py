"""A benchmark process's resident memory: the one reading that `bench extract` and `bench long` report."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def memory_mib() -> dict:
    """This process's resident memory now (VmRSS) and at its peak (VmHWM), in MiB. On Linux from /proc, of its
    own address space: getrusage's ru_maxrss survives exec, so a child started by a parent that holds TensorFlow
    (1 GiB) would report at least the parent's size whatever it used itself. Elsewhere the peak alone, from
    getrusage."""
    values = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    if "VmHWM" not in values:
        values["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 2**20)
    return values


def peak_rss_mib() -> float:
    return memory_mib()["VmHWM"]
