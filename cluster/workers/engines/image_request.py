"""SD task arguments mapped onto diffusers: scheduler, call arguments, percent weights, control image.

Pure functions: everything here can be checked without a pipeline. Percent-style weights of the
protocol (LoRA ``weight``, ControlNet ``weight``, refiner ``denoising_cutoff``) become fractions.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from cluster.protocol.errors import ArgumentsInvalid, ModelInvalid
from cluster.protocol.gpt import Dtype
from cluster.protocol.sd import ControlnetArgs, PreprocessCanny, Scheduler, SDTaskArgs
from cluster.workers.engines.canny import canny_image

SUPPORTED_SCHEDULERS = ("DPMSolverMultistepScheduler", "EulerAncestralDiscreteScheduler", "LCMScheduler")
SUPPORTED_PREPROCESSORS = ("canny",)
# A control image larger than this is refused before it is decoded (a decompression bomb is a task error).
MAX_CONTROL_IMAGE_PIXELS = 4096 * 4096


def scheduler_overrides(scheduler: Scheduler) -> dict[str, Any]:
    """The task's scheduler config overrides (null fields left to the model's scheduler config)."""
    return scheduler.args.model_dump(exclude_none=True) if scheduler.args else {}


def make_scheduler(base_config: Any, scheduler: Scheduler) -> Any:
    """A fresh scheduler of the task's class from the model's scheduler config plus the overrides."""
    import diffusers

    cls = getattr(diffusers, scheduler.method)
    try:
        return cls.from_config(base_config, **scheduler_overrides(scheduler))
    except (ValueError, NotImplementedError, TypeError) as exc:
        raise ArgumentsInvalid(
            f"scheduler {scheduler.method} rejects its args: {exc}", ("scheduler.args",)
        ) from exc


def call_kwargs(args: SDTaskArgs) -> dict[str, Any]:
    """Keyword arguments of one pipeline call (one image; the generator is added by the engine)."""
    config = args.task_config
    return {
        "prompt": args.prompt,
        "negative_prompt": args.negative_prompt or None,
        "width": config.image_width,
        "height": config.image_height,
        "num_inference_steps": config.steps,
        "guidance_scale": config.cfg,
        "num_images_per_prompt": 1,
    }


def percent(weight: int) -> float:
    """A protocol percent weight (1..100) as a fraction."""
    return weight / 100


def torch_dtype(dtype: Dtype, device: str) -> torch.dtype:
    """``auto`` is float16 on CUDA (what SD checkpoints are made for) and float32 elsewhere."""
    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]


def decode_data_url(data_url: str) -> Image.Image:
    """The image of a ``data:image/...;base64,...`` URL, as RGB; ArgumentsInvalid when it is not one."""
    field = ("controlnet.image_dataurl",)
    header, sep, payload = data_url.partition(",")
    if not sep or not header.startswith("data:image/") or not header.endswith(";base64"):
        raise ArgumentsInvalid("controlnet.image_dataurl must be a base64 data URL of an image", field)
    try:
        raw = base64.b64decode(payload, validate=True)
        with Image.open(io.BytesIO(raw)) as image:
            if image.width * image.height > MAX_CONTROL_IMAGE_PIXELS:
                raise ArgumentsInvalid(f"control image {image.width}x{image.height} is too large", field)
            return image.convert("RGB")
    except (binascii.Error, UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ArgumentsInvalid(
            f"controlnet.image_dataurl does not hold a readable image: {exc}", field
        ) from exc


def control_image(controlnet: ControlnetArgs) -> Image.Image:
    """The conditioning image: the decoded image, through its preprocessor when one is named."""
    image = decode_data_url(controlnet.image_dataurl)
    preprocess = controlnet.preprocess
    if preprocess is None:
        return image
    if isinstance(preprocess, PreprocessCanny):
        low, high = (
            (preprocess.args.low_threshold, preprocess.args.high_threshold) if preprocess.args else (100, 200)
        )
        return canny_image(image, low, high)
    # NOTE: valid in the schema, but this node cannot run it; every node of this software reports the same.
    raise ModelInvalid(
        f"controlnet preprocess method {preprocess.method!r} is not available on this node "
        f"(supported: {', '.join(SUPPORTED_PREPROCESSORS)})"
    )


def check_refiner(args: SDTaskArgs, family: str) -> None:
    if args.refiner is not None and family != "sdxl":
        raise ArgumentsInvalid("a refiner needs an SDXL base model", ("refiner",))


def png_bytes(image: Image.Image) -> bytes:
    """PNG bytes without metadata: equal pixels give equal bytes (same zlib, same Pillow)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
