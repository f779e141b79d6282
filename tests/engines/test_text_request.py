"""The request mapping and response building that every text engine shares."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from cluster.protocol.errors import ArgumentsInvalid
from cluster.protocol.gpt import GPTGenerationConfig, GPTTaskArgs
from cluster.protocol.hashes import gpt_response_bytes
from cluster.workers.engines.text_request import (
    DecodedSequence,
    build_prompt_ids,
    build_response,
    finish_sequence,
    merge_generation_config,
    model_generation_defaults,
)
from tests.engines.factories import gpt_args

EOS = 99


def decode_letters(ids: list[int]) -> str:
    """A toy tokenizer: token i is the letter chr(97 + i % 26); EOS (99) and 98 are special (empty)."""
    return "".join(chr(97 + i % 26) for i in ids if i not in (98, EOS))


# --- generation-config merge ---


def test_task_values_win_over_engine_defaults_which_win_over_the_model() -> None:
    model = {
        "max_new_tokens": 16,
        "num_return_sequences": 3,
        "temperature": 0.7,
        "top_k": 20,
        "do_sample": True,
    }
    params = merge_generation_config(model, GPTGenerationConfig(top_k=5))
    assert params.max_new_tokens == 256 and params.num_return_sequences == 1  # engine defaults over the model
    assert params.temperature == 0.7 and params.do_sample  # the model's own values where nobody else set one
    assert params.top_k == 5  # the task's non-null value wins
    assert merge_generation_config({}, GPTGenerationConfig(max_new_tokens=7)).max_new_tokens == 7


def test_library_fallbacks_when_nobody_sets_a_value() -> None:
    params = merge_generation_config({}, None)
    assert (params.do_sample, params.num_beams, params.top_k, params.top_p) == (False, 1, 50, 1.0)
    assert params.stop_strings == () and params.min_p is None


def test_zero_temperature_is_greedy() -> None:
    params = merge_generation_config({}, GPTGenerationConfig(do_sample=True, temperature=0.0))
    assert not params.do_sample and params.temperature == 1.0


def test_several_sequences_need_sampling_or_beams() -> None:
    with pytest.raises(ArgumentsInvalid) as info:
        merge_generation_config({}, GPTGenerationConfig(num_return_sequences=2))
    assert info.value.fields == ("generation_config.num_return_sequences",)
    assert (
        merge_generation_config({}, GPTGenerationConfig(num_return_sequences=2, num_beams=2)).num_beams == 2
    )


def test_empty_stop_string_is_refused() -> None:
    with pytest.raises(ArgumentsInvalid):
        merge_generation_config({}, GPTGenerationConfig(stop_strings=["ok", ""]))


def test_model_defaults_read_only_generation_keys() -> None:
    defaults = model_generation_defaults(
        {"temperature": 0.6, "eos_token_id": 2, "top_p": None, "max_length": 20}
    )
    assert defaults == {"temperature": 0.6}


# --- finishing a sequence ---


def test_eos_ends_the_sequence_and_is_counted() -> None:
    seq = finish_sequence([0, 1, 2, EOS, 98, 98], decode_letters, frozenset({EOS}), ())
    assert seq == DecodedSequence("abc", 4, "stop")


def test_stop_string_truncates_before_it_and_counts_tokens_up_to_the_completing_one() -> None:
    # "abcdef": the stop string "cd" is completed by token 3; text ends before it.
    seq = finish_sequence([0, 1, 2, 3, 4, 5], decode_letters, frozenset({EOS}), ("cd", "zz"))
    assert seq == DecodedSequence("ab", 4, "stop")


def test_earliest_stop_string_wins_and_padding_after_it_is_ignored() -> None:
    seq = finish_sequence([0, 1, 2, 3, EOS, EOS], decode_letters, frozenset({EOS}), ("d", "b"))
    assert seq == DecodedSequence("a", 2, "stop")


def test_no_eos_no_stop_is_length() -> None:
    assert finish_sequence([0, 1], decode_letters, frozenset({EOS}), ("q",)) == DecodedSequence(
        "ab", 2, "length"
    )


def test_text_is_stripped() -> None:
    seq = finish_sequence([1], lambda ids: "  hi \n", frozenset(), ())
    assert seq.text == "hi"


# --- response and prompt ---


def test_response_bytes_have_the_protocol_key_order_and_summed_usage() -> None:
    response = build_response("m", 5, [DecodedSequence("é", 3, "stop"), DecodedSequence("x", 4, "length")])
    data = gpt_response_bytes(response)
    assert data.startswith(
        b'{"model": "m", "choices": [{"finish_reason": "stop", "message": {"role": "assistant", '
        b'"content": "\\u00e9"}, "index": 0}'
    )
    assert json.loads(data)["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    assert [c["index"] for c in json.loads(data)["choices"]] == [0, 1]


def test_prompt_uses_the_chat_template_with_tools(tiny_lm_dir) -> None:  # type: ignore[no-untyped-def]
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    args = gpt_args(tiny_lm_dir).model_copy(update={"tools": tools})
    text = tokenizer.decode(build_prompt_ids(tokenizer, args))
    assert text.startswith("<|im_start|>system\nTools: ") and "get_weather" in text
    assert text.endswith("<|im_start|>user\nHello, how are you today?<|im_end|>\n<|im_start|>assistant\n")


def test_prompt_without_template_joins_contents_with_newlines(tiny_lm_plain_dir) -> None:  # type: ignore[no-untyped-def]
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_plain_dir)
    data = gpt_args(tiny_lm_plain_dir).model_dump()
    data["messages"].append({"role": "assistant", "content": "Fine."})
    args = GPTTaskArgs.model_validate(data)
    assert tokenizer.decode(build_prompt_ids(tokenizer, args)) == "Hello, how are you today?\nFine."
