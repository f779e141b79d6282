"""Engine throughput: GPT tasks/hour and tokens/s, SD images/s, for the ways a worker can run tasks:

  load per task  a fresh engine per task, the model loaded from disk every time: the baseline, as a
                 Crynux-style node that starts a container per task runs
  warm           one engine, models kept in memory, one task at a time (one replica)
  replicas N     N processes sharing the device, each its own engine and warm model, each task alone
                 (rig.gpu_sharing=replicas with rig.places_per_gpu=N)
  batched        one vLLM async engine, all GPT tasks submitted at once, each its own request
                 (rig.gpu_sharing=batched); only where vLLM is installed (``--text-engine vllm``)

Every task's result bytes are checked against the warm run: throughput that changed a task's bytes would
break consensus, so the benchmark fails instead of reporting it. Each row gives its ratio to the
baseline; on CUDA the table ends with the HBM bound of GPT decoding (weights read once per step).
Models are random-weight builds (the tests' builders); ``--qwen 0.5b|1.5b`` uses Qwen2.5 shapes.
Run: ``python -m benchmarks.engine_throughput --out FILE.md`` (``--help`` for the options).
"""

from __future__ import annotations

import argparse
import asyncio
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
BASELINE = "load per task"
# Memory bandwidth by product name (public spec sheets), bytes/s: the GPT decoding bound's numerator.
HBM_BYTES_PER_S = {"H200": 4.8e12, "H100 80GB HBM3": 3.35e12, "H100 PCIe": 2.0e12, "H100 NVL": 3.9e12}


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


def gpt_tasks(model: Path, num_tasks: int, max_new_tokens: int, dtype: str) -> list[GPTTaskArgs]:
    config = dict(max_new_tokens=max_new_tokens, do_sample=True, temperature=0.8)
    return [
        GPTTaskArgs.model_validate(
            dict(model=str(model), seed=seed, generation_config=config, dtype=dtype,
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
    if kind == "gpt" and torch.cuda.is_available():
        torch.cuda.synchronize()
    return Run(scenario, kind, len(tasks), num_units, time.perf_counter() - start, tuple(results))


# --- replicas: worker processes sharing the device ---

_WORKER: dict[str, Any] = {}


def _init_worker(kind: str, text_engine: str, device: str, cache_dir: str, threads: int, warmup: Any) -> None:
    torch.set_num_threads(threads)
    enable_deterministic_mode()
    _WORKER["engine"] = make_engine(kind, text_engine, device, cache_dir)
    _WORKER["kind"] = kind
    run_task(_WORKER["engine"], kind, warmup)  # load the model before the clock starts


def _ready(_: int) -> int:
    return os.getpid()


def _work(task: Any) -> tuple[bytes, int]:
    return run_task(_WORKER["engine"], _WORKER["kind"], task)


def measure_replicas(kind: str, tasks: list[Any], options: argparse.Namespace, num_replicas: int) -> Run:
    threads = max(1, options.threads_used // num_replicas)
    context = mp.get_context("spawn")
    init = (kind, options.text_engine, options.device, options.cache_dir, threads, tasks[0])
    with context.Pool(num_replicas, initializer=_init_worker, initargs=init) as pool:
        # Every replica up and warm: the initializer ran in each process before it answers.
        while len(set(pool.map(_ready, range(4 * num_replicas), chunksize=1))) < num_replicas:
            pass
        start = time.perf_counter()
        outcomes = pool.map(_work, tasks, chunksize=1)
        wall = time.perf_counter() - start
    units, results = sum(u for _, u in outcomes), tuple(r for r, _ in outcomes)
    return Run(f"replicas {num_replicas}", kind, len(tasks), units, wall, results)


# --- batched: vLLM's async engine, every task its own request ---


def measure_batched(tasks: list[GPTTaskArgs], options: argparse.Namespace) -> Run:
    from cluster.workers.engines.text_vllm_async import AsyncVllmTextEngine

    store = ModelStore(options.cache_dir, is_offline=True)
    engine = AsyncVllmTextEngine(store, ModelCache(BUDGET_BYTES))

    async def all_at_once() -> tuple[float, list[Any]]:
        await engine.run(tasks[0], "warmup")
        start = time.perf_counter()
        results = await asyncio.gather(*(engine.run(t, f"task-{i}") for i, t in enumerate(tasks)))
        return time.perf_counter() - start, list(results)

    wall, results = asyncio.run(all_at_once())
    units = sum(r.response.usage.completion_tokens for r in results)
    return Run("batched", "gpt", len(tasks), units, wall, tuple(r.result for r in results))


def median(repeat: int, measure_once: Any) -> Run:
    """The run of median wall time out of ``repeat`` (a shared machine's noise is one-sided: slowdowns);
    every repetition's bytes must be the same."""
    runs = sorted((measure_once() for _ in range(repeat)), key=lambda run: run.wall_s)
    assert len({run.results for run in runs}) == 1, f"{runs[0].scenario}: bytes differ between repetitions"
    return runs[len(runs) // 2]


def build_models(workdir: Path, options: argparse.Namespace) -> tuple[Path, Path]:
    if options.qwen:
        lm = build_qwen_shaped(workdir / "lm", options.qwen, dtype=getattr(torch, options.gpt_dtype_torch))
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


def hbm_bound(lm: Path, options: argparse.Namespace) -> str:
    """GPT decoding's memory-bandwidth bound at batch 1: every step reads every weight once."""
    if not options.device.startswith("cuda"):
        return "HBM bound: not applicable on the CPU (decoding is compute- and thread-bound here)."
    name = torch.cuda.get_device_name(0)
    bandwidth = next((bw for key, bw in HBM_BYTES_PER_S.items() if key in name), None)
    weight_bytes = sum(f.stat().st_size for f in lm.glob("*.safetensors"))
    if bandwidth is None:
        return f"HBM bound: no bandwidth known for {name!r}; weights {weight_bytes / 1e9:.2f} GB."
    tokens_per_s = bandwidth / weight_bytes
    tasks_per_hour = tokens_per_s / options.max_new_tokens * 3600
    return (
        f"HBM bound ({name}, {bandwidth / 1e12:.2f} TB/s, weights {weight_bytes / 1e9:.2f} GB): batch 1 "
        f"<= {tokens_per_s:,.0f} tokens/s = {tasks_per_hour:,.0f} GPT tasks/hour of {options.max_new_tokens} "
        "tokens; a batch of B reads the weights once for all B (plus each one's KV cache)."
    )


def report(runs: list[Run], options: argparse.Namespace, bound: str) -> tuple[str, bool]:
    """The markdown table, and whether every scenario kept every task's bytes."""
    model = (
        f"Qwen2.5-{options.qwen} shapes"
        if options.qwen
        else f"tiny Llama hidden={options.hidden} layers={options.layers}"
    )
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"torch {torch.__version__}, device `{options.device}`"
        + (f" ({torch.cuda.get_device_name(0)})" if options.device.startswith("cuda") else "")
        + f", text engine `{options.text_engine}`.",
        f"GPT: {options.gpt_tasks} tasks, sampling, max_new_tokens={options.max_new_tokens}, model {model} "
        f"(random weights, {options.gpt_dtype}).",
        (
            "SD: not run (--skip-sd)."
            if options.skip_sd
            else f"SD: {options.sd_tasks} tasks x {options.num_images} images, "
            f"{options.side}x{options.side}, {options.steps} steps, tiny SD 1.5 layout."
        )
        + f" Torch threads: {options.threads_used} "
        f"(load per task, warm), split evenly between replicas. Median of {options.repeat} run(s) each.",
        "",
        "| scenario | GPT tasks/hour | x baseline | GPT tokens/s | SD images/s | x baseline | bytes = warm |",
        "|---|---|---|---|---|---|---|",
    ]
    warm = {r.kind: r.results for r in runs if r.scenario == "warm"}
    base = {r.kind: r for r in runs if r.scenario == BASELINE}
    all_same = all(r.results == warm[r.kind] for r in runs)
    for scenario in dict.fromkeys(r.scenario for r in runs):
        gpt = next((r for r in runs if r.scenario == scenario and r.kind == "gpt"), None)
        sd = next((r for r in runs if r.scenario == scenario and r.kind == "sd"), None)
        same = all(r.results == warm[r.kind] for r in (gpt, sd) if r is not None)
        gpt_cells = "— | — | —"
        if gpt is not None:
            ratio = gpt.tasks_per_hour / base["gpt"].tasks_per_hour
            gpt_cells = f"{gpt.tasks_per_hour:,.0f} | {ratio:.2f} | {gpt.units_per_s:.1f}"
        sd_cells = f"{sd.units_per_s:.2f} | {sd.units_per_s / base['sd'].units_per_s:.2f}" if sd else "— | —"
        lines.append(f"| {scenario} | {gpt_cells} | {sd_cells} | {'yes' if same else 'NO'} |")
    if options.text_engine != "vllm":
        lines.append("| batched | vLLM not used (`--text-engine vllm` where it is installed) | | | | | |")
    lines += ["", bound]
    return "\n".join(lines) + "\n", all_same


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--text-engine", default="transformers", choices=["transformers", "vllm"])
    parser.add_argument("--gpt-tasks", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--gpt-dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--qwen", choices=["0.5b", "1.5b"], default=None)
    parser.add_argument("--sd-tasks", type=int, default=4)
    parser.add_argument("--num-images", type=int, default=2)
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--replicas", type=int, nargs="*", default=[2, 4], help="replica counts to measure")
    parser.add_argument("--skip-sd", action="store_true", help="GPT only")
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario; the median is reported")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    options = parser.parse_args()
    options.gpt_dtype_torch = options.gpt_dtype
    return options


def measure_kind(kind: str, tasks: list[Any], options: argparse.Namespace) -> list[Run]:
    """Every scenario for one kind of task, each the median of ``options.repeat`` runs."""
    warm = {"engine": make_engine(kind, options.text_engine, options.device, options.cache_dir)}
    run_task(warm["engine"], kind, tasks[0])  # load once, outside the clock

    def fresh_engine() -> Any:
        return make_engine(kind, options.text_engine, options.device, options.cache_dir)

    repeat = options.repeat
    runs = [
        median(repeat, lambda: measure(BASELINE, kind, tasks, fresh_engine)),
        median(repeat, lambda: measure("warm", kind, tasks, lambda: warm["engine"])),
    ]
    warm.clear()  # its memory back before the replicas load theirs
    for n in options.replicas:
        runs.append(median(repeat, lambda n=n: measure_replicas(kind, tasks, options, n)))
    if kind == "gpt" and options.text_engine == "vllm":
        runs.append(median(repeat, lambda: measure_batched(tasks, options)))
    return runs


def main() -> None:
    options = parse_options()
    enable_deterministic_mode()
    if options.threads:
        torch.set_num_threads(options.threads)
    options.threads_used = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as workdir:
        options.cache_dir = str(Path(workdir) / "hub-cache")
        lm, sd = build_models(Path(workdir), options)
        tasks = {"gpt": gpt_tasks(lm, options.gpt_tasks, options.max_new_tokens, options.gpt_dtype)}
        if not options.skip_sd:
            tasks["sd"] = sd_tasks(sd, options.sd_tasks, options.side, options.steps, options.num_images)
        runs = [run for kind, kind_tasks in tasks.items() for run in measure_kind(kind, kind_tasks, options)]
        bound = hbm_bound(lm, options)
    table, all_same = report(runs, options, bound)
    print(table)
    if options.out:
        options.out.write_text(table)
    assert all_same, "a scenario changed some task's bytes: it would break GPT consensus"


if __name__ == "__main__":
    main()
