"""The devnet's chat model answers chat tasks in words of its training text, through the real text engine."""

from __future__ import annotations

import json
from pathlib import Path

from cluster.protocol.task import TaskType, parse_task_args
from cluster.workers.engines.text_transformers import TransformersTextEngine
from cluster.workers.models.builders import build_tiny_causal_lm
from cluster.workers.models.cache import ModelCache
from cluster.workers.models.store import ModelStore
from network.devnet.models import gpt_task
from network.devnet.text_model import (
    CORPUS_PATH,
    STAMP_NAME,
    corpus_words,
    ensure_text_model,
    share_of_corpus_words,
)

MOSTLY = 0.8  # share of an answer's words that are words of the training text


def answers(model: Path, tmp_path: Path, seeds: range) -> list[str]:
    """The devnet's own chat tasks (sampled, one seed each) run by the engine the workers use."""
    engine = TransformersTextEngine(ModelStore(tmp_path / "hub"), ModelCache(2**30), "cpu")
    found = []
    for seed in seeds:
        result = engine.run(parse_task_args(TaskType.GPT, gpt_task(model, seed)))
        found.append(json.loads(result.files[0])["choices"][0]["message"]["content"])
    return found


def test_the_chat_model_answers_in_words_of_its_text(chat_model_dir, tmp_path):
    words = corpus_words(CORPUS_PATH.read_text())
    for answer in answers(chat_model_dir, tmp_path, range(6)):
        assert len(answer.split()) >= 3 and share_of_corpus_words(answer, words) >= MOSTLY, answer


def test_a_random_weight_model_does_not_pass_for_words(tmp_path):
    """The measure tells words from noise: the random model the devnet used before fails it."""
    noise = build_tiny_causal_lm(tmp_path / "random")
    words = corpus_words(CORPUS_PATH.read_text())
    assert all(share_of_corpus_words(a, words) < MOSTLY for a in answers(noise, tmp_path, range(3)))


def test_the_trained_model_is_cached_by_its_recipe(chat_model_dir, tmp_path):
    weights = next(chat_model_dir.glob("*.safetensors"))
    before = weights.stat().st_mtime_ns
    assert ensure_text_model(chat_model_dir) == chat_model_dir  # same text and recipe: not trained again
    assert weights.stat().st_mtime_ns == before
    assert (chat_model_dir / STAMP_NAME).read_text()
