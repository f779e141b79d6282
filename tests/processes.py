"""The processes a test started, found through /proc (Linux): every descendant of one process, whether
each is still alive. Tracked by PID: never by name, and never ``ray stop``, which stops every Ray on the
machine."""

from __future__ import annotations

from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command's name (which may hold spaces): state, ppid, ..."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def command_of(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` (children, theirs, ...), with its command line."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found[child] = command_of(child)
            todo.append(child)
    return found


def is_alive(pid: int) -> bool:
    """Running (a zombie has exited: only its parent's reaping is left)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"
