"""Engine throughput: GPT tokens/s and tasks/hour, SD images/s, in three ways of running tasks:

  cold        a fresh engine per task: the model is loaded from disk every time (one container per GPU
              that reloads per task, as farms run today)
  warm        one engine, models kept in memory, one task at a time
  concurrent  several tasks at once on one device: ``--slots`` worker processes sharing the device
              (each its own engine and warm model); with ``--text-engine vllm`` the GPT tasks are batched
              in one engine instead

Every task's result bytes are checked against the warm run: throughput that changes a task's bytes
would break consensus, so the benchmark fails instead of reporting it.
Models are random-weight builds (tests' builders) with the shapes given on the command line;
``--qwen 0.5b`` uses Qwen2.5-0.5B shapes. Run: ``python -m benchmarks.engine_throughput --out FILE.md``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cluster.protocol.gpt import GPTTaskArgs
from cluster.protocol.sd import SDTaskArgs
from cluster.workers.engines import make_text_engine
from cluster.workers.engines.determinism import enable_deterministic_mode
from cluster.workers.engines.image_diffusers import DiffusersImageEngine
from cluster.workers.models.builders import TinyLMShape, build_qwen_shaped, build_tiny_causal_lm
from cluster.workers.models.cache import ModelCache
from cluster.workers.models.sd_builders import build_tiny_sd
from cluster.workers.models.store import ModelStore

BUDGET_BYTES = 64 * 1024**3


@dataclass(frozen=True, slots=True)
class Run:
    scenario: str
    kind: str  # "gpt" | "sd"
    num_tasks: int
    num_units: int  # completion tokens (gpt) or images (sd)
    wall_s: float
    results: tuple[bytes, ...]

    @property
    def units_per_s(self) -> float:
        return self.num_units / self.wall_s

    @property
    def tasks_per_hour(self) -> float:
        return self.num_tasks * 3600 / self.wall_s


def gpt_tasks(model: Path, num_tasks: int, max_new_tokens: int) -> list[GPTTaskArgs]:
    config = dict(max_new_tokens=max_new_tokens, do_sample=True, temperature=0.8)
    return [
        GPTTaskArgs.model_validate(
            dict(model=str(model), seed=seed, generation_config=config,
                 messages=[dict(role="user", content=f"Tell me story number {seed}.")])
        )
        for seed in range(num_tasks)
    ]  # fmt: skip


def sd_tasks(model: Path, num_tasks: int, side: int, steps: int, num_images: int) -> list[SDTaskArgs]:
    return [
        SDTaskArgs.model_validate(
            dict(base_model=str(model), prompt=f"a lighthouse at dusk, study {seed}",
                 task_config=dict(image_width=side, image_height=side, steps=steps, seed=seed,
                                  num_images=num_images, safety_checker=False))
        )
        for seed in range(num_tasks)
    ]  # fmt: skip


def make_engine(kind: str, text_engine: str, device: str, cache_dir: str) -> Any:
    store, cache = ModelStore(cache_dir, is_offline=True), ModelCache(BUDGET_BYTES)
    if kind == "gpt":
        return make_text_engine(text_engine, store, cache, device)
    return DiffusersImageEngine(store, cache, device)


def run_task(engine: Any, kind: str, task: Any) -> tuple[bytes, int]:
    result = engine.run(task)
    units = result.response.usage.completion_tokens if kind == "gpt" else len(result.images)
    return result.result, units


def measure(scenario: str, kind: str, tasks: list[Any], engine_for_task: Any) -> Run:
    results, num_units = [], 0
    start = time.perf_counter()
    for task in tasks:
        result, units = run_task(engine_for_task(), kind, task)
        results.append(result)
        num_units += units
    return Run(scenario, kind, len(tasks), num_units, time.perf_counter() - start, tuple(results))


# --- concurrent: worker processes sharing the device ---

_WORKER: dict[str, Any] = {}


def _init_worker(kind: str, text_engine: str, device: str, cache_dir: str, threads: int, warmup: Any) -> None:
    torch.set_num_threads(threads)
    enable_deterministic_mode()
    _WORKER["engine"] = make_engine(kind, text_engine, device, cache_dir)
    _WORKER["kind"] = kind
    run_task(_WORKER["engine"], kind, warmup)  # load the model before the clock starts


def _ping(_: int) -> None:
    time.sleep(0.5)


def _work(task: Any) -> tuple[bytes, int]:
    return run_task(_WORKER["engine"], _WORKER["kind"], task)


def measure_concurrent(kind: str, tasks: list[Any], options: argparse.Namespace, threads: int) -> Run:
    if kind == "gpt" and options.text_engine == "vllm":  # one engine batches the tasks itself
        engine = make_engine(kind, options.text_engine, options.device, options.cache_dir)
        run_task(engine, kind, tasks[0])
        start = time.perf_counter()
        outcomes = [(r.result, r.response.usage.completion_tokens) for r in engine.run_many(tasks)]
        wall = time.perf_counter() - start
    else:
        context = mp.get_context("spawn")
        init = (kind, options.text_engine, options.device, options.cache_dir, threads, tasks[0])
        with context.Pool(options.slots, initializer=_init_worker, initargs=init) as pool:
            pool.map(_ping, range(options.slots), chunksize=1)  # every worker up and warm
            start = time.perf_counter()
            outcomes = pool.map(_work, tasks, chunksize=1)
            wall = time.perf_counter() - start
    units, results = sum(u for _, u in outcomes), tuple(r for r, _ in outcomes)
    return Run(f"concurrent ({options.slots} slots)", kind, len(tasks), units, wall, results)


def build_models(workdir: Path, options: argparse.Namespace) -> tuple[Path, Path]:
    if options.qwen:
        lm = build_qwen_shaped(workdir / "lm", options.qwen, dtype=torch.float32)
    else:
        shape = TinyLMShape(
            hidden_size=options.hidden,
            intermediate_size=options.hidden * 8 // 3,
            num_hidden_layers=options.layers,
            num_attention_heads=options.hidden // 32,
            num_key_value_heads=2,
        )
        lm = build_tiny_causal_lm(workdir / "lm", shape=shape)
    return lm, build_tiny_sd(workdir / "sd")


def report(runs: list[Run], options: argparse.Namespace, threads: int) -> tuple[str, bool]:
    """The markdown table, and whether every scenario kept every task's bytes."""
    model = (
        f"Qwen2.5-{options.qwen} shapes"
        if options.qwen
        else f"tiny Llama hidden={options.hidden} layers={options.layers}"
    )
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"torch {torch.__version__}, device `{options.device}`, text engine `{options.text_engine}`.",
        f"GPT: {options.gpt_tasks} tasks, sampling, max_new_tokens={options.max_new_tokens}, model "
        f"{model} (random weights, fp32).",
        f"SD: {options.sd_tasks} tasks x {options.num_images} images, {options.side}x{options.side}, "
        f"{options.steps} steps, tiny SD 1.5 layout. Threads per process: {threads} (cold/warm), "
        f"{max(1, threads // options.slots)} per slot (concurrent).",
        "",
        "| scenario | GPT tokens/s | GPT tasks/hour | SD images/s | SD tasks/hour | bytes = warm run |",
        "|---|---|---|---|---|---|",
    ]
    warm = {r.kind: r.results for r in runs if r.scenario == "warm"}
    all_same = all(r.results == warm[r.kind] for r in runs)
    for scenario in dict.fromkeys(r.scenario for r in runs):
        gpt = next(r for r in runs if r.scenario == scenario and r.kind == "gpt")
        sd = next(r for r in runs if r.scenario == scenario and r.kind == "sd")
        same = gpt.results == warm["gpt"] and sd.results == warm["sd"]
        lines.append(
            f"| {scenario} | {gpt.units_per_s:.1f} | {gpt.tasks_per_hour:.0f} | {sd.units_per_s:.2f} | "
            f"{sd.tasks_per_hour:.0f} | {'yes' if same else 'NO'} |"
        )
    return "\n".join(lines) + "\n", all_same


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--text-engine", default="transformers", choices=["transformers", "vllm"])
    parser.add_argument("--gpt-tasks", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--qwen", choices=["0.5b", "1.5b"], default=None)
    parser.add_argument("--sd-tasks", type=int, default=4)
    parser.add_argument("--num-images", type=int, default=2)
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of the cold/warm runs (default: torch's); each slot gets threads/slots",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    options = parser.parse_args()

    enable_deterministic_mode()
    if options.threads:
        torch.set_num_threads(options.threads)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as workdir:
        options.cache_dir = str(Path(workdir) / "hub-cache")
        lm, sd = build_models(Path(workdir), options)
        tasks = {
            "gpt": gpt_tasks(lm, options.gpt_tasks, options.max_new_tokens),
            "sd": sd_tasks(sd, options.sd_tasks, options.side, options.steps, options.num_images),
        }
        runs = []
        for kind, kind_tasks in tasks.items():
            warm_engine = make_engine(kind, options.text_engine, options.device, options.cache_dir)
            run_task(warm_engine, kind, kind_tasks[0])  # load once, outside the clock

            def fresh_engine(kind: str = kind) -> Any:
                return make_engine(kind, options.text_engine, options.device, options.cache_dir)

            runs.append(measure("cold (load per task)", kind, kind_tasks, fresh_engine))
            runs.append(measure("warm", kind, kind_tasks, lambda e=warm_engine: e))
            runs.append(measure_concurrent(kind, kind_tasks, options, max(1, threads // options.slots)))
    table, all_same = report(runs, options, threads)
    print(table)
    if options.out:
        options.out.write_text(table)
    assert all_same, "a scenario changed some task's bytes: it would break GPT consensus"


if __name__ == "__main__":
    main()
