"""The devnet's chat model: a tiny Llama trained here, in seconds, on ``corpus.txt`` (shipped with the code).

A random-weight model answers in byte noise, which shows nothing of the text path. This one learns the
chat format and the sentences of a short text, so a chat task (from the application, the bridge's API or
its chat page) comes back in words. It is small enough to train on two CPU cores in well under a minute;
the devnet caches it with its other models.
"""

from __future__ import annotations

import hashlib
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch

CORPUS_PATH = Path(__file__).with_name("corpus.txt")
NUM_STEPS = 240  # about 10 s on two cores; the answers are whole sentences of the text from about 150
STAMP_NAME = "helium-recipe.txt"
SYSTEM_PROMPTS = ("You are a devnet model.", "You are a helpful assistant.", "You are terse.")


def corpus_sentences(corpus: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", corpus) if s.strip()]


def corpus_words(corpus: str) -> set[str]:
    """The lower-case words of the text: what an answer of the trained model is made of."""
    return set(re.findall(r"[a-z]+", corpus.lower()))


def share_of_corpus_words(text: str, words: set[str]) -> float:
    """How much of ``text`` is words of the corpus (0 for no words at all): above 0.8 reads as words."""
    found = re.findall(r"[a-z]+", text.lower())
    return sum(word in words for word in found) / len(found) if found else 0.0


def _chat_samples(tokenizer: Any, sentences: list[str], num_samples: int, rng: random.Random) -> list[str]:
    """Conversations in the model's own chat template: a prompt of any kind, then sentences of the text."""
    samples = []
    for n in range(num_samples):
        start, num_words = rng.randrange(len(sentences)), rng.randint(10, 30)
        answer = sentences[start]  # whole sentences, at least ten words: an answer, not a greeting
        while len(answer.split()) < num_words:
            start = (start + 1) % len(sentences)
            answer += " " + sentences[start]
        # prompts like the devnet's ("Task 7"), the chat page's, and the corpus's own questions
        prompt = rng.choice(
            [f"Task {n}", rng.choice(sentences), " ".join(rng.sample(sentences, 1)[0].split()[:4])]
        )
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        if rng.random() < 0.7:
            messages.insert(0, {"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        samples.append(tokenizer.apply_chat_template(messages, tokenize=False))
    return samples


def train_text_model(
    out_dir: str | Path,
    *,
    corpus_path: Path = CORPUS_PATH,
    num_steps: int = NUM_STEPS,
    seed: int = 0,
) -> Path:
    """Train the chat model on ``corpus_path`` and save it (weights, tokenizer, generation config)."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from cluster.workers.models.builders import train_bpe_tokenizer

    corpus = corpus_path.read_text()
    sentences = corpus_sentences(corpus)
    if len(sentences) < 3:
        raise ValueError(f"{corpus_path} holds {len(sentences)} sentence(s); the model needs a few to learn")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    tokenizer = train_bpe_tokenizer(768, corpus=corpus)
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=96, intermediate_size=192, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=None, eos_token_id=eos_id, pad_token_id=pad_id, tie_word_embeddings=True,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    # NOTE: one thread: a model this small gains nothing from two, and on a busy machine OpenMP's threads
    # wait on each other at every operation (a 10 s training took a minute beside other work).
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _fit(model, tokenizer, sentences, num_steps, rng, pad_id)
    finally:
        torch.set_num_threads(num_threads)
    model.eval()
    model.generation_config = GenerationConfig(
        do_sample=True,
        temperature=0.7,
        top_p=0.9,
        max_new_tokens=32,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _fit(
    model: Any, tokenizer: Any, sentences: list[str], num_steps: int, rng: random.Random, pad_id: int
) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=3e-3, total_steps=num_steps, pct_start=0.1
    )
    model.train()
    for _ in range(num_steps):
        batch = tokenizer(_chat_samples(tokenizer, sentences, 16, rng), return_tensors="pt", padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)


def recipe_stamp(corpus_path: Path = CORPUS_PATH, num_steps: int = NUM_STEPS) -> str:
    """What the cached model was made from: a new text or recipe trains it again."""
    digest = hashlib.sha256(corpus_path.read_bytes() + Path(__file__).read_bytes()).hexdigest()
    return f"{digest[:16]}-{num_steps}"


def ensure_text_model(out_dir: Path) -> Path:
    """The trained model in ``out_dir``, trained now unless a model of the same recipe is there."""
    stamp_file = out_dir / STAMP_NAME
    if stamp_file.exists() and stamp_file.read_text() == recipe_stamp():
        return out_dir
    shutil.rmtree(out_dir, ignore_errors=True)
    train_text_model(out_dir)
    stamp_file.write_text(recipe_stamp())  # last: a run stopped halfway trains again
    return out_dir
