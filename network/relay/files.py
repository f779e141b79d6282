"""Task files on local disk: ``<root>/<task_id>/args.json`` and ``<root>/<task_id>/results/<index>``,
each written atomically (cluster.atomic_files), so a reader or a restart sees whole files or none. A
sampled task's first node may upload before the task's decision: those files go to
``<root>/<task_id>/early/<index>``, a set of their own, so that the result node's upload after a decision
that differs from them never has to replace a set in place.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from cluster.atomic_files import fsync_dir, write_file, write_indexed_files

# Read in the event loop up to this size (a page-cache copy of microseconds); larger files go to a thread
# so that one 10 MB download does not stall every other request.
INLINE_READ_BYTES = 256 * 1024


class FileStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def task_dir(self, task_id: int) -> Path:
        return self.root / str(task_id)

    def args_path(self, task_id: int) -> Path:
        return self.task_dir(task_id) / "args.json"

    def result_path(self, task_id: int, index: int, *, early: bool = False) -> Path:
        return self.task_dir(task_id) / ("early" if early else "results") / str(index)

    def write_args(self, task_id: int, data: bytes) -> None:
        write_file(self.args_path(task_id), data)

    def read_args(self, task_id: int) -> bytes:
        return self.args_path(task_id).read_bytes()

    def write_results(self, task_id: int, files: list[bytes]) -> bool:
        """All result files or none: they are staged in a directory that is renamed into place. False when
        a whole set was there already (an upload racing through another replica won): it is kept."""
        folder = self.task_dir(task_id) / "results"
        try:
            write_indexed_files(folder, files)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and folder.is_dir():
                return False
            raise
        return True

    def stage_results(self, task_id: int, *, early: bool = False) -> StagedResults:
        """A staging folder for result files that arrive one by one (``StagedResults``); ``early``: a
        sampled task's first node's, uploaded before the decision."""
        return StagedResults(self.task_dir(task_id) / ("early" if early else "results"))

    def read_result(self, task_id: int, index: int) -> bytes:
        return self.result_path(task_id, index).read_bytes()

    async def read_args_async(self, task_id: int) -> bytes:
        return await _read(self.args_path(task_id))

    async def read_result_async(self, task_id: int, index: int, *, early: bool = False) -> bytes:
        return await _read(self.result_path(task_id, index, early=early))

    def delete_task(self, task_id: int) -> None:
        shutil.rmtree(self.task_dir(task_id), ignore_errors=True)


class StagedResults:
    """Result files written as they arrive into a staging folder beside ``folder``, then renamed into
    place whole (``commit``) or removed (``discard``): a reader never sees part of a set."""

    def __init__(self, folder: Path):
        folder.parent.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        self.num_files = 0

    def open_next(self) -> BinaryIO:
        """The next file, ``0``, ``1``, ... in upload order."""
        path = self.staging / str(self.num_files)
        self.num_files += 1
        return path.open("xb")

    def read_all(self) -> list[bytes]:
        return [(self.staging / str(i)).read_bytes() for i in range(self.num_files)]

    def commit(self) -> bool:
        """Fsync the files and rename the set into place. False when a whole set was there already (an
        upload racing through another replica won): it is kept."""
        for index in range(self.num_files):
            with (self.staging / str(index)).open("rb") as written:
                os.fsync(written.fileno())
        fsync_dir(self.staging)
        try:
            os.replace(self.staging, self.folder)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and self.folder.is_dir():
                return False
            raise
        fsync_dir(self.folder.parent)
        return True

    def discard(self) -> None:
        """Remove what is left of the staging folder (nothing after a commit)."""
        shutil.rmtree(self.staging, ignore_errors=True)


async def _read(path: Path) -> bytes:
    if path.stat().st_size <= INLINE_READ_BYTES:
        return path.read_bytes()
    return await asyncio.to_thread(path.read_bytes)
