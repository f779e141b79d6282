"""Small random-weight Stable Diffusion pipelines (SD 1.5, SD 2.1 and SDXL layouts) and a ControlNet,
saved with ``save_pretrained`` so that they load through the real diffusers path. The CLIP tokenizer's
vocabulary and merges are written here; nothing is downloaded. Images are noise: only shapes, seeding
and bytes are meaningful."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

Layout = Literal["sd15", "sd21", "sdxl"]
TEXT_HIDDEN = 32
TIME_EMBED_DIM = 8  # SDXL: each of the 6 size/crop numbers is embedded into 8 values


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte-to-character table."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def build_clip_tokenizer() -> Any:
    """A CLIP tokenizer over single bytes plus a handful of merges (about 530 tokens)."""
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    merges = ["t h", "th e</w>", "a n", "an d</w>", "o n</w>", "i n", "r e", "e r</w>"]
    vocab_list = chars + [c + "</w>" for c in chars] + [m.replace(" ", "") for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(vocab_list))}
    pairs = [tuple(m.split(" ")) for m in merges]
    return CLIPTokenizer(vocab=vocab, merges=pairs, model_max_length=77)


def _text_encoder(tokenizer: Any, *, with_projection: bool = False) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=TEXT_HIDDEN,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModelWithProjection(config) if with_projection else CLIPTextModel(config)


def _unet(layout: Layout) -> Any:
    from diffusers import UNet2DConditionModel

    common: dict[str, Any] = {
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": 8,
        "norm_num_groups": 32,
    }
    if layout == "sdxl":
        return UNet2DConditionModel(
            **common,
            cross_attention_dim=2 * TEXT_HIDDEN,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=TIME_EMBED_DIM,
            projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + TEXT_HIDDEN,
        )
    return UNet2DConditionModel(
        **common, cross_attention_dim=TEXT_HIDDEN, use_linear_projection=layout == "sd21"
    )


def _vae() -> Any:
    from diffusers import AutoencoderKL

    # Four blocks: the real 8x spatial downscale, with few channels.
    return AutoencoderKL(
        block_out_channels=(8, 16, 16, 16),
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=8,
        sample_size=64,
    )


def _scheduler(layout: Layout) -> Any:
    from diffusers import EulerDiscreteScheduler, PNDMScheduler

    betas = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
    if layout == "sdxl":
        return EulerDiscreteScheduler(**betas, timestep_spacing="leading", steps_offset=1)
    prediction = "v_prediction" if layout == "sd21" else "epsilon"
    return PNDMScheduler(**betas, skip_prk_steps=True, steps_offset=1, prediction_type=prediction)


def build_tiny_sd(out_dir: str | Path, *, layout: Layout = "sd15", seed: int = 0) -> Path:
    """Write a random-weight pipeline of ``layout`` to ``out_dir`` (model_index.json + components)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    out = Path(out_dir)
    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer()
    parts = {
        "vae": _vae(),
        "text_encoder": _text_encoder(tokenizer),
        "tokenizer": tokenizer,
        "unet": _unet(layout),
        "scheduler": _scheduler(layout),
    }
    if layout == "sdxl":
        pipe = StableDiffusionXLPipeline(
            **parts,
            text_encoder_2=_text_encoder(tokenizer, with_projection=True),
            tokenizer_2=tokenizer,
            add_watermarker=False,
        )
    else:
        pipe = StableDiffusionPipeline(
            **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    pipe.save_pretrained(out)
    return out


def build_tiny_controlnet(out_dir: str | Path, sd_dir: str | Path, *, seed: int = 0) -> Path:
    """A random ControlNet shaped after the UNet of the pipeline in ``sd_dir``."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(Path(sd_dir) / "unet")
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    # A fresh ControlNet starts with zero convolutions (no effect at all); random ones make it matter.
    zero_convs = [
        *controlnet.controlnet_down_blocks,
        controlnet.controlnet_mid_block,
        controlnet.controlnet_cond_embedding.conv_out,
    ]
    for zero_conv in zero_convs:
        torch.nn.init.normal_(zero_conv.weight, std=0.1)
    controlnet.save_pretrained(out_dir)
    return Path(out_dir)
