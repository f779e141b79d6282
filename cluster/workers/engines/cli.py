"""Run one task locally and print its on-chain result: ``python -m cluster.workers.engines.cli``.

For operators checking a task by hand and for the cross-process determinism tests. Writes the result
files (0.json, or 0.png ... n-1.png) to ``--out`` and prints ``result=<hex>`` on stdout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cluster.protocol.errors import TaskExecutionError
from cluster.protocol.task import TaskType, parse_task_args
from cluster.workers.engines.base import ImageResult, TextResult
from cluster.workers.engines.determinism import enable_deterministic_mode
from cluster.workers.models.cache import ModelCache
from cluster.workers.models.store import ModelStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("task_type", choices=["gpt", "sd"])
    parser.add_argument("args_file", type=Path, help="the task-arguments JSON exactly as uploaded")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "helium" / "models")
    parser.add_argument("--offline", action="store_true")
    options = parser.parse_args(argv)

    enable_deterministic_mode()
    store = ModelStore(options.cache_dir, is_offline=options.offline)
    cache = ModelCache(budget_bytes=64 * 1024**3)
    task_type = TaskType.GPT if options.task_type == "gpt" else TaskType.SD
    try:
        names, files, result = _run(task_type, options, store, cache)
    except TaskExecutionError as exc:
        sys.stdout.write(f"error={exc.code.value} action={exc.action.value} message={exc.message}\n")
        return 2
    options.out.mkdir(parents=True, exist_ok=True)
    for name, data in zip(names, files, strict=True):
        (options.out / name).write_bytes(data)
    sys.stdout.write(f"result={result.hex()}\n")
    return 0


def _run(
    task_type: TaskType, options: argparse.Namespace, store: ModelStore, cache: ModelCache
) -> tuple[list[str], list[bytes], bytes]:
    args = parse_task_args(task_type, options.args_file.read_bytes())
    result: TextResult | ImageResult
    if task_type is TaskType.GPT:
        from cluster.workers.engines.text_transformers import TransformersTextEngine

        result = TransformersTextEngine(store, cache, options.device).run(args)  # type: ignore[arg-type]
        names = ["0.json"]
    else:
        from cluster.workers.engines.image_diffusers import DiffusersImageEngine

        result = DiffusersImageEngine(store, cache, options.device).run(args)  # type: ignore[arg-type]
        names = [f"{i}.png" for i in range(len(result.files))]
    return names, result.files, result.result


if __name__ == "__main__":
    sys.exit(main())
