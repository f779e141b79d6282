"""Model ids to files on disk: an existing local path, or a hub snapshot in a cache shared by the host.

Every worker of a host points at one ``cache_dir``; huggingface_hub's file locks make concurrent
downloads of the same repository safe. In offline mode nothing is fetched and a cache miss raises
``ModelNotAvailable`` (transient: another host, or a later prefetch, may have it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cluster.protocol.errors import ModelInvalid, ModelNotAvailable, TaskExecutionError

logger = logging.getLogger(__name__)

# A hub repository id: "name" or "owner/name", letters, digits, "-", "_", "." (no "..", no leading "/").
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")
_LOCAL_PREFIXES = ("/", "./", "../", "~", ".\\", "file://")

Downloader = Callable[..., str]


def is_local_reference(model_id: str) -> bool:
    """True when the id names a filesystem path rather than a hub repository."""
    return model_id.startswith(_LOCAL_PREFIXES) or Path(model_id).exists()


def _hub_download() -> Downloader:
    from huggingface_hub import snapshot_download

    return snapshot_download


class ModelStore:
    """Resolves model ids to local directories (or files), downloading into the shared cache if allowed."""

    def __init__(
        self, cache_dir: str | Path, *, is_offline: bool = False, download: Downloader | None = None
    ) -> None:
        self.cache_dir = Path(cache_dir).expanduser()
        self.is_offline = is_offline
        self._download = download

    def resolve(self, model_id: str) -> Path:
        """The local path of ``model_id``; raises ModelInvalid or ModelNotAvailable."""
        if is_local_reference(model_id):
            path = Path(model_id.removeprefix("file://")).expanduser()
            if not path.exists():
                raise ModelInvalid(f"local model path {model_id!r} does not exist on this node")
            return path
        if not _REPO_ID.fullmatch(model_id) or ".." in model_id:
            raise ModelInvalid(f"{model_id!r} is neither an existing local path nor a hub repository id")
        return Path(self._snapshot(model_id))

    def _snapshot(self, repo_id: str) -> str:
        download = self._download or _hub_download()
        try:
            return download(repo_id, cache_dir=str(self.cache_dir), local_files_only=self.is_offline)
        except Exception as exc:
            raise self._map_hub_error(exc, repo_id) from exc

    def _map_hub_error(self, exc: Exception, repo_id: str) -> TaskExecutionError:
        from huggingface_hub.errors import (
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        if isinstance(exc, GatedRepoError):
            return ModelInvalid(f"hub repository {repo_id!r} is gated; nodes cannot fetch it")
        if isinstance(exc, RepositoryNotFoundError | RevisionNotFoundError):
            return ModelInvalid(f"hub repository {repo_id!r} does not exist")
        if isinstance(exc, LocalEntryNotFoundError) and self.is_offline:
            return ModelNotAvailable(
                f"{repo_id!r} is not in the model cache {str(self.cache_dir)!r} and the store is offline; "
                "add it to rig.prefetch_models or turn offline mode off"
            )
        return ModelNotAvailable(
            f"hub repository {repo_id!r} could not be fetched: {type(exc).__name__}: {exc}"
        )

    def prefetch(self, model_ids: Iterable[str]) -> dict[str, Path | TaskExecutionError]:
        """Resolve every id now (at worker start), so that tasks find their models on disk."""
        outcome: dict[str, Path | TaskExecutionError] = {}
        for model_id in model_ids:
            try:
                outcome[model_id] = self.resolve(model_id)
                logger.info("[store] prefetched model=%s path=%s", model_id, outcome[model_id])
            except TaskExecutionError as exc:
                logger.warning("[store] prefetch failed model=%s code=%s", model_id, exc.code.value)
                outcome[model_id] = exc
        return outcome

    def describe(self) -> dict[str, Any]:
        return {"cache_dir": str(self.cache_dir), "is_offline": self.is_offline}
