"""Small random-weight text models built on the spot, saved so that they load through the real path.

``build_tiny_causal_lm`` writes a Llama-layout model, a byte-level BPE tokenizer trained here with the
``tokenizers`` library, a ChatML chat template that renders tools, and a generation config. Tests and
the local network use it; nothing is downloaded. ``qwen_config`` gives the real shapes of Qwen2.5 for
throughput benchmarks (random weights, so only speed is meaningful, never the text).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{%- for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "{%- if message.tool_calls %}{{ message.tool_calls | tojson }}{% endif %}<|im_end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = (
    "The quick brown fox jumps over the lazy dog. A decentralized network runs tasks on GPUs. "
    "Three nodes run every task and their results must match bit for bit. Hello, how are you today? "
    "Stable Diffusion draws images; language models write text. 0123456789 + - * / = ( ) [ ] { } : ; ! ?"
)


@dataclass(frozen=True, slots=True)
class TinyLMShape:
    vocab_size: int = 384
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 2048


def train_bpe_tokenizer(vocab_size: int, corpus: str = _CORPUS) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``corpus`` (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([corpus] * 8, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_causal_lm(
    out_dir: str | Path,
    *,
    shape: TinyLMShape = TinyLMShape(),
    seed: int = 0,
    with_chat_template: bool = True,
    generation_overrides: dict[str, Any] | None = None,
) -> Path:
    """Write a random Llama-layout causal LM with its tokenizer to ``out_dir`` and return the path."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tokenizer = train_bpe_tokenizer(shape.vocab_size)
    if not with_chat_template:
        tokenizer.chat_template = None
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=shape.max_position_embeddings,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        tie_word_embeddings=True,
        initializer_range=0.5,  # peaked next-token distributions, so that greedy decoding has clear winners
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    # A chat model's usual shipped defaults; tasks and engine defaults are laid over them.
    generation = {
        "do_sample": True,
        "temperature": 0.9,
        "top_k": 40,
        "max_new_tokens": 16,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        **(generation_overrides or {}),
    }
    model.generation_config = GenerationConfig(**generation)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# --- the real shapes of Qwen2.5 (config.json of Qwen/Qwen2.5-0.5B-Instruct and -1.5B-Instruct) ---

QWEN25_SHAPES: dict[str, dict[str, int]] = {
    "0.5b": {
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
    },
    "1.5b": {
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
    },
}
QWEN25_VOCAB_SIZE = 151_936


def qwen_config(size: str) -> Any:
    """A Qwen2 config with the shapes of Qwen2.5-``size`` (tied embeddings, as both checkpoints ship)."""
    from transformers import Qwen2Config

    if size not in QWEN25_SHAPES:
        raise ValueError(f"{size=} is not one of {sorted(QWEN25_SHAPES)}")
    return Qwen2Config(
        vocab_size=QWEN25_VOCAB_SIZE,
        max_position_embeddings=32_768,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
        eos_token_id=151_645,
        pad_token_id=151_643,
        **QWEN25_SHAPES[size],
    )


def build_qwen_shaped(
    out_dir: str | Path, size: str, *, seed: int = 0, dtype: torch.dtype = torch.bfloat16
) -> Path:
    """Random weights with Qwen2.5-``size`` shapes and the tiny BPE tokenizer (ids it lacks decode to "")."""
    from transformers import AutoModelForCausalLM

    out = Path(out_dir)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(qwen_config(size), dtype=dtype).eval()
    model.save_pretrained(out)
    train_bpe_tokenizer(TinyLMShape().vocab_size).save_pretrained(out)
    return out
