"""Waiting for a service started as a real process to answer its first request."""

from __future__ import annotations

import subprocess
import time

import httpx


def first_answer(url: str, process: subprocess.Popen[str], *, what: str, timeout_s: float) -> httpx.Response:
    """GET ``url`` until the service answers; fails if ``process`` exits or ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            assert time.monotonic() < deadline and process.poll() is None, f"the {what} did not come up"
            time.sleep(0.2)
