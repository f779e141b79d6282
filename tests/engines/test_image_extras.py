"""ControlNet (with the numpy Canny), LoRA, textual inversion and the safety-checker switch."""

from __future__ import annotations

import base64
import importlib.util
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from cluster.protocol.errors import ArgumentsInvalid, ModelInvalid
from cluster.workers.engines.canny import canny_edges, canny_image
from cluster.workers.engines.image_diffusers import LORA_ADAPTER, DiffusersImageEngine
from cluster.workers.engines.image_request import decode_data_url
from cluster.workers.models.cache import ModelCache
from tests.engines.factories import sd_args


def square_image(size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), "black")
    ImageDraw.Draw(image).rectangle([16, 16, 47, 47], fill="white")
    return image


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# --- Canny ---


def test_canny_finds_the_outline_of_a_square_and_nothing_inside() -> None:
    edges = canny_edges(square_image())
    assert edges[30, 10:22].any() and edges[10:22, 30].any()  # the left and top sides
    assert not edges[22:42, 22:42].any() and not edges[:10].any()  # inside and far outside: nothing
    assert edges.sum() < 4 * 32 * 2  # thin lines, not filled bands


def test_canny_thresholds_and_flat_images() -> None:
    assert not canny_edges(Image.new("RGB", (32, 32), "grey")).any()
    faint = Image.new("RGB", (64, 64), (100, 100, 100))
    ImageDraw.Draw(faint).rectangle([16, 16, 47, 47], fill=(110, 110, 110))
    assert not canny_edges(faint, 100, 200).any() and canny_edges(faint, 5, 20).any()
    control = canny_image(square_image())
    assert control.mode == "RGB" and set(np.unique(np.asarray(control)).tolist()) == {0, 255}


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "data:text/plain;base64,aGk=",
        "data:image/png;base64,@@@",
        "data:image/png;base64," + base64.b64encode(b"not a png").decode(),
    ],
)
def test_bad_control_images_are_arguments_invalid(url: str) -> None:
    with pytest.raises(ArgumentsInvalid) as info:
        decode_data_url(url)
    assert info.value.fields == ("controlnet.image_dataurl",)


# --- ControlNet on a tiny model ---


def controlnet_args(model: Path, controlnet: Path, **overrides: Any) -> Any:
    spec = {
        "model": str(controlnet),
        "image_dataurl": data_url(square_image()),
        "preprocess": {"method": "canny", "args": {"low_threshold": 50, "high_threshold": 150}},
        **overrides,
    }
    return sd_args(model, controlnet=spec)


def test_controlnet_canny_runs_and_its_weight_matters(
    image_engine: DiffusersImageEngine, tiny_sd_dir: Path, tiny_controlnet_dir: Path
) -> None:
    strong = image_engine.run(controlnet_args(tiny_sd_dir, tiny_controlnet_dir, weight=100)).images
    weak = image_engine.run(controlnet_args(tiny_sd_dir, tiny_controlnet_dir, weight=10)).images
    assert len(strong) == 2 and strong != weak
    assert image_engine.run(controlnet_args(tiny_sd_dir, tiny_controlnet_dir, weight=100)).images == strong
    raw = image_engine.run(
        controlnet_args(tiny_sd_dir, tiny_controlnet_dir, weight=100, preprocess=None)
    ).images
    assert raw != strong  # without the preprocessor the square itself is the control image


def test_controlnet_preprocessor_this_node_lacks_is_reported(
    image_engine: DiffusersImageEngine, tiny_sd_dir: Path, tiny_controlnet_dir: Path
) -> None:
    with pytest.raises(ModelInvalid, match="openpose"):
        image_engine.run(controlnet_args(tiny_sd_dir, tiny_controlnet_dir, preprocess={"method": "openpose"}))


# --- adapters ---


class RecordingPipe:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def load_lora_weights(self, path: str, **kwargs: Any) -> None:
        self.calls.append(("load_lora_weights", (path, kwargs)))

    def set_adapters(self, names: list[str], adapter_weights: list[float]) -> None:
        self.calls.append(("set_adapters", (names, adapter_weights)))

    def unload_lora_weights(self) -> None:
        self.calls.append(("unload_lora_weights", None))


def test_lora_is_scaled_by_weight_and_unloaded_even_on_failure(offline_store, tiny_sd_dir: Path) -> None:  # type: ignore[no-untyped-def]
    engine = DiffusersImageEngine(offline_store, ModelCache(10**9))
    pipe = RecordingPipe()
    args = sd_args(
        tiny_sd_dir, lora={"model": str(tiny_sd_dir), "weight_file_name": "style.safetensors", "weight": 35}
    )
    with pytest.raises(RuntimeError), engine._task_adapters(pipe, args, None):  # type: ignore[arg-type]
        raise RuntimeError("generation failed")
    assert pipe.calls == [
        (
            "load_lora_weights",
            (str(tiny_sd_dir), {"weight_name": "style.safetensors", "adapter_name": LORA_ADAPTER}),
        ),
        ("set_adapters", ([LORA_ADAPTER], [0.35])),
        ("unload_lora_weights", None),
    ]


@pytest.mark.skipif(importlib.util.find_spec("peft") is not None, reason="peft is installed here")
def test_lora_without_peft_is_model_invalid(image_engine: DiffusersImageEngine, tiny_sd_dir: Path) -> None:
    with pytest.raises(ModelInvalid, match="PEFT"):
        image_engine.run(sd_args(tiny_sd_dir, lora={"model": str(tiny_sd_dir)}))
    assert len(image_engine.run(sd_args(tiny_sd_dir)).images) == 2  # the model is still usable


def test_textual_inversion_applies_to_its_task_only(
    image_engine: DiffusersImageEngine, tiny_sd_dir: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    torch.save({"<fox-style>": torch.randn(32) * 5}, tmp_path / "learned_embeds.bin")
    prompt = "a <fox-style> cat"
    plain = image_engine.run(sd_args(tiny_sd_dir, prompt=prompt)).images
    styled = image_engine.run(sd_args(tiny_sd_dir, prompt=prompt, textual_inversion=str(tmp_path))).images
    assert styled != plain
    assert image_engine.run(sd_args(tiny_sd_dir, prompt=prompt)).images == plain  # unloaded after its task


# --- safety checker ---


class BlackingChecker(torch.nn.Module):
    """Stands in for StableDiffusionSafetyChecker: flags every image and blacks it out."""

    def __init__(self) -> None:
        super().__init__()
        self.num_calls = 0
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    @property
    def device(self) -> torch.device:  # diffusers reads .device/.dtype of every component
        return self.anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self.anchor.dtype

    def forward(self, images: Any, clip_input: torch.Tensor) -> tuple[Any, list[bool]]:
        self.num_calls += 1
        return images * 0, [True] * len(images)


def test_safety_checker_runs_only_when_the_task_asks(offline_store, tiny_sd_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from transformers import CLIPImageProcessor

    engine = DiffusersImageEngine(offline_store, ModelCache(10**9))
    base = engine._base(sd_args(tiny_sd_dir))
    checker = BlackingChecker()
    base.pipe.register_modules(
        safety_checker=checker, feature_extractor=CLIPImageProcessor(size=32, crop_size=32)
    )
    off = engine.run(sd_args(tiny_sd_dir, task_config={"num_images": 1, "safety_checker": False})).images
    assert checker.num_calls == 0 and np.asarray(Image.open(io.BytesIO(off[0]))).any()
    on = engine.run(sd_args(tiny_sd_dir, task_config={"num_images": 1, "safety_checker": True})).images
    assert checker.num_calls == 1 and not np.asarray(Image.open(io.BytesIO(on[0]))).any()
