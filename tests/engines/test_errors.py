"""Failures of torch, transformers and the hub land in the task error taxonomy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from cluster.protocol.errors import (
    ArgumentsInvalid,
    ExecutionError,
    ModelInvalid,
    ModelNotAvailable,
    OutOfMemory,
)
from cluster.workers.engines.errors import loading, map_load_error, map_run_error, running
from cluster.workers.engines.text_transformers import TransformersTextEngine
from cluster.workers.models.cache import ModelCache
from tests.engines.factories import greedy_args


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), OutOfMemory),
        (RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"), OutOfMemory),
        (RuntimeError("CUDA error: device-side assert triggered"), ExecutionError),
        (ValueError("unexpected shape"), ExecutionError),
    ],
)
def test_run_errors(exc: Exception, expected: type) -> None:
    assert type(map_run_error(exc)) is expected


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OSError("does not appear to have a file named config.json"), ModelInvalid),
        (ValueError("Unrecognized configuration class for this kind of AutoModel"), ModelInvalid),
        (KeyError("model_type"), ModelInvalid),
        (ConnectionError("hub unreachable"), ModelNotAvailable),
        (torch.OutOfMemoryError("out of memory"), OutOfMemory),
        (RuntimeError("segfault-ish"), ExecutionError),
    ],
)
def test_load_errors(exc: Exception, expected: type) -> None:
    mapped = map_load_error(exc, "org/model")
    assert type(mapped) is expected and "org/model" in mapped.message


def test_context_managers_chain_the_cause_and_pass_taxonomy_errors_through() -> None:
    with pytest.raises(OutOfMemory) as info, running():
        raise torch.OutOfMemoryError("CUDA out of memory")
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)
    original = ArgumentsInvalid("bad", ("x",))
    with pytest.raises(ArgumentsInvalid) as passed, loading("m"):
        raise original
    assert passed.value is original


@pytest.fixture
def fresh_engine(offline_store) -> TransformersTextEngine:  # type: ignore[no-untyped-def]
    return TransformersTextEngine(offline_store, ModelCache(10**9), "cpu")


def test_missing_local_model_is_model_invalid(fresh_engine: TransformersTextEngine, tmp_path: Path) -> None:
    with pytest.raises(ModelInvalid, match="does not exist"):
        fresh_engine.run(greedy_args(tmp_path / "nowhere"))


def test_wrong_architecture_is_model_invalid(fresh_engine: TransformersTextEngine, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 10}))
    with pytest.raises(ModelInvalid, match="cannot be loaded"):
        fresh_engine.run(greedy_args(tmp_path))


def test_corrupt_weights_are_model_invalid(
    fresh_engine: TransformersTextEngine, tiny_lm_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_lm_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelInvalid):
        fresh_engine.run(greedy_args(broken))


@pytest.mark.parametrize("bits", [4, 8])
def test_quantization_on_cpu_is_model_invalid(
    fresh_engine: TransformersTextEngine, tiny_lm_dir: Path, bits: int
) -> None:
    args = greedy_args(tiny_lm_dir).model_copy(update={"quantize_bits": bits})
    with pytest.raises(ModelInvalid, match="CUDA"):
        fresh_engine.run(args)


def test_generation_failures_are_mapped(
    fresh_engine: TransformersTextEngine, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh_engine.run(greedy_args(tiny_lm_dir))  # load it
    (loaded,) = [v for v in fresh_engine.cache._entries.values()]
    model = loaded[0].model
    monkeypatch.setattr(
        model, "generate", lambda **_: (_ for _ in ()).throw(torch.OutOfMemoryError("CUDA oom"))
    )
    with pytest.raises(OutOfMemory):
        fresh_engine.run(greedy_args(tiny_lm_dir))
    monkeypatch.setattr(model, "generate", lambda **_: (_ for _ in ()).throw(RuntimeError("cuDNN error")))
    with pytest.raises(ExecutionError):
        fresh_engine.run(greedy_args(tiny_lm_dir))


def test_messages_that_break_the_template_are_arguments_invalid(
    fresh_engine: TransformersTextEngine, tiny_lm_dir: Path, tmp_path: Path
) -> None:
    strict = tmp_path / "strict-template"
    shutil.copytree(tiny_lm_dir, strict)
    template = (
        "{% if messages[0]['role'] != 'system' %}"
        "{{ raise_exception('first message must be system') }}{% endif %}"
    )
    (strict / "chat_template.jinja").write_text(template)
    with pytest.raises(ArgumentsInvalid, match="first message must be system"):
        fresh_engine.run(greedy_args(strict))


def test_cli_prints_the_taxonomy_error_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cluster.workers.engines.cli import main

    args_file = tmp_path / "task.json"
    args_file.write_text(greedy_args(tmp_path / "no-model").model_dump_json())
    assert main(["gpt", str(args_file), "--out", str(tmp_path / "out"), "--offline"]) == 2
    assert capsys.readouterr().out.startswith("error=model_invalid action=report")
    args_file.write_text('{"model": "m", "messages": []}')
    assert main(["gpt", str(args_file), "--out", str(tmp_path / "out"), "--offline"]) == 2
    assert capsys.readouterr().out.startswith("error=arguments_invalid")
    assert not (tmp_path / "out").exists()
