"""Requests that used to crash or exhaust the relay, sent to a relay process (so that a crash is observed,
not suffered): refused with a 4xx, the process alive, nothing stored."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from cluster.protocol.phash import MAX_IMAGE_PIXELS, phash_bytes

DEEP = 100_000  # levels: 75,000 and more overflowed the C stack (py_ecc raises the recursion limit)


@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [
        ("/v1/inference_tasks", "[" * DEEP + "]" * DEEP, "application/json"),
        ("/v1/inference_tasks", '{"a":' * DEEP + "1" + "}" * DEEP, "application/json"),
        ("/v1/inference_tasks", "[" * DEEP, None),  # no type: FastAPI reads it as JSON too
        ("/v1/inference_tasks/1/results", "[" * DEEP, "application/json"),
    ],
)
def test_a_deeply_nested_body_is_refused_and_the_relay_lives(relay_process, path, body, content_type):
    headers = {} if content_type is None else {"content-type": content_type}
    response = httpx.post(relay_process.url + path, content=body, headers=headers, timeout=60)
    assert response.status_code == 400 and "nests" in response.json()["message"]
    assert relay_process.proc.poll() is None and relay_process.status()["next_block"] is not None


def test_each_route_takes_only_the_body_it_needs(relay_process):
    # a GET carries no upload: a 1 MiB body is refused before it is read, with or without a length
    big = b"x" * (1024 * 1024)
    refused = httpx.request("GET", relay_process.url + "/v1/network", content=big, timeout=60)
    assert refused.status_code == 413 and "limit" in refused.json()["message"]

    def chunks():
        yield from (big[i : i + 65536] for i in range(0, len(big), 65536))

    chunked = httpx.post(relay_process.url + "/v1/relay", content=chunks(), timeout=60)
    assert chunked.status_code == 413
    # the argument upload takes up to its own limit, far above a GET's
    accepted_size = httpx.post(
        relay_process.url + "/v1/inference_tasks", content=b'{"task_id": 1, "x": "' + big + b'"}', timeout=60,
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert accepted_size.status_code == 400  # read and refused for its fields, not its size
    assert relay_process.proc.poll() is None


def test_an_image_is_refused_by_its_header_before_its_pixels_are_decoded():
    side = 6000  # 36 M pixels: a 34 KiB PNG that decodes to 1.5 GB
    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, format="PNG", optimize=True)
    assert len(buffer.getvalue()) < 100_000 and side * side > MAX_IMAGE_PIXELS
    with pytest.raises(ValueError, match="pixels"):
        phash_bytes(buffer.getvalue())
