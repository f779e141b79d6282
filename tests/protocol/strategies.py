"""Hypothesis strategies that build valid GPT and SD argument documents as plain JSON dicts."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

text = st.text(max_size=20)
name = st.text(min_size=1, max_size=20)
finite = st.floats(allow_nan=False, allow_infinity=False)
json_leaf = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | text
json_object = st.dictionaries(
    text, st.recursive(json_leaf, lambda c: st.lists(c, max_size=3), max_leaves=4), max_size=3
)


def optional_fields(required: dict[str, Any], optional: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """A dict with the required fields and any subset of the optional ones."""
    return st.fixed_dictionaries(required, optional=optional)


# content blocks as Crynux's applications send them (images are valid arguments, refused when run)
content_block = st.fixed_dictionaries({"type": st.just("text"), "text": name}) | st.fixed_dictionaries(
    {"type": st.just("image"), "base64": name}
)
RESERVED_TEMPLATE_ARGS = {"chat_template", "conversation", "documents", "max_length", "padding", "tools",
                          "return_assistant_tokens_mask", "return_dict", "return_tensors", "tokenize",
                          "tokenizer_kwargs", "truncation"}  # fmt: skip
template_args = st.dictionaries(text.filter(lambda k: k not in RESERVED_TEMPLATE_ARGS), json_leaf, max_size=3)

messages = st.lists(
    optional_fields(
        {"role": st.sampled_from(["system", "user", "assistant", "tool"])},
        {
            "content": st.none() | text | st.lists(content_block, max_size=3),
            "tool_call_id": st.none() | text,
            "tool_calls": st.none() | st.lists(json_object, max_size=2),
        },
    ),
    min_size=1,
    max_size=4,
)

generation_config = optional_fields(
    {},
    {
        "max_new_tokens": st.none() | st.integers(1, 32_768),
        "do_sample": st.none() | st.booleans(),
        "num_beams": st.none() | st.integers(1, 16),
        "temperature": st.none() | st.floats(0.0, 100.0),
        "typical_p": st.none() | st.floats(0.0, 1.0, exclude_min=True),
        "top_k": st.none() | st.integers(0, 10**6),
        "top_p": st.none() | st.floats(0.0, 1.0, exclude_min=True),
        "repetition_penalty": st.none() | st.floats(0.0, 100.0, exclude_min=True),
        "num_return_sequences": st.none() | st.integers(1, 16),
        "stop_strings": st.none() | st.lists(text, max_size=3),
        "min_p": st.none() | st.floats(0.0, 1.0),
    },
)

gpt_args = optional_fields(
    {"model": name, "messages": messages},
    {
        "tools": st.none() | st.lists(json_object, max_size=2),
        "generation_config": st.none() | generation_config,
        "template_args": st.none() | template_args,
        "seed": st.integers(0, 2**63 - 1),
        "dtype": st.sampled_from(["float16", "bfloat16", "float32", "auto"]),
        "quantize_bits": st.sampled_from([None, 4, 8]),
    },
)

percent = st.integers(1, 100)
side = st.integers(8, 256).map(lambda n: n * 8)
optional_str = st.none() | text
optional_int = st.none() | st.integers(-1000, 1000)
optional_float = st.none() | finite
optional_bool = st.none() | st.booleans()

common_scheduler_args = {
    "num_train_timesteps": st.none() | st.integers(1, 5000),
    "beta_start": optional_float,
    "beta_end": optional_float,
    "beta_schedule": optional_str,
    "prediction_type": optional_str,
    "timestep_spacing": optional_str,
    "steps_offset": optional_int,
    "rescale_betas_zero_snr": optional_bool,
}
dpm_args = {
    **common_scheduler_args,
    "solver_order": st.none() | st.integers(1, 3),
    "use_karras_sigmas": optional_bool,
    "algorithm_type": optional_str,
    "lambda_min_clipped": optional_float,
}
lcm_args = {**common_scheduler_args, "original_inference_steps": st.none() | st.integers(1, 100)}

scheduler = st.one_of(
    optional_fields(
        {"method": st.just("DPMSolverMultistepScheduler")},
        {"args": st.none() | optional_fields({}, dpm_args)},
    ),
    optional_fields(
        {"method": st.just("EulerAncestralDiscreteScheduler")},
        {"args": st.none() | optional_fields({}, common_scheduler_args)},
    ),
    optional_fields({"method": st.just("LCMScheduler")}, {"args": st.none() | optional_fields({}, lcm_args)}),
)

preprocess = st.one_of(
    optional_fields(
        {"method": st.just("canny")},
        {
            "args": st.none()
            | optional_fields(
                {}, {"low_threshold": st.integers(0, 255), "high_threshold": st.integers(0, 255)}
            )
        },
    ),
    optional_fields(
        {"method": st.sampled_from(["depth_leres", "depth_leres++"])},
        {
            "args": st.none()
            | optional_fields({}, {"thr_a": st.integers(0, 100), "thr_b": st.integers(0, 100)})
        },
    ),
    optional_fields(
        {"method": st.just("mlsd")}, {"args": st.none() | optional_fields({}, {"thr_v": percent})}
    ),
    st.fixed_dictionaries(
        {"method": st.sampled_from(["openpose", "depth_midas", "lineart_anime", "normal_bae"])}
    ),
)

task_config = optional_fields(
    {},
    {
        "image_width": side,
        "image_height": side,
        "steps": st.integers(1, 100),
        "seed": st.integers(0, 2**31 - 1),
        "num_images": st.integers(1, 10),
        "safety_checker": st.booleans(),
        "cfg": st.floats(0.0, 20.0),
    },
)

sd_args = optional_fields(
    {
        "base_model": name | optional_fields({"name": name}, {"variant": optional_str}),
        "prompt": name,
        "task_config": task_config,
    },
    {
        "version": st.sampled_from(["1.0.0", "2.0.0", "2.1.0", "2.5.0", "3.0.0"]),
        "dtype": st.sampled_from(["float16", "bfloat16", "float32", "auto"]),
        "unet": text,
        "negative_prompt": text,
        "lora": st.none() | optional_fields({"model": name}, {"weight_file_name": text, "weight": percent}),
        "controlnet": st.none()
        | optional_fields(
            {"model": name},
            {
                "variant": optional_str,
                "image_dataurl": text,
                "weight": percent,
                "preprocess": st.none() | preprocess,
            },
        ),
        "scheduler": scheduler,
        "vae": text,
        "refiner": st.none()
        | optional_fields(
            {"model": name},
            {"variant": optional_str, "denoising_cutoff": percent, "steps": st.integers(1, 100)},
        ),
        "textual_inversion": text,
    },
)
