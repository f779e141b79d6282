"""What a server process has used so far, read from /proc: counters that only grow, so a test compares
them before and after a request instead of sampling while it runs."""

from __future__ import annotations

from pathlib import Path


def peak_rss_bytes(pid: int) -> int:
    """The most resident memory the process has held (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def bytes_written(pid: int) -> int:
    """Every byte the process passed to write(2) and its kind, to files (temporary ones too) and sockets."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError(f"no wchar for process {pid}")
