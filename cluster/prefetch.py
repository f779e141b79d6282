"""Model downloads at start-up, on the driver, where the operator watches: ``rig.prefetch_models`` are
fetched into the shared model cache before the workers start, one by one, each saying how it went.

A model that cannot be fetched is named with the cause and the options to change, and the start goes on:
the other models, and the card models that do not need it, still join. The workers' own prefetch then
finds the files in the cache (one host, or a cache volume the nodes share).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from cluster.config import RigConfig
from cluster.protocol.errors import TaskExecutionError
from cluster.workers.models.store import ModelStore

FIX = "rig.prefetch_models lists it; rig.model_cache_dir is where it goes; HF_HUB_OFFLINE=1 forbids downloads"


def prefetch_models(
    rig: RigConfig, *, is_offline: bool, say: Callable[[str], None] = print
) -> dict[str, Path | TaskExecutionError]:
    """Fetch every model of ``rig.prefetch_models``; each model's path, or the error that stopped it."""
    store = ModelStore(rig.model_cache_dir, is_offline=is_offline)
    outcome: dict[str, Path | TaskExecutionError] = {}
    num_models = len(rig.prefetch_models)
    for n, model_id in enumerate(rig.prefetch_models, start=1):
        say(f"[cluster] prefetch {n}/{num_models}: {model_id} into {store.cache_dir} ...")
        started_s = time.monotonic()
        try:
            outcome[model_id] = store.resolve(model_id)
        except TaskExecutionError as exc:
            outcome[model_id] = exc
            say(f"[cluster] prefetch FAILED {n}/{num_models}: model {model_id!r}: {exc} ({FIX})")
            continue
        say(f"[cluster] prefetch {n}/{num_models}: {model_id} ready in {time.monotonic() - started_s:.1f} s")
    failed = [model_id for model_id, got in outcome.items() if isinstance(got, TaskExecutionError)]
    if failed:
        say(f"[cluster] {len(failed)} of {num_models} model(s) not prefetched: {failed}; starting anyway")
    return outcome
