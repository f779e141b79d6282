"""The model store (ids to files, shared hub cache, offline mode, prefetch) and the warm-model LRU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from cluster.protocol.errors import ModelInvalid, ModelNotAvailable
from cluster.workers.models.cache import ModelCache, model_nbytes
from cluster.workers.models.store import ModelStore, is_local_reference

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_hub_cache(cache_dir: Path, repo_id: str) -> Path:
    """The on-disk layout huggingface_hub writes: models--owner--name/{refs/main, snapshots/<commit>/}."""
    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def test_local_paths_resolve_to_themselves(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "cache", is_offline=True)
    assert store.resolve(str(tmp_path)) == tmp_path
    assert is_local_reference("./models/x") and not is_local_reference("Qwen/Qwen2.5-0.5B-Instruct")


@pytest.mark.parametrize(
    "model_id", ["/no/such/model", "./missing-dir", "bad id with spaces", "a/b/c", "x/..y/../z"]
)
def test_unusable_ids_are_model_invalid(tmp_path: Path, model_id: str) -> None:
    with pytest.raises(ModelInvalid):
        ModelStore(tmp_path, is_offline=True).resolve(model_id)


def test_offline_cache_miss_is_model_not_available(tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailable, match="prefetch_models"):
        ModelStore(tmp_path, is_offline=True).resolve("helium-test/never-downloaded")


def test_offline_cache_hit_resolves_to_the_snapshot(tmp_path: Path) -> None:
    snapshot = make_hub_cache(tmp_path, "helium-test/tiny")
    assert ModelStore(tmp_path, is_offline=True).resolve("helium-test/tiny") == snapshot


def test_online_downloads_into_the_shared_cache_dir(tmp_path: Path) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def download(repo_id: str, **kwargs: Any) -> str:
        calls.append((repo_id, kwargs))
        return str(tmp_path / "snap")

    store = ModelStore(tmp_path / "shared", download=download)
    assert store.resolve("org/model") == tmp_path / "snap"
    assert calls == [("org/model", {"cache_dir": str(tmp_path / "shared"), "local_files_only": False})]


def test_hub_errors_are_mapped(tmp_path: Path) -> None:
    from huggingface_hub.errors import RepositoryNotFoundError

    def missing(repo_id: str, **kwargs: Any) -> str:
        exc = RepositoryNotFoundError.__new__(RepositoryNotFoundError)  # its __init__ wants an HTTP response
        Exception.__init__(exc, "404 Repository Not Found")
        raise exc

    def flaky(repo_id: str, **kwargs: Any) -> str:
        raise ConnectionError("timed out")

    with pytest.raises(ModelInvalid, match="does not exist"):
        ModelStore(tmp_path, download=missing).resolve("org/gone")
    with pytest.raises(ModelNotAvailable):
        ModelStore(tmp_path, download=flaky).resolve("org/model")


def test_prefetch_reports_each_model(tmp_path: Path) -> None:
    snapshot = make_hub_cache(tmp_path, "org/cached")
    outcome = ModelStore(tmp_path, is_offline=True).prefetch(["org/cached", "org/absent", str(tmp_path)])
    assert outcome["org/cached"] == snapshot and outcome[str(tmp_path)] == tmp_path
    assert isinstance(outcome["org/absent"], ModelNotAvailable)


# --- the warm-model cache ---


def linear(num_floats: int) -> torch.nn.Module:
    return torch.nn.Linear(num_floats, 1, bias=False)  # num_floats fp32 weights: 4 * num_floats bytes


def test_size_counts_parameters_and_buffers_once() -> None:
    module = linear(100)
    module.register_buffer("table", torch.zeros(25, dtype=torch.float64))
    assert model_nbytes(module) == 400 + 200
    shared = {"a": module, "b": module, "c": linear(10).to(torch.float16)}
    assert model_nbytes(shared) == 600 + 20


def test_least_recently_used_is_evicted_within_the_budget() -> None:
    cache = ModelCache(budget_bytes=1000)
    loads: list[str] = []

    def loader(name: str, num_floats: int):  # type: ignore[no-untyped-def]
        return lambda: loads.append(name) or linear(num_floats)

    cache.get_or_load("a", loader("a", 100))  # 400 bytes
    cache.get_or_load("b", loader("b", 100))  # 800
    cache.get_or_load("a", loader("a", 100))  # hit: a becomes the most recent
    cache.get_or_load("c", loader("c", 100))  # 1200 > 1000: b (least recent) goes
    assert cache.keys() == ["a", "c"] and cache.num_bytes == 800 and loads == ["a", "b", "c"]
    cache.get_or_load("d", loader("d", 200))  # 800 bytes: a and c both go
    assert cache.keys() == ["d"] and cache.num_evictions == 3


def test_a_model_larger_than_the_budget_is_served_but_not_kept() -> None:
    cache = ModelCache(budget_bytes=100)
    cache.get_or_load("small", lambda: linear(10))
    big = cache.get_or_load("big", lambda: linear(1000))
    assert isinstance(big, torch.nn.Module) and cache.keys() == [] and "big" not in cache


def test_size_hint_is_used_for_engines_that_own_their_memory() -> None:
    class Hinted:
        num_bytes_hint = 12345

    assert model_nbytes(Hinted()) == 12345
