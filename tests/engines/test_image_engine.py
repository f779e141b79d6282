"""The diffusers image engine on tiny random pipelines: txt2img, schedulers, seeds, PNG bytes, layouts."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from cluster.protocol.errors import ArgumentsInvalid, ModelInvalid
from cluster.protocol.phash import sd_result
from cluster.workers.engines.image_diffusers import DiffusersImageEngine
from cluster.workers.models.sd_builders import build_tiny_sd
from tests.engines.factories import sd_args

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_txt2img_gives_png_files_and_their_phash_result(
    image_engine: DiffusersImageEngine, tiny_sd_dir: Path
) -> None:
    result = image_engine.run(sd_args(tiny_sd_dir, task_config={"num_images": 3, "image_width": 96}))
    assert len(result.files) == 3 and all(png.startswith(PNG_SIGNATURE) for png in result.files)
    with Image.open(io.BytesIO(result.files[0])) as image:
        assert image.size == (96, 64) and image.mode == "RGB"
    assert result.result == sd_result(list(result.images)) and len(result.result) == 24


def test_one_generator_per_task_reused_image_after_image(
    image_engine: DiffusersImageEngine, tiny_sd_dir: Path
) -> None:
    two = image_engine.run(sd_args(tiny_sd_dir, task_config={"num_images": 2, "seed": 42})).images
    one = image_engine.run(sd_args(tiny_sd_dir, task_config={"num_images": 1, "seed": 42})).images
    assert one[0] == two[0]  # the same seed starts the same stream
    assert two[0] != two[1]  # ... which goes on for the next image instead of restarting
    other = image_engine.run(sd_args(tiny_sd_dir, task_config={"num_images": 1, "seed": 43})).images
    assert other[0] != one[0]


def test_warm_model_repeats_bytes_between_other_tasks(
    image_engine: DiffusersImageEngine, tiny_sd_dir: Path, tiny_sdxl_dir: Path
) -> None:
    task = sd_args(tiny_sd_dir, scheduler={"method": "EulerAncestralDiscreteScheduler"})
    first = image_engine.run(task).images
    image_engine.run(sd_args(tiny_sdxl_dir))
    image_engine.run(sd_args(tiny_sd_dir, scheduler={"method": "LCMScheduler"}, task_config={"seed": 1}))
    assert image_engine.run(task).images == first


@pytest.mark.parametrize(
    "scheduler",
    [
        {"method": "DPMSolverMultistepScheduler", "args": {"use_karras_sigmas": True}},
        {"method": "EulerAncestralDiscreteScheduler"},
        {"method": "LCMScheduler", "args": {"original_inference_steps": 10}},
    ],
)
def test_each_scheduler_changes_the_images(
    image_engine: DiffusersImageEngine, tiny_sd_dir: Path, scheduler: dict
) -> None:  # type: ignore[type-arg]
    default = image_engine.run(sd_args(tiny_sd_dir, task_config={"steps": 3})).images
    assert (
        image_engine.run(sd_args(tiny_sd_dir, scheduler=scheduler, task_config={"steps": 3})).images
        != default
    )


def test_scheduler_args_that_the_scheduler_rejects_are_a_task_error(
    image_engine: DiffusersImageEngine, tiny_sd_dir: Path
) -> None:
    args = sd_args(
        tiny_sd_dir,
        scheduler={"method": "DPMSolverMultistepScheduler", "args": {"algorithm_type": "no-such-algorithm"}},
    )
    with pytest.raises(ArgumentsInvalid) as info:
        image_engine.run(args)
    assert info.value.fields == ("scheduler.args",)


def test_negative_prompt_changes_pixels(image_engine: DiffusersImageEngine, tiny_sd_dir: Path) -> None:
    plain = image_engine.run(sd_args(tiny_sd_dir)).images
    assert image_engine.run(sd_args(tiny_sd_dir, negative_prompt="blurry, low quality")).images != plain


def test_pipeline_class_follows_the_model(
    image_engine: DiffusersImageEngine, tiny_sdxl_dir: Path, tmp_path: Path
) -> None:
    sd21 = build_tiny_sd(tmp_path / "sd21", layout="sd21")
    for model, family in ((tiny_sdxl_dir, "sdxl"), (sd21, "sd")):
        assert image_engine._base(sd_args(model)).family == family
        assert len(image_engine.run(sd_args(model, task_config={"num_images": 1})).images) == 1
    scheduler = image_engine._base(sd_args(sd21)).pipe.scheduler.config
    assert scheduler["prediction_type"] == "v_prediction"  # carried into the task's scheduler by from_config


def test_vae_override_is_used(
    image_engine: DiffusersImageEngine, tiny_sd_dir: Path, tiny_sdxl_dir: Path
) -> None:
    plain = image_engine.run(sd_args(tiny_sd_dir)).images
    assert image_engine.run(sd_args(tiny_sd_dir, vae=str(tiny_sdxl_dir))).images != plain
    assert image_engine.run(sd_args(tiny_sd_dir, vae=str(tiny_sd_dir))).images == plain  # same weights


def test_refiner_runs_on_sdxl_and_is_refused_on_sd(
    image_engine: DiffusersImageEngine, tiny_sd_dir: Path, tiny_sdxl_dir: Path
) -> None:
    refiner = {"model": str(tiny_sdxl_dir), "denoising_cutoff": 50, "steps": 4}
    plain = image_engine.run(sd_args(tiny_sdxl_dir, task_config={"steps": 4})).images
    refined = image_engine.run(sd_args(tiny_sdxl_dir, refiner=refiner, task_config={"steps": 4})).images
    assert len(refined) == 2 and refined != plain
    with pytest.raises(ArgumentsInvalid, match="SDXL"):
        image_engine.run(sd_args(tiny_sd_dir, refiner=refiner))


def test_not_a_stable_diffusion_model_is_model_invalid(
    image_engine: DiffusersImageEngine, tiny_lm_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ModelInvalid):
        image_engine.run(sd_args(tiny_lm_dir))
    with pytest.raises(ModelInvalid):
        image_engine.run(sd_args(tmp_path / "absent"))
