"""The conformance suite every text engine must pass, parametrized over the implementations.

The vLLM engine runs only where vLLM and a CUDA GPU are present; elsewhere its cases are skipped.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from cluster.protocol.hashes import gpt_response_bytes
from cluster.workers.engines.base import TextEngine
from cluster.workers.models.cache import ModelCache
from tests.engines.factories import gpt_args, greedy_args

HAS_VLLM_GPU = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


@pytest.fixture(params=["transformers", "vllm"])
def engine(request: pytest.FixtureRequest, text_engine: TextEngine, offline_store) -> TextEngine:  # type: ignore[no-untyped-def]
    if request.param == "transformers":
        return text_engine
    if not HAS_VLLM_GPU:
        pytest.skip("vLLM engine: vllm is not installed or no CUDA GPU here (it runs on GPU farms only)")
    from cluster.workers.engines.text_vllm import VllmTextEngine

    return VllmTextEngine(offline_store, ModelCache(budget_bytes=8 * 1024**3))


def content(engine: TextEngine, args) -> list[str]:  # type: ignore[no-untyped-def]
    return [c.message.content for c in engine.run(args).response.choices]


def test_result_files_are_the_protocol_0json(engine: TextEngine, tiny_lm_dir: Path) -> None:
    result = engine.run(greedy_args(tiny_lm_dir))
    (data,) = result.files
    assert data == gpt_response_bytes(result.response) and result.result == hashlib.sha256(data).digest()
    body = json.loads(data)
    assert list(body) == ["model", "choices", "usage"] and body["model"] == str(tiny_lm_dir)
    assert list(body["choices"][0]) == ["finish_reason", "message", "index"]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 0 < usage["completion_tokens"] <= 12


def test_greedy_is_repeatable_and_ignores_the_seed(engine: TextEngine, tiny_lm_dir: Path) -> None:
    first = engine.run(greedy_args(tiny_lm_dir, seed=1)).files
    assert engine.run(greedy_args(tiny_lm_dir, seed=2)).files == first


def test_sampling_depends_on_the_seed(engine: TextEngine, tiny_lm_dir: Path) -> None:
    outputs = {tuple(content(engine, gpt_args(tiny_lm_dir, seed=seed, do_sample=True))) for seed in range(4)}
    assert len(outputs) >= 3


def test_same_task_same_bytes_alone_or_between_other_tasks(
    engine: TextEngine, tiny_lm_dir: Path, tiny_lm_plain_dir: Path
) -> None:
    task = gpt_args(tiny_lm_dir, seed=11, do_sample=True, num_return_sequences=2)
    alone = engine.run(task).files
    others = [
        gpt_args(tiny_lm_dir, seed=5, do_sample=True),
        greedy_args(tiny_lm_plain_dir),
        gpt_args(tiny_lm_plain_dir, seed=11, do_sample=True, top_p=0.5),
    ]
    results = engine.run_many([others[0], task, others[1], task, others[2]])
    assert results[1].files == alone and results[3].files == alone  # type: ignore[union-attr]


def test_several_return_sequences(engine: TextEngine, tiny_lm_dir: Path) -> None:
    response = engine.run(gpt_args(tiny_lm_dir, seed=3, do_sample=True, num_return_sequences=3)).response
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert len({c.message.content for c in response.choices}) >= 2
    assert response.usage.completion_tokens <= 3 * 12


def test_max_new_tokens_ends_with_length(engine: TextEngine, tiny_lm_dir: Path) -> None:
    response = engine.run(greedy_args(tiny_lm_dir, max_new_tokens=4)).response
    assert response.choices[0].finish_reason == "length" and response.usage.completion_tokens == 4


def test_stop_string_ends_the_text_before_it(engine: TextEngine, tiny_lm_dir: Path) -> None:
    full = engine.run(greedy_args(tiny_lm_dir, max_new_tokens=24)).response
    text = full.choices[0].message.content
    start = next(
        i for i in range(2, len(text) - 1) if text[i : i + 2].isalnum() and text[i : i + 2].isascii()
    )
    stop = text[start : start + 2]
    stopped = engine.run(greedy_args(tiny_lm_dir, max_new_tokens=24, stop_strings=[stop])).response
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == text[: text.find(stop)].strip()
    assert stopped.usage.completion_tokens < full.usage.completion_tokens


def test_model_generation_config_eos_ends_with_stop(
    engine: TextEngine, tiny_lm_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    prompt = engine.run(greedy_args(tiny_lm_dir, max_new_tokens=1)).response.usage.prompt_tokens
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    from transformers import AutoTokenizer

    from cluster.workers.engines.text_request import build_prompt_ids

    ids = build_prompt_ids(AutoTokenizer.from_pretrained(tiny_lm_dir), greedy_args(tiny_lm_dir))
    assert len(ids) == prompt
    greedy = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=3)[0, len(ids) :].tolist()
    copy = tmp_path / "eos-model"
    shutil.copytree(tiny_lm_dir, copy)
    generation = json.loads((copy / "generation_config.json").read_text())
    generation["eos_token_id"] = [generation["eos_token_id"], greedy[2]]
    (copy / "generation_config.json").write_text(json.dumps(generation))
    response = engine.run(greedy_args(copy)).response
    assert response.choices[0].finish_reason == "stop" and response.usage.completion_tokens == 3


def test_engine_defaults_lie_over_the_model_generation_config(engine: TextEngine, tiny_lm_dir: Path) -> None:
    # The model ships max_new_tokens=16 and do_sample=true; the engine default of 256 tokens must win,
    # and the model's sampling must stay on (different seeds, different text).
    args = gpt_args(tiny_lm_dir).model_copy(update={"generation_config": None})
    response = engine.run(args).response
    assert response.usage.completion_tokens > 16 or response.choices[0].finish_reason == "stop"
    reseeded = engine.run(args.model_copy(update={"seed": 99})).response
    assert reseeded.choices[0].message.content != response.choices[0].message.content


def test_tools_and_plain_models(engine: TextEngine, tiny_lm_dir: Path, tiny_lm_plain_dir: Path) -> None:
    plain = engine.run(greedy_args(tiny_lm_dir)).response.usage.prompt_tokens
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    with_tools = engine.run(greedy_args(tiny_lm_dir).model_copy(update={"tools": tools})).response
    assert with_tools.usage.prompt_tokens > plain
    no_template = engine.run(greedy_args(tiny_lm_plain_dir)).response
    assert no_template.usage.prompt_tokens < plain  # no role markers around the content
