"""A greedy task on a model that ships sampling defaults (as most chat models do) warns nothing: the
sampling knobs are cleared for greedy decoding, which ignores them anyway (docs/operations.md)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from transformers import GenerationConfig
from transformers.utils import logging as hf_logging

from cluster.workers.engines.text_transformers import TransformersTextEngine
from cluster.workers.models.cache import ModelCache
from cluster.workers.models.store import ModelStore
from tests.engines.factories import greedy_args


@pytest.fixture
def transformers_warnings() -> Iterator[list[str]]:
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("transformers")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    logging.Logger.warning_once.cache_clear()  # transformers warns once per process: make this the first
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        hf_logging.set_verbosity(verbosity)


def test_greedy_on_a_model_with_sampling_defaults_warns_nothing(
    tiny_lm_dir: Path, transformers_warnings, tmp_path
):
    # the tiny model ships do_sample, temperature 0.9 and top_k 40, as chat models do
    assert GenerationConfig.from_pretrained(tiny_lm_dir).top_k == 40
    engine = TransformersTextEngine(ModelStore(tmp_path), ModelCache(2**30), "cpu")
    engine.run(greedy_args(tiny_lm_dir))
    assert not [m for m in transformers_warnings if "not valid" in m], transformers_warnings
    # the capture works: the same knobs on a greedy config are what transformers warns about
    GenerationConfig(do_sample=False, top_k=40).validate()
    assert [m for m in transformers_warnings if "not valid" in m]
