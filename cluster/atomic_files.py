"""Files written so that a reader, or a process after a crash, sees the whole of them or none of it.

A file goes to a temporary name in its directory, is fsynced, then renamed into place; a set of files is
staged in a temporary directory that is renamed into place whole. Used by the relay and the coordinator.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_indexed_files(folder: Path, files: list[bytes]) -> None:
    """``folder/0 .. folder/n-1``, all or none. ``folder`` must not exist yet."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        for index, data in enumerate(files):
            write_file(staging / str(index), data)
        os.replace(staging, folder)
        fsync_dir(folder.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_indexed_files(folder: Path) -> list[bytes]:
    count = sum(1 for p in folder.iterdir() if p.name.isdigit())
    return [(folder / str(i)).read_bytes() for i in range(count)]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
