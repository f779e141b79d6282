"""Stable Diffusion task arguments, compatible with the Crynux stable-diffusion-task schema.

As the GPT arguments: what Crynux's applications send is accepted (``TaskArgsModel``: unknown fields
ignored, integral floats for integers); ranges the published schema leaves open are closed where a
value outside them could only crash a node (image sides: see docs/protocol-decisions.md).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from cluster.protocol.base import AS_INT, Int, TaskArgsModel
from cluster.protocol.gpt import Dtype

# The union of the published schema's versions (up to 2.5.2) and the reference code's (up to 3.0.0, which
# crynux-node's own first task sends): the field names the format, nothing reads it.
Version = Literal["1.0.0", "2.0.0", "2.1.0", "2.5.0", "2.5.2", "3.0.0"]
Percent = Annotated[int, Field(ge=1, le=100), AS_INT]  # percent-style weights are integers 1..100
# Latent diffusion works on 1/8 of the pixel grid; sizes off that grid crash the VAE. See decisions doc.
ImageSide = Annotated[int, Field(ge=64, le=2048, multiple_of=8), AS_INT]


class BaseModelArgs(TaskArgsModel):
    name: str = Field(min_length=1)
    variant: str | None = None


class TaskConfig(TaskArgsModel):
    image_width: ImageSide = 512
    image_height: ImageSide = 512
    steps: Int = Field(default=1, ge=1, le=100)  # the reference schema's default
    seed: Int = Field(default=0, ge=0, lt=2**31)
    num_images: Int = Field(default=6, ge=1, le=10)
    safety_checker: bool = True
    cfg: float = Field(default=5.0, ge=0.0, le=20.0)


class LoraArgs(TaskArgsModel):
    model: str = Field(min_length=1)
    weight_file_name: str = ""
    weight: Percent = 100


# --- ControlNet preprocessors: a union discriminated by "method" ---


class CannyArgs(TaskArgsModel):
    low_threshold: Int = Field(default=100, ge=0, le=255)
    high_threshold: Int = Field(default=200, ge=0, le=255)


class LeresArgs(TaskArgsModel):
    thr_a: Int = 0
    thr_b: Int = 0


class DepthZoeArgs(TaskArgsModel):
    gamma_corrected: bool = False


class MLSDArgs(TaskArgsModel):
    thr_v: Percent = 10
    thr_d: Percent = 10


class MediapipeFaceArgs(TaskArgsModel):
    max_faces: Int = Field(default=1, ge=1)
    min_confidence: Percent = 50


class PidiNetArgs(TaskArgsModel):
    apply_filter: bool = False


class ShuffleArgs(TaskArgsModel):
    h: Int | None = None
    w: Int | None = None
    f: Int | None = None


class PreprocessCanny(TaskArgsModel):
    method: Literal["canny"]
    args: CannyArgs | None = None


class PreprocessLeres(TaskArgsModel):
    method: Literal["depth_leres", "depth_leres++"]
    args: LeresArgs | None = None


class PreprocessDepthZoe(TaskArgsModel):
    method: Literal["depth_zoe"]
    args: DepthZoeArgs | None = None


class PreprocessMLSD(TaskArgsModel):
    method: Literal["mlsd"]
    args: MLSDArgs | None = None


class PreprocessMediapipeFace(TaskArgsModel):
    method: Literal["mediapipe_face"]
    args: MediapipeFaceArgs | None = None


class PreprocessPidiNet(TaskArgsModel):
    method: Literal["scribble_pidinet", "scribble_pidisafe", "softedge_pidinet", "softedge_pidisafe"]
    args: PidiNetArgs | None = None


class PreprocessShuffle(TaskArgsModel):
    method: Literal["shuffle"]
    args: ShuffleArgs | None = None


class PreprocessNoArgs(TaskArgsModel):
    """Preprocessors that take no arguments."""

    method: Literal[
        "depth_midas",
        "lineart_anime",
        "lineart_coarse",
        "lineart_realistic",
        "normal_bae",
        "openpose",
        "openpose_face",
        "openpose_faceonly",
        "openpose_full",
        "openpose_hand",
        "scribble_hed",
        "scribble_hedsafe",
        "softedge_hedsafe",
    ]


Preprocess = Annotated[
    PreprocessCanny
    | PreprocessLeres
    | PreprocessDepthZoe
    | PreprocessMLSD
    | PreprocessMediapipeFace
    | PreprocessPidiNet
    | PreprocessShuffle
    | PreprocessNoArgs,
    Field(discriminator="method"),
]


class ControlnetArgs(TaskArgsModel):
    model: str = Field(min_length=1)
    variant: str | None = None
    image_dataurl: str = ""
    weight: Percent = 70
    preprocess: Preprocess | None = None


# --- schedulers: a union discriminated by "method"; args override the scheduler's config ---


class CommonSchedulerArgs(TaskArgsModel):
    num_train_timesteps: Annotated[int, Field(ge=1), AS_INT] | None = None
    beta_start: float | None = None
    beta_end: float | None = None
    beta_schedule: str | None = None
    prediction_type: str | None = None
    timestep_spacing: str | None = None
    steps_offset: Int | None = None
    rescale_betas_zero_snr: bool | None = None


class DPMSolverMultistepArgs(CommonSchedulerArgs):
    solver_order: Annotated[int, Field(ge=1, le=3), AS_INT] | None = None
    thresholding: bool | None = None
    dynamic_thresholding_ratio: float | None = None
    sample_max_value: float | None = None
    algorithm_type: str | None = None
    solver_type: str | None = None
    lower_order_final: bool | None = None
    euler_at_final: bool | None = None
    use_karras_sigmas: bool | None = None
    use_lu_lambdas: bool | None = None
    final_sigmas_type: str | None = None
    lambda_min_clipped: float | None = None
    variance_type: str | None = None


class LCMArgs(CommonSchedulerArgs):
    original_inference_steps: Annotated[int, Field(ge=1), AS_INT] | None = None
    clip_samples: Int | None = None
    clip_samples_range: float | None = None
    set_alpha_to_one: bool | None = None
    thresholding: bool | None = None
    dynamic_thresholding_ratio: float | None = None
    sample_max_value: float | None = None
    timestep_scaling: float | None = None


class DPMSolverMultistep(TaskArgsModel):
    method: Literal["DPMSolverMultistepScheduler"]
    args: DPMSolverMultistepArgs | None = None


class EulerAncestralDiscrete(TaskArgsModel):
    method: Literal["EulerAncestralDiscreteScheduler"]
    args: CommonSchedulerArgs | None = None


class LCM(TaskArgsModel):
    method: Literal["LCMScheduler"]
    args: LCMArgs | None = None


Scheduler = Annotated[DPMSolverMultistep | EulerAncestralDiscrete | LCM, Field(discriminator="method")]


class RefinerArgs(TaskArgsModel):
    model: str = Field(min_length=1)
    variant: str | None = None
    denoising_cutoff: Percent = 80
    steps: Int = Field(default=20, ge=1, le=100)


class SDTaskArgs(TaskArgsModel):
    version: Version = "2.5.0"
    base_model: BaseModelArgs | Annotated[str, Field(min_length=1)]
    dtype: Dtype = "auto"
    unet: str = ""
    prompt: str = Field(min_length=1)
    negative_prompt: str = ""
    task_config: TaskConfig
    lora: LoraArgs | None = None
    controlnet: ControlnetArgs | None = None
    scheduler: Scheduler = DPMSolverMultistep(
        method="DPMSolverMultistepScheduler"
    )  # frozen: one shared default is safe
    vae: str = ""
    refiner: RefinerArgs | None = None
    textual_inversion: str = ""

    @property
    def base_model_name(self) -> str:
        return self.base_model if isinstance(self.base_model, str) else self.base_model.name

    @property
    def base_model_variant(self) -> str | None:
        return None if isinstance(self.base_model, str) else self.base_model.variant
