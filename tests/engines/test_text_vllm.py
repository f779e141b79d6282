"""The vLLM engine's argument mapping and response building, on the CPU, against stand-ins of vLLM's
documented classes (``SamplingParams``, ``TokensPrompt``, and ``RequestOutput``/``CompletionOutput`` from
the stand-in package ``tests/standins/vllm``, which the batched worker's tests run as ``vllm``)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from transformers import AutoTokenizer

from cluster.protocol.errors import ArgumentsInvalid, ModelInvalid, TaskExecutionError
from cluster.protocol.gpt import GPTGenerationConfig
from cluster.workers.engines.deadline import JobPastDeadline, job_deadline
from cluster.workers.engines.text_request import build_prompt_ids, merge_generation_config
from cluster.workers.engines.text_vllm import VllmTextEngine, sampling_params_kwargs
from cluster.workers.engines.text_vllm_async import AsyncVllmTextEngine
from cluster.workers.models.cache import ModelCache
from tests.engines.factories import gpt_args, greedy_args
from tests.standins.vllm.outputs import CompletionOutput, RequestOutput


@dataclass
class SamplingParams:  # records the keyword arguments it was built with
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, **kwargs: Any) -> SamplingParams:
        return cls(kwargs)


class FakeEngine:
    """``LLM.llm_engine``: records each ``add_request`` and each ``step``; a step finishes every request
    with canned completions (token 2 is the tiny model's EOS)."""

    def __init__(self) -> None:
        self.added: list[tuple[str, dict[str, Any], SamplingParams]] = []
        self.num_steps_at_add: list[int] = []
        self.aborted: list[str] = []
        self.num_steps = 0
        self._unfinished: list[tuple[str, dict[str, Any], SamplingParams]] = []

    def add_request(self, request_id: str, prompt: dict[str, Any], params: SamplingParams) -> None:
        self.added.append((request_id, prompt, params))
        self.num_steps_at_add.append(self.num_steps)
        self._unfinished.append((request_id, prompt, params))

    def has_unfinished_requests(self) -> bool:
        return bool(self._unfinished)

    def abort_request(self, request_ids: list[str]) -> None:
        self.aborted += request_ids
        self._unfinished = [r for r in self._unfinished if r[0] not in request_ids]

    def step(self) -> list[Any]:
        self.num_steps += 1
        outputs = []
        for request_id, prompt, sp in self._unfinished:
            completions = [
                CompletionOutput(i, "", [40 + i, 41, 2], finish_reason="stop") for i in range(sp.kwargs["n"])
            ]
            outputs.append(RequestOutput(request_id, None, prompt["prompt_token_ids"], None, completions))
        self._unfinished = []
        return outputs


class FakeLLM:
    """``vllm.LLM``: its engine is a ``FakeEngine``; every instance is kept for the test to look at."""

    instances: list[FakeLLM] = []

    def __init__(self, **kwargs: Any) -> None:
        self.init_kwargs = kwargs
        self.llm_engine = FakeEngine()
        FakeLLM.instances.append(self)


@pytest.fixture
def fake_api() -> SimpleNamespace:
    FakeLLM.instances.clear()
    return SimpleNamespace(
        LLM=FakeLLM, SamplingParams=SamplingParams.make, TokensPrompt=dict, version="0.0-fake"
    )


def test_sampling_params_keep_transformers_meaning() -> None:
    params = merge_generation_config(
        {"do_sample": True, "temperature": 0.7},
        GPTGenerationConfig(
            top_k=0, num_return_sequences=3, max_new_tokens=9, stop_strings=["###"], min_p=0.1
        ),
    )
    assert sampling_params_kwargs(params, seed=123) == {
        "n": 3,
        "max_tokens": 9,
        "temperature": 0.7,
        "top_k": -1,
        "top_p": 1.0,
        "min_p": 0.1,
        "repetition_penalty": 1.0,
        "stop": ["###"],
        "include_stop_str_in_output": False,
        "skip_special_tokens": True,
        "seed": 123,
    }


def test_greedy_maps_to_zero_temperature() -> None:
    kwargs = sampling_params_kwargs(
        merge_generation_config({"temperature": 0.7}, GPTGenerationConfig(top_k=8)), 0
    )
    assert kwargs["temperature"] == 0.0 and kwargs["top_k"] == 8 and kwargs["stop"] is None


@pytest.mark.parametrize("config", [GPTGenerationConfig(num_beams=2), GPTGenerationConfig(typical_p=0.5)])
def test_what_vllm_cannot_serve_is_a_task_error(config: GPTGenerationConfig) -> None:
    with pytest.raises(ArgumentsInvalid):
        sampling_params_kwargs(merge_generation_config({}, config), 0)


def test_engine_batches_tasks_and_builds_the_response(fake_api, offline_store, tiny_lm_dir: Path) -> None:  # type: ignore[no-untyped-def]
    engine = VllmTextEngine(offline_store, ModelCache(10**9), vllm_api=fake_api)
    tasks = [
        gpt_args(tiny_lm_dir, seed=4, do_sample=True, num_return_sequences=2),
        greedy_args(tiny_lm_dir, seed=8),
        greedy_args(tiny_lm_dir, num_beams=2),
    ]
    results = engine.run_many(tasks)
    (llm,) = FakeLLM.instances
    assert llm.init_kwargs["model"] == str(tiny_lm_dir) and llm.init_kwargs["quantization"] is None
    engine_ = llm.llm_engine  # the two valid tasks went to vLLM together, before its first step
    assert engine_.num_steps_at_add == [0, 0] and engine_.num_steps == 1
    prompts = [prompt for _, prompt, _ in engine_.added]
    params = [sp for _, _, sp in engine_.added]
    assert [p.kwargs["seed"] for p in params] == [4, 8] and [p.kwargs["n"] for p in params] == [2, 1]
    expected_ids = build_prompt_ids(AutoTokenizer.from_pretrained(tiny_lm_dir), tasks[0])
    assert prompts[0] == {"prompt_token_ids": expected_ids}
    assert isinstance(results[2], ArgumentsInvalid)
    body = json.loads(results[0].files[0])  # type: ignore[union-attr]
    assert [c["finish_reason"] for c in body["choices"]] == ["stop", "stop"]  # token 2 is the model's EOS
    assert body["usage"] == {
        "prompt_tokens": len(expected_ids),
        "completion_tokens": 6,
        "total_tokens": len(expected_ids) + 6,
    }
    assert engine.runtime_tag() == "vllm-0.0-fake-batch-invariant"


def test_vllm_stop_reason_is_kept_when_no_eos_was_appended(
    fake_api, offline_store, tiny_lm_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    class StopTokenEngine(FakeEngine):
        def step(self):  # type: ignore[no-untyped-def]
            outputs = super().step()
            outputs[0].outputs[0].token_ids = [40, 41]  # stopped on a stop token id vLLM did not append
            return outputs

    class StopTokenLLM(FakeLLM):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.llm_engine = StopTokenEngine()

    fake_api.LLM = StopTokenLLM
    engine = VllmTextEngine(offline_store, ModelCache(10**9), vllm_api=fake_api)
    choice = engine.run(greedy_args(tiny_lm_dir)).response.choices[0]
    assert choice.finish_reason == "stop"


def test_eight_bit_quantization_is_refused(fake_api, offline_store, tiny_lm_dir: Path) -> None:  # type: ignore[no-untyped-def]
    engine = VllmTextEngine(offline_store, ModelCache(10**9), vllm_api=fake_api)
    with pytest.raises(ModelInvalid):
        engine.run(greedy_args(tiny_lm_dir).model_copy(update={"quantize_bits": 8}))


def test_a_failing_step_fails_every_task_of_the_batch(fake_api, offline_store, tiny_lm_dir: Path) -> None:  # type: ignore[no-untyped-def]
    class BrokenEngine(FakeEngine):
        def step(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    class BrokenLLM(FakeLLM):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.llm_engine = BrokenEngine()

    fake_api.LLM = BrokenLLM
    engine = VllmTextEngine(offline_store, ModelCache(10**9), vllm_api=fake_api)
    results = engine.run_many([greedy_args(tiny_lm_dir), greedy_args(tiny_lm_dir, seed=3)])
    assert all(isinstance(r, TaskExecutionError) and r.code.value == "execution_error" for r in results)
    (llm,) = FakeLLM.instances
    assert sorted(llm.llm_engine.aborted) == sorted(r for r, _, _ in llm.llm_engine.added)  # batch freed


# --- the async engine (batched mode) against the stand-in of vLLM's AsyncLLMEngine ---


@pytest.fixture
def standin_api() -> SimpleNamespace:
    from tests.standins import vllm as standin
    from tests.standins.vllm.inputs import TokensPrompt

    return SimpleNamespace(
        LLM=standin.LLM, AsyncLLMEngine=standin.AsyncLLMEngine, AsyncEngineArgs=standin.AsyncEngineArgs,
        SamplingParams=standin.SamplingParams, TokensPrompt=TokensPrompt, version=standin.__version__,
    )  # fmt: skip


@pytest.fixture
def async_engine(offline_store, standin_api):  # type: ignore[no-untyped-def]
    return AsyncVllmTextEngine(offline_store, ModelCache(10**9), tensor_parallel_size=2, vllm_api=standin_api)


@pytest.fixture
def offline_engine(offline_store, standin_api):  # type: ignore[no-untyped-def]
    return VllmTextEngine(offline_store, ModelCache(10**9), vllm_api=standin_api)


def test_async_engine_batches_concurrent_tasks_without_changing_their_bytes(
    async_engine, tiny_lm_dir
) -> None:  # type: ignore[no-untyped-def]
    tasks = [
        gpt_args(tiny_lm_dir, seed=s, do_sample=True, temperature=0.9, num_return_sequences=2)
        for s in (1, 2, 3)
    ]

    async def scenario() -> tuple[list[bytes], list[bytes], Any]:
        alone = [(await async_engine.run(t, f"alone-{i}")).files[0] for i, t in enumerate(tasks)]
        llm = async_engine._model(tasks[0]).llm
        llm.min_batch = len(tasks)  # the next batch starts once every request waits
        together = await asyncio.gather(*(async_engine.run(t, f"together-{i}") for i, t in enumerate(tasks)))
        return alone, [r.files[0] for r in together], llm

    alone, together, llm = asyncio.run(scenario())
    assert together == alone and len(set(alone)) == 3
    assert llm.args.tensor_parallel_size == 2
    assert max(len(batch) for batch in llm.batches if batch[0].startswith("alone")) == 1
    assert next(len(batch) for batch in llm.batches if batch[0].startswith("together")) == 3


def test_async_engine_refuses_a_prompt_past_the_context_and_stops_at_the_deadline(
    async_engine, tiny_lm_dir
) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ArgumentsInvalid, match="context holds"):
        asyncio.run(async_engine.run(gpt_args(tiny_lm_dir, content="word " * 5000), "long"))

    async def past_deadline() -> Any:
        with job_deadline(time.time() - 1):
            return await async_engine.run(gpt_args(tiny_lm_dir, max_new_tokens=8), "late")

    with pytest.raises(JobPastDeadline):
        asyncio.run(past_deadline())
    assert async_engine._model(gpt_args(tiny_lm_dir)).llm._running == []  # the request was aborted


# --- the offline engine against the stand-in's LLM and its step-wise LLMEngine ---


def test_offline_engine_refuses_a_prompt_past_the_context_and_stops_at_the_deadline(
    offline_engine, async_engine, tiny_lm_dir
) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ArgumentsInvalid, match="context holds"):
        offline_engine.run(gpt_args(tiny_lm_dir, content="word " * 5000))
    engine = offline_engine._model(gpt_args(tiny_lm_dir)).llm.llm_engine
    assert engine.batches == []  # refused before vLLM saw it

    with job_deadline(time.time() - 1), pytest.raises(JobPastDeadline):
        offline_engine.run(gpt_args(tiny_lm_dir, max_new_tokens=8))
    assert not engine.has_unfinished_requests()  # the request was aborted, its place in the batch freed

    # Within its deadline the same task runs, to the bytes the async engine gives it.
    task = gpt_args(tiny_lm_dir, seed=7, do_sample=True, temperature=0.9, max_new_tokens=8)
    with job_deadline(time.time() + 600):
        offline = offline_engine.run(task).files[0]
    assert offline == asyncio.run(async_engine.run(task, "same")).files[0]
