"""The request mapping and response building that every text engine shares."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
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
from cluster.workers.models.builders import CHAT_TEMPLATE
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


# --- what Crynux applications send: content blocks, template_args, null content, images ---


def _with_messages(model_dir, messages, **fields) -> GPTTaskArgs:  # type: ignore[no-untyped-def]
    return GPTTaskArgs.model_validate({**gpt_args(model_dir).model_dump(), "messages": messages, **fields})


def test_text_blocks_render_as_their_texts_joined_as_the_reference_does(tiny_lm_dir) -> None:  # type: ignore[no-untyped-def]
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    blocks = [{"type": "text", "text": "Hello, how "}, {"type": "text", "text": "are you today?"}]
    as_blocks = _with_messages(tiny_lm_dir, [{"role": "user", "content": blocks}])
    as_text = _with_messages(tiny_lm_dir, [{"role": "user", "content": "Hello, how are you today?"}])
    assert build_prompt_ids(tokenizer, as_blocks) == build_prompt_ids(tokenizer, as_text)


def test_null_content_renders_as_an_empty_string(tiny_lm_dir) -> None:  # type: ignore[no-untyped-def]
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    calls = [{"function": {"name": "f", "arguments": {}}}]
    args = _with_messages(
        tiny_lm_dir,
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": calls}],
    )
    text = tokenizer.decode(build_prompt_ids(tokenizer, args))
    assert '<|im_start|>assistant\n[{"function": {"name": "f", "arguments": {}}}]<|im_end|>' in text


def test_template_args_reach_the_chat_template(tiny_lm_dir) -> None:  # type: ignore[no-untyped-def]
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    tokenizer.chat_template = CHAT_TEMPLATE + "{%- if enable_thinking %}<think>{% endif %}"
    thinking = _with_messages(
        tiny_lm_dir, [{"role": "user", "content": "hi"}], template_args={"enable_thinking": True}
    )
    plain = _with_messages(tiny_lm_dir, [{"role": "user", "content": "hi"}])
    assert tokenizer.decode(build_prompt_ids(tokenizer, thinking)).endswith("<|im_start|>assistant\n<think>")
    assert tokenizer.decode(build_prompt_ids(tokenizer, plain)).endswith("<|im_start|>assistant\n")
    # the generation prompt is the task's to turn off (prefilling an assistant turn), as in the reference
    prefill = _with_messages(
        tiny_lm_dir, [{"role": "user", "content": "hi"}], template_args={"add_generation_prompt": False}
    )
    assert not tokenizer.decode(build_prompt_ids(tokenizer, prefill)).endswith("assistant\n")


def test_template_args_that_would_change_what_the_engine_gets_are_refused(tiny_lm_dir) -> None:  # type: ignore[no-untyped-def]
    for key in ("tokenize", "tools", "chat_template", "return_dict"):
        with pytest.raises(ValidationError, match=key):
            _with_messages(tiny_lm_dir, [{"role": "user", "content": "hi"}], template_args={key: True})


def test_image_blocks_are_a_task_error_naming_the_block(tiny_lm_dir) -> None:  # type: ignore[no-untyped-def]
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    content = [{"type": "text", "text": "What is this?"}, {"type": "image", "base64": "iVBORw0KGgo="}]
    args = _with_messages(
        tiny_lm_dir, [{"role": "system", "content": "s"}, {"role": "user", "content": content}]
    )
    with pytest.raises(ArgumentsInvalid) as err:
        build_prompt_ids(tokenizer, args)
    assert err.value.fields == ("messages.1.content.1",) and "vision model" in err.value.message
