"""The block states anvil writes to disk, and the removal of those a killed anvil left.

anvil keeps the states of its last 500 blocks in memory and, by default, moves older ones to
``~/.foundry/anvil/tmp/anvil-state-<time><random>/``, a folder it removes only on a clean exit: every
anvil the tests, the devnet and the benchmarks killed left one (372 MB a test run, 2.3 GB a long devnet,
a full 77 GB disk after a day). ``Anvil`` starts with ``--max-persisted-states 0`` so that it writes none;
``remove_stale_states`` removes what others left, and never a folder a running anvil may still use.

Which anvil owns a folder is written nowhere, so a folder is kept while any running anvil could own it:
one that may write states (not started with ``--max-persisted-states 0`` or ``--prune-history``), under
the same home (or one whose environment cannot be read), and started before the folder was last written.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)
STATE_PREFIX = "anvil-state-"


def state_root(home: str | None = None) -> Path:
    """Where anvil puts its state folders for this ``home`` (default: $HOME, as anvil reads it)."""
    return Path(home or os.environ.get("HOME") or Path.home()) / ".foundry" / "anvil" / "tmp"


def stale_states(root: Path | None = None) -> list[Path]:
    """The state folders under ``root`` that no running anvil can own."""
    root = root or state_root()
    if not root.is_dir() or not Path("/proc/self/stat").exists():  # without /proc owners cannot be known
        return []
    newest_allowed_s = min([time.time(), *_owner_start_times(root)])
    stale = []
    for folder in root.glob(f"{STATE_PREFIX}*"):
        try:
            if folder.stat().st_mtime < newest_allowed_s:
                stale.append(folder)
        except FileNotFoundError:
            continue
    return stale


def remove_stale_states(root: Path | None = None) -> list[Path]:
    """Remove the state folders under ``root`` that no running anvil can own; the folders removed."""
    removed = stale_states(root)
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    if removed:
        log.info("[anvil] removed state folders of stopped anvils count=%d", len(removed))
    return removed


def _owner_start_times(root: Path) -> list[float]:
    """The start times (Unix s) of the running anvils that may write state folders under ``root``."""
    starts = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and _may_own(proc, root):
            started = _start_time_s(proc)
            if started is not None:
                starts.append(started - 2.0)  # the boot time /proc gives is in whole seconds
    return starts


def _may_own(proc: Path, root: Path) -> bool:
    try:
        if (proc / "comm").read_text().strip() != "anvil" or _state(proc) in ("Z", "X"):
            return False  # not an anvil, or one that has exited (a zombie not reaped yet)
        args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:  # gone, or not ours to read
        return False
    if "--prune-history" in args or _option(args, "--max-persisted-states") == "0":
        return False  # writes no states
    cache_path = _option(args, "--cache-path")
    if cache_path is not None:
        return Path(cache_path).resolve() == root.resolve()
    try:
        environ = (proc / "environ").read_bytes().split(b"\0")
    except OSError:
        return True  # another user's anvil: its home is unknown, so it may be this one
    home = next((v[5:].decode(errors="replace") for v in environ if v.startswith(b"HOME=")), None)
    return home is None or state_root(home).resolve() == root.resolve()


def _option(args: list[str], name: str) -> str | None:
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _state(proc: Path) -> str:
    """The process state letter of /proc/<pid>/stat (R, S, Z, ...), read after the command name."""
    return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]


def _start_time_s(proc: Path) -> float | None:
    try:
        fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        lines = Path("/proc/stat").read_text().splitlines()
        boot_s = next(float(line.split()[1]) for line in lines if line.startswith("btime"))
    except (OSError, IndexError, StopIteration):
        return None
    # field 22 of /proc/<pid>/stat, counted after the command name's closing parenthesis: index 19
    return boot_s + int(fields[19]) / os.sysconf("SC_CLK_TCK")
