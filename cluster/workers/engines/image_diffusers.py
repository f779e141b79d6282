"""The image engine on diffusers: text-to-image for SD 1.x / 2.x and SDXL, with scheduler choice,
negative prompt, LoRA, textual inversion, VAE/UNet overrides, an SDXL refiner and ControlNet.

A loaded base pipeline is never changed for a task: each task gets a pipeline object assembled from the
cached components with its own scheduler (and ControlNet, safety checker choice); adapters (LoRA,
textual inversion) are loaded into the shared modules for the task and unloaded after it, under the
engine's lock. One CPU ``torch.Generator`` seeded with the task's seed is reused image after image, so
the initial noise is the same on every device type.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cluster.protocol.errors import ModelInvalid
from cluster.protocol.sd import SDTaskArgs
from cluster.workers.engines.base import ImageEngine, ImageResult
from cluster.workers.engines.deadline import check_deadline
from cluster.workers.engines.errors import loading, running
from cluster.workers.engines.image_request import (
    call_kwargs,
    check_refiner,
    control_image,
    make_scheduler,
    percent,
    png_bytes,
    torch_dtype,
)
from cluster.workers.models.cache import ModelCache
from cluster.workers.models.store import ModelStore

logger = logging.getLogger(__name__)
LORA_ADAPTER = "task_lora"


@dataclass(frozen=True, slots=True)
class LoadedPipeline:
    pipe: Any
    family: str  # "sd" (1.x, 2.x) or "sdxl"


def pipeline_family(pipe: Any) -> str | None:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if isinstance(pipe, StableDiffusionXLPipeline):
        return "sdxl"
    if isinstance(pipe, StableDiffusionPipeline):
        return "sd"
    return None


def pipeline_class(family: str, *, has_controlnet: bool) -> type:
    import diffusers

    names = {
        ("sd", False): "StableDiffusionPipeline",
        ("sd", True): "StableDiffusionControlNetPipeline",
        ("sdxl", False): "StableDiffusionXLPipeline",
        ("sdxl", True): "StableDiffusionXLControlNetPipeline",
    }
    return getattr(diffusers, names[family, has_controlnet])


def assemble(cls: type, components: dict[str, Any], base_config: Any) -> Any:
    """A pipeline of ``cls`` over existing components (no weights are copied)."""
    params = inspect.signature(cls.__init__).parameters
    kwargs = {name: value for name, value in components.items() if name in params}
    if "requires_safety_checker" in params:
        kwargs["requires_safety_checker"] = False
    if "add_watermarker" in params:
        kwargs["add_watermarker"] = False  # the watermark perturbs pixels and needs an extra package
    if "force_zeros_for_empty_prompt" in params:
        kwargs["force_zeros_for_empty_prompt"] = base_config.get("force_zeros_for_empty_prompt", True)
    pipe = cls(**kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _stop_past_deadline(
    pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Between denoising steps: a job past its deadline stops here (``JobPastDeadline``)."""
    check_deadline()
    return callback_kwargs


class DiffusersImageEngine(ImageEngine):
    name = "diffusers"

    def __init__(self, store: ModelStore, cache: ModelCache, device: str = "cpu") -> None:
        self.store = store
        self.cache = cache
        self.device = device
        self._lock = threading.Lock()

    # --- loading (cached) ---

    def _base(self, args: SDTaskArgs) -> LoadedPipeline:
        path = self.store.resolve(args.base_model_name)
        dtype = torch_dtype(args.dtype, self.device)
        key = ("sd_pipeline", str(path), args.base_model_variant, dtype, self.device)
        return self.cache.get_or_load(
            key, lambda: self._load_base(path, args.base_model_name, args.base_model_variant, dtype)
        )

    def _load_base(
        self, path: Path, model_id: str, variant: str | None, dtype: torch.dtype
    ) -> LoadedPipeline:
        from diffusers import DiffusionPipeline

        with loading(model_id):
            pipe = DiffusionPipeline.from_pretrained(path, dtype=dtype, variant=variant)
            family = pipeline_family(pipe)
            if family is None:
                raise ModelInvalid(
                    f"{model_id!r} is a {type(pipe).__name__}; this engine runs SD 1.x/2.x and SDXL"
                )
            pipe.to(self.device)
            pipe.set_progress_bar_config(disable=True)
            return LoadedPipeline(pipe, family)

    def _component(self, kind: str, model_id: str, dtype: torch.dtype, variant: str | None = None) -> Any:
        """A VAE, UNet or ControlNet by id; from a whole pipeline's repository, its subfolder."""
        import diffusers

        cls = getattr(
            diffusers,
            {"vae": "AutoencoderKL", "unet": "UNet2DConditionModel", "controlnet": "ControlNetModel"}[kind],
        )
        path = self.store.resolve(model_id)

        def load() -> Any:
            with loading(model_id):
                subfolder = kind if (path / kind / "config.json").exists() else None
                module = cls.from_pretrained(path, subfolder=subfolder, dtype=dtype, variant=variant)
                return module.to(self.device).eval()

        return self.cache.get_or_load((kind, str(path), variant, dtype, self.device), load)

    def _refiner(self, args: SDTaskArgs, base: LoadedPipeline, dtype: torch.dtype) -> Any:
        from diffusers import StableDiffusionXLImg2ImgPipeline

        refiner = args.refiner
        assert refiner is not None
        path = self.store.resolve(refiner.model)

        def load() -> Any:
            with loading(refiner.model):
                # The refiner shares the base's second text encoder and VAE, as SDXL refiners are made to.
                pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(
                    path,
                    text_encoder_2=base.pipe.text_encoder_2,
                    vae=base.pipe.vae,
                    dtype=dtype,
                    variant=refiner.variant,
                )
                pipe.to(self.device)
                pipe.set_progress_bar_config(disable=True)
                return pipe

        key = ("sdxl_refiner", str(path), refiner.variant, id(base.pipe), dtype, self.device)
        return self.cache.get_or_load(key, load)

    # --- one task ---

    def run(self, args: SDTaskArgs) -> ImageResult:
        base = self._base(args)
        check_refiner(args, base.family)
        dtype = torch_dtype(args.dtype, self.device)
        control = control_image(args.controlnet) if args.controlnet else None
        components = dict(base.pipe.components)
        if args.vae:
            components["vae"] = self._component("vae", args.vae, dtype)
        if args.unet:
            components["unet"] = self._component("unet", args.unet, dtype)
        if args.controlnet:
            components["controlnet"] = self._component(
                "controlnet", args.controlnet.model, dtype, args.controlnet.variant
            )
        components["scheduler"] = make_scheduler(base.pipe.scheduler.config, args.scheduler)
        if not args.task_config.safety_checker:
            components["safety_checker"] = None
        pipe = assemble(
            pipeline_class(base.family, has_controlnet=control is not None), components, base.pipe.config
        )
        refiner = self._refiner(args, base, dtype) if args.refiner else None
        with self._lock, self._task_adapters(pipe, args, base):
            images = self._generate(pipe, refiner, control, args)
        return ImageResult(tuple(png_bytes(image) for image in images))

    def _generate(self, pipe: Any, refiner: Any, control: Any, args: SDTaskArgs) -> list[Any]:
        kwargs = {**call_kwargs(args), "callback_on_step_end": _stop_past_deadline}
        if control is not None and args.controlnet is not None:
            kwargs.update(image=control, controlnet_conditioning_scale=percent(args.controlnet.weight))
        generator = torch.Generator("cpu").manual_seed(args.task_config.seed)
        images = []
        with running(), torch.inference_mode():
            for _ in range(args.task_config.num_images):
                if refiner is None:
                    images.append(pipe(**kwargs, generator=generator).images[0])
                    continue
                assert args.refiner is not None
                cutoff = percent(args.refiner.denoising_cutoff)
                latents = pipe(
                    **kwargs, generator=generator, denoising_end=cutoff, output_type="latent"
                ).images
                refined = refiner(
                    prompt=args.prompt,
                    negative_prompt=kwargs["negative_prompt"],
                    image=latents,
                    num_inference_steps=args.refiner.steps,
                    denoising_start=cutoff,
                    guidance_scale=args.task_config.cfg,
                    generator=generator,
                    callback_on_step_end=_stop_past_deadline,
                )
                images.append(refined.images[0])
        return images

    @contextmanager
    def _task_adapters(self, pipe: Any, args: SDTaskArgs, base: LoadedPipeline) -> Iterator[None]:
        """LoRA and textual inversion for this task only; removed from the shared modules afterwards."""
        has_lora = has_embedding = False
        try:
            if args.lora:
                with loading(args.lora.model):
                    path = self.store.resolve(args.lora.model)
                    pipe.load_lora_weights(
                        str(path), weight_name=args.lora.weight_file_name or None, adapter_name=LORA_ADAPTER
                    )
                    has_lora = True
                    pipe.set_adapters([LORA_ADAPTER], adapter_weights=[percent(args.lora.weight)])
            if args.textual_inversion:
                with loading(args.textual_inversion):
                    pipe.load_textual_inversion(str(self.store.resolve(args.textual_inversion)))
                    has_embedding = True
            yield
        finally:
            try:
                if has_lora:
                    pipe.unload_lora_weights()
                if has_embedding:
                    pipe.unload_textual_inversion()
            except Exception:  # the shared modules may be left changed: drop them rather than reuse them
                logger.exception("[engine] adapter unload failed; evicting model=%s", args.base_model_name)
                self.cache.clear()
