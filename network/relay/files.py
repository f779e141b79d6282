"""Task files on local disk: ``<root>/<task_id>/args.json`` and ``<root>/<task_id>/results/<index>``,
each written atomically (cluster.atomic_files), so a reader or a restart sees whole files or none.
"""

from __future__ import annotations

import asyncio
import errno
import shutil
from pathlib import Path

from cluster.atomic_files import write_file, write_indexed_files

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

    def result_path(self, task_id: int, index: int) -> Path:
        return self.task_dir(task_id) / "results" / str(index)

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

    def read_result(self, task_id: int, index: int) -> bytes:
        return self.result_path(task_id, index).read_bytes()

    async def read_args_async(self, task_id: int) -> bytes:
        return await _read(self.args_path(task_id))

    async def read_result_async(self, task_id: int, index: int) -> bytes:
        return await _read(self.result_path(task_id, index))

    def delete_task(self, task_id: int) -> None:
        shutil.rmtree(self.task_dir(task_id), ignore_errors=True)


async def _read(path: Path) -> bytes:
    if path.stat().st_size <= INLINE_READ_BYTES:
        return path.read_bytes()
    return await asyncio.to_thread(path.read_bytes)
