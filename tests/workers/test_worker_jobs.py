"""Both worker kinds run in this process (the classes the Ray actors wrap), on tiny models: a GPT and an SD
job each, with the task's arguments parsed exactly once between the uploaded JSON and the reply.

The batched worker's vLLM is the stand-in of ``tests/standins/vllm``, put in ``sys.modules`` for the test.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cluster.config import EngineConfig, RigConfig, VirtualGpus
from cluster.protocol.cards import CardModel
from cluster.protocol.gpt import GPTTaskArgs
from cluster.protocol.hashes import gpt_result
from cluster.protocol.phash import sd_result
from cluster.protocol.sd import SDTaskArgs
from cluster.protocol.task import TaskType, parse_task_args
from cluster.workers.messages import JobRequest
from tests.coordinator.scheduling.factories import gpt_args_json, sd_args_json

RUNTIME = "worker-jobs-test"
CARD = CardModel("Worker Jobs Virtual Card", 8, RUNTIME)
PARSERS = ("model_validate_json", "model_validate", "model_validate_strings")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from cluster.workers.models.builders import build_tiny_causal_lm
    from cluster.workers.models.sd_builders import build_tiny_sd

    root = tmp_path_factory.mktemp("worker-jobs")
    return {"lm": build_tiny_causal_lm(root / "tiny-lm"), "sd": build_tiny_sd(root / "tiny-sd")}


def rig(cache_dir: Path, mode: str) -> RigConfig:
    return RigConfig(
        name="worker-jobs", device="cpu", discover_gpus=False, places_per_gpu=2, gpu_sharing=mode,
        virtual_gpus=[VirtualGpus(card_name=CARD.gpu_name, vram_gb=CARD.vram_gb, count=1)],
        model_cache_dir=str(cache_dir), vram_budget_fraction=0.5,
    )  # fmt: skip


def make_worker(kind: str, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    if kind == "replicas":
        from cluster.workers.worker import GpuWorker as worker_class

        engine = EngineConfig(
            text="transformers", image="diffusers", deterministic=False, runtime_tag=RUNTIME
        )
    else:
        from tests.standins import vllm as standin
        from tests.standins.vllm import inputs as standin_inputs

        monkeypatch.setitem(sys.modules, "vllm", standin)
        monkeypatch.setitem(sys.modules, "vllm.inputs", standin_inputs)
        monkeypatch.setenv("VLLM_BATCH_INVARIANT", "1")  # what the worker sets for vLLM: undone afterwards
        from cluster.workers.batched import BatchedGpuWorker as worker_class

        engine = EngineConfig(text="vllm", image="diffusers", deterministic=False, runtime_tag=RUNTIME)
    return worker_class(CARD, 0, f"{kind}-worker", rig(cache_dir, kind), engine)


def count_parses(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every validation of a whole task's arguments, however it is reached, counted by model."""
    counts: Counter[str] = Counter()

    def counting(model: type, name: str) -> Callable[..., Any]:
        original = getattr(model, name)

        def parse(*args: Any, **kwargs: Any) -> Any:
            counts[model.__name__] += 1
            return original(*args, **kwargs)

        return parse

    for model in (GPTTaskArgs, SDTaskArgs):
        for name in PARSERS:
            monkeypatch.setattr(model, name, counting(model, name))
    return counts


@pytest.mark.parametrize("kind", ["replicas", "batched"])
def test_each_worker_kind_runs_a_job_whose_arguments_were_parsed_once(
    kind: str, models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = make_worker(kind, tmp_path / "hub", monkeypatch)
    counts = count_parses(monkeypatch)
    uploads = {
        TaskType.GPT: gpt_args_json(models["lm"], seed=3, do_sample=True, temperature=0.9),
        TaskType.SD: sd_args_json(models["sd"], num_images=1),
    }
    for task_type, args_json in uploads.items():
        before = sum(counts.values())
        # What the round driver does: the one parse, then the job goes to a worker.
        request = JobRequest(parse_task_args(task_type, args_json), time.time() + 120, task_id=1, round=0)
        reply = asyncio.run(worker.run_job(request))
        assert reply.error is None, reply.error
        assert sum(counts.values()) - before == 1, (task_type, counts)
        if task_type is TaskType.GPT:
            assert reply.result == gpt_result(reply.files[0])
            assert json.loads(reply.files[0])["model"] == str(models["lm"])
        else:
            assert reply.result == sd_result(list(reply.files))
        assert reply.worker_id == f"{kind}-worker" and reply.engine_s > 0
        assert request.model in reply.loaded_models  # warm now: the pool sends it the next job first
    assert counts == Counter({"GPTTaskArgs": 1, "SDTaskArgs": 1})


def test_a_job_past_its_deadline_comes_back_as_an_error_not_a_raise(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = make_worker("replicas", tmp_path / "hub", monkeypatch)
    args = parse_task_args(TaskType.GPT, gpt_args_json(models["lm"], max_new_tokens=64))
    reply = asyncio.run(worker.run_job(JobRequest(args, time.time() - 1)))
    assert reply.error is not None and not reply.error.is_task_error  # retried elsewhere, never reported
    assert reply.files == () and reply.result == b"" and worker.info().num_running == 0
