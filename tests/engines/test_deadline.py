"""A job past its deadline stops while it generates, and a prompt the model cannot hold is refused at once:
a 1 MiB prompt kept three workers of a card model busy past its task's cancel."""

from __future__ import annotations

import itertools

import pytest

from cluster.protocol.errors import ArgumentsInvalid
from cluster.workers.engines import deadline
from cluster.workers.engines.deadline import JobPastDeadline, job_deadline
from cluster.workers.engines.text_transformers import TransformersTextEngine
from tests.engines.factories import gpt_args, sd_args


class TickingClock:
    """time.time() that moves one second each time it is read: the deadline passes after a known number
    of checks, whatever the machine's speed."""

    def __init__(self) -> None:
        self.ticks = itertools.count()

    def time(self) -> float:
        return float(next(self.ticks))


def test_text_generation_stops_at_the_deadline_not_at_max_new_tokens(text_engine, tiny_lm_dir, monkeypatch):
    monkeypatch.setattr(deadline, "time", TickingClock())
    generated: list[int] = []
    original = TransformersTextEngine._generate

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        rows = original(self, *args, **kwargs)
        generated.append(len(rows[0]))
        return rows

    monkeypatch.setattr(TransformersTextEngine, "_generate", spy)
    args = gpt_args(tiny_lm_dir, max_new_tokens=200, do_sample=True, temperature=1.0)
    with job_deadline(5.5), pytest.raises(JobPastDeadline):  # past it from the 7th check on
        text_engine.run(args)
    assert generated and generated[0] < 20  # stopped between tokens, not after 200 of them


def test_a_job_within_its_deadline_gives_the_same_bytes(text_engine, tiny_lm_dir):
    args = gpt_args(tiny_lm_dir, seed=3)
    alone = text_engine.run(args).files
    with job_deadline(4_000_000_000.0):
        assert text_engine.run(args).files == alone


def test_image_generation_stops_at_the_deadline(image_engine, tiny_sd_dir):
    with job_deadline(0.0), pytest.raises(JobPastDeadline):  # long past
        image_engine.run(sd_args(tiny_sd_dir))


def test_a_prompt_longer_than_the_models_context_is_refused_at_once(text_engine, tiny_lm_dir, monkeypatch):
    def no_generation(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the engine generated over a prompt its model cannot hold")

    monkeypatch.setattr(TransformersTextEngine, "_generate", no_generation)
    with pytest.raises(ArgumentsInvalid) as err:
        text_engine.run(gpt_args(tiny_lm_dir, content="hello " * 5000))
    assert "context" in err.value.message and err.value.fields == ("messages",)
