"""Failpoints reach only a set checkpoint; the tests' one corruption fake is consistent but wrong."""

from __future__ import annotations

import io
import json

from PIL import Image

from cluster.failpoints import NO_FAILPOINTS, Failpoints
from cluster.protocol.hashes import gpt_result
from cluster.protocol.phash import sd_result, sd_results_match
from cluster.protocol.task import TaskType
from tests.faults import corrupt_result


def test_corrupt_result_is_consistent_but_wrong() -> None:
    response = {"model": "m", "choices": [{"message": {"role": "assistant", "content": "hi"}}], "usage": {}}
    honest = json.dumps(response).encode()
    files, result = corrupt_result(TaskType.GPT, [honest])
    assert result == gpt_result(files[0]) != gpt_result(honest)
    assert json.loads(files[0])["choices"][0]["message"]["content"] == "ih [corrupt]"

    buffer = io.BytesIO()
    Image.linear_gradient("L").convert("RGB").save(buffer, format="PNG")
    files, result = corrupt_result(TaskType.SD, [buffer.getvalue()])
    assert Image.open(io.BytesIO(files[0])).size == (256, 256)
    assert result == sd_result(files) and not sd_results_match(result, sd_result([buffer.getvalue()]))


def test_checkpoints_reach_only_a_set_failpoint() -> None:
    reached: list[tuple[str, str]] = []
    NO_FAILPOINTS.reached("before_commit", "task=1:round=0")  # production: nothing happens
    Failpoints(checkpoint=lambda *point: reached.append(point)).reached("after_commit", "task=7:round=2")
    assert reached == [("after_commit", "task=7:round=2")]
