"""How many CPUs this process may use: one answer for every layer that sizes a pool."""

from __future__ import annotations

import os


def cpu_count() -> int:
    """CPUs this process may run on (a container's or taskset's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
