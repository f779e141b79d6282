"""The devnet's models, made on the spot (no hub) and cached between runs: a chat model trained on the
project's own short text (``text_model.py``), and a tiny random-weight Stable Diffusion."""

from __future__ import annotations

import json
from pathlib import Path


def ensure_models(models_dir: Path) -> dict[str, Path]:
    """Make the text and image models once; later runs reuse them (the text model is trained again when
    its text or its recipe changed)."""
    from cluster.workers.models.sd_builders import build_tiny_sd
    from network.devnet.text_model import ensure_text_model

    paths = {"gpt": models_dir / "tiny-chat", "sd": models_dir / "tiny-sd"}
    ensure_text_model(paths["gpt"])
    if not (paths["sd"] / "model_index.json").exists():
        build_tiny_sd(paths["sd"])
    return paths


def gpt_task(model: Path, i: int) -> str:
    """A chat task on the tiny model; sampled, so each seed gives its own answer."""
    messages = [
        {"role": "system", "content": "You are a devnet model."},
        {"role": "user", "content": f"Task {i}"},
    ]
    config = {"max_new_tokens": 24, "do_sample": True, "temperature": 0.9, "top_p": 0.95}
    return json.dumps({"model": str(model), "messages": messages, "seed": i, "generation_config": config})


def sd_task(model: Path, i: int) -> str:
    config = {"image_width": 64, "image_height": 64, "steps": 2, "seed": i, "num_images": 2, "cfg": 5.0}
    return json.dumps({"base_model": str(model), "prompt": f"a devnet picture {i}", "task_config": config})
