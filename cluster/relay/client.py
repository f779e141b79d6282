"""An async client of the relay (PROTOCOL.md, Relay API), signing every request with one account.

Answers fall in three kinds. "Not yet" (404: the relay has not seen the task or the upload yet; 409: it
has not seen the validated result yet), transport failures and 5xx are retried with exponential backoff
until the call's deadline, then ``RelayNotReady``. Refusals (400, 401, 403, 413 and any other 4xx) are
final: ``RelayRefused`` at once, with the relay's reason, because asking again cannot change them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount

from cluster.protocol.receipts import ArgumentsReceipt
from cluster.protocol.signing import bound_params, file_digests, sign_request

log = logging.getLogger(__name__)
NOT_YET_STATUSES = frozenset({404, 409, 425, 429})


class RelayRefused(Exception):
    """The relay refused the request; retrying the same request cannot succeed."""

    def __init__(self, status: int, message: str):
        super().__init__(f"relay refused ({status}): {message}")
        self.status = status
        self.message = message


class RelayNotReady(Exception):
    """The relay kept answering "not yet" (or was unreachable) until the deadline. ``last_status``: the
    HTTP status of its last answer, None when the last attempt got none (the relay unreachable)."""

    def __init__(self, message: str, last_status: int | None = None):
        super().__init__(message)
        self.last_status = last_status

    @property
    def says_missing(self) -> bool:
        """The relay itself answered, last, that it has no such thing yet (404): not an outage."""
        return self.last_status == 404


class RelayClient:
    def __init__(
        self,
        base_url: str,
        account: LocalAccount,
        *,
        timeout_s: float = 30.0,
        backoff_s: float = 0.25,
        max_backoff_s: float = 5.0,
        http: httpx.AsyncClient | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.account = account
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._http = http or httpx.AsyncClient(timeout=timeout_s)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> RelayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the four task endpoints --------------------------------------------------------------------------

    async def upload_args(
        self, task_id: int, task_args: str, *, wait_s: float = 60.0
    ) -> ArgumentsReceipt | None:
        """Uploads the task's arguments; returns the relay's signed receipt of them (None from a relay
        without a receipt key): what refutes a false "no arguments" report (cluster/protocol/receipts.py)."""

        def request() -> httpx.Request:
            path, params = "/v1/inference_tasks", {"task_id": task_id, "task_args": task_args}
            timestamp, signature = self._sign(bound_params("POST", path, params))
            body = {**params, "timestamp": timestamp, "signature": signature}
            return self._http.build_request("POST", f"{self.base_url}{path}", json=body)

        response = await self._until_ready(request, wait_s, f"upload args of task {task_id}")
        receipt = (response.json().get("data") or {}).get("receipt")
        return None if receipt is None else ArgumentsReceipt.from_json(receipt)

    async def get_args(self, task_id: int, *, wait_s: float = 60.0) -> str:
        def request() -> httpx.Request:
            return self._signed_get(f"/v1/inference_tasks/{task_id}", {"task_id": task_id})

        response = await self._until_ready(request, wait_s, f"download args of task {task_id}")
        return response.json()["data"]["task_args"]

    async def upload_results(self, task_id: int, files: list[bytes], *, wait_s: float = 60.0) -> None:
        digests = file_digests(files)

        def request() -> httpx.Request:
            path = f"/v1/inference_tasks/{task_id}/results"
            params = bound_params("POST", path, {"task_id": task_id}, files_sha256=digests)
            timestamp, signature = self._sign(params)
            parts = [("files", (f"{i}", data, "application/octet-stream")) for i, data in enumerate(files)]
            # httpx writes the fields before the files: the relay checks the signature over the declared
            # sha256s before it reads a file (docs/relay.md, "Uploading results")
            fields = {"timestamp": str(timestamp), "signature": signature, "files_sha256": ",".join(digests)}
            return self._http.build_request("POST", f"{self.base_url}{path}", data=fields, files=parts)

        await self._until_ready(request, wait_s, f"upload results of task {task_id}")

    async def get_result(self, task_id: int, index: int, *, wait_s: float = 60.0) -> bytes:
        def request() -> httpx.Request:
            path = f"/v1/inference_tasks/{task_id}/results/{index}"
            return self._signed_get(path, {"task_id": task_id, "index": index})

        response = await self._until_ready(request, wait_s, f"download result {index} of task {task_id}")
        return response.content

    # -- plumbing -----------------------------------------------------------------------------------------

    def _sign(self, params: dict[str, Any]) -> tuple[int, str]:
        return sign_request(params, self.account.key)

    def _signed_get(self, path: str, params: dict[str, Any]) -> httpx.Request:
        timestamp, signature = self._sign(bound_params("GET", path, params))
        query = {"timestamp": timestamp, "signature": signature}
        return self._http.build_request("GET", f"{self.base_url}{path}", params=query)

    async def _until_ready(self, build: Any, wait_s: float, what: str) -> httpx.Response:
        """Send ``build()`` (re-signed each attempt) until it succeeds, is refused, or ``wait_s`` passes."""
        deadline = time.monotonic() + wait_s
        delay_s = self.backoff_s
        while True:
            answer = await self._attempt(build)
            if isinstance(answer, httpx.Response):
                return answer
            status, reason = answer
            if time.monotonic() + delay_s > deadline:
                raise RelayNotReady(f"{what}: still not ready after {wait_s:.0f}s ({reason})", status)
            log.debug(
                "[relay-client] not ready, retrying what=%s reason=%s delay_s=%.2f", what, reason, delay_s
            )
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, self.max_backoff_s)

    async def _attempt(self, build: Any) -> httpx.Response | tuple[int | None, str]:
        """The response, or why to try again: (the HTTP status, None with no answer, and the reason)."""
        try:
            response = await self._http.send(build())
        except httpx.TransportError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        if response.is_success:
            return response
        message = _message(response)
        if response.status_code in NOT_YET_STATUSES or response.status_code >= 500:
            return response.status_code, f"{response.status_code} {message}"
        raise RelayRefused(response.status_code, message)


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", response.text))
    except ValueError:
        return response.text[:200]
