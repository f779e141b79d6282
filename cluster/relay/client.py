"""An async client of the relay (PROTOCOL.md, Relay API), signing every request with one account.

Answers fall in three kinds. "Not yet" (404: the relay has not seen the task or the upload yet; 409: it
has not seen the validated result yet), transport failures and 5xx are retried with exponential backoff
until the call's deadline, then ``RelayNotReady``. Refusals (400, 401, 403, 413 and any other 4xx) are
final: ``RelayRefused`` at once, with the relay's reason, because asking again cannot change them.

Requests go over httpx (the default, and whatever ``httpx.AsyncClient`` is given) or over an aiohttp
session (``session=``): the coordinator's hundreds of rounds share one aiohttp session, whose cost per
request stays about 0.3 ms of CPU where httpx's connection pool walks all its connections and waiting
requests on every request and every response (7 ms a request with 300 rounds waiting:
benchmarks/results/cluster_overhead.md, "Where a round's CPU goes").
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
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

    def __reduce__(self) -> tuple[Any, ...]:  # whole across processes (a round driver's error)
        return (type(self), (str(self), self.last_status))

    @property
    def says_missing(self) -> bool:
        """The relay itself answered, last, that it has no such thing yet (404): not an outage."""
        return self.last_status == 404


@dataclass(frozen=True)
class RelayRequest:
    """One signed request, as either transport sends it: a query (``params``), a JSON body (``json``), or
    form ``fields`` followed by ``files`` (fields first: the relay checks the signature over the declared
    sha256s before it reads a file, docs/relay.md, "Uploading results")."""

    method: str
    url: str
    params: dict[str, Any] | None = None
    json: dict[str, Any] | None = None
    fields: dict[str, str] | None = None
    files: list[bytes] = field(default_factory=list)


@dataclass(frozen=True)
class RelayAnswer:
    status_code: int
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


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
        session: aiohttp.ClientSession | None = None,
    ):
        """``http``: the httpx client to send through (closed by ``aclose``); ``session``: an aiohttp
        session to send through instead, shared and closed by its owner."""
        if http is not None and session is not None:
            raise ValueError("one transport: an httpx client or an aiohttp session")
        self.base_url = base_url.rstrip("/")
        self.account = account
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._session = session
        self._http = None if session is not None else (http or httpx.AsyncClient(timeout=timeout_s))

    async def aclose(self) -> None:
        if self._http is not None:
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

        def request() -> RelayRequest:
            path, params = "/v1/inference_tasks", {"task_id": task_id, "task_args": task_args}
            timestamp, signature = self._sign(bound_params("POST", path, params))
            body = {**params, "timestamp": timestamp, "signature": signature}
            return RelayRequest("POST", f"{self.base_url}{path}", json=body)

        response = await self._until_ready(request, wait_s, f"upload args of task {task_id}")
        receipt = (response.json().get("data") or {}).get("receipt")
        return None if receipt is None else ArgumentsReceipt.from_json(receipt)

    async def get_args(self, task_id: int, *, wait_s: float = 60.0) -> str:
        def request() -> RelayRequest:
            return self._signed_get(f"/v1/inference_tasks/{task_id}", {"task_id": task_id})

        response = await self._until_ready(request, wait_s, f"download args of task {task_id}")
        return response.json()["data"]["task_args"]

    async def upload_results(
        self,
        task_id: int,
        files: list[bytes],
        *,
        wait_s: float = 60.0,
        sealed: tuple[bytes, bytes] | None = None,
    ) -> None:
        """Uploads the task's result files: the result node's, after the task's TaskSuccess; or, with
        ``sealed=(result, nonce)``, a sampled task's first node's early upload, before its decision, which
        the relay checks against round 0's commitment on chain (docs/relay.md, "Sampled tasks"). The early
        upload is answered "not yet", and retried, until the relay has seen that commitment."""
        digests = file_digests(files)
        opened = {} if sealed is None else {"result": "0x" + sealed[0].hex(), "nonce": "0x" + sealed[1].hex()}

        def request() -> RelayRequest:
            path = f"/v1/inference_tasks/{task_id}/results"
            params = bound_params("POST", path, {"task_id": task_id, **opened}, files_sha256=digests)
            timestamp, signature = self._sign(params)
            fields = {"timestamp": str(timestamp), "signature": signature, "files_sha256": ",".join(digests)}
            fields.update(opened)  # after files_sha256, before the files
            return RelayRequest("POST", f"{self.base_url}{path}", fields=fields, files=files)

        what = "early upload" if sealed is not None else "upload"
        await self._until_ready(request, wait_s, f"{what} results of task {task_id}")

    async def get_result(self, task_id: int, index: int, *, wait_s: float = 60.0) -> bytes:
        def request() -> RelayRequest:
            path = f"/v1/inference_tasks/{task_id}/results/{index}"
            return self._signed_get(path, {"task_id": task_id, "index": index})

        response = await self._until_ready(request, wait_s, f"download result {index} of task {task_id}")
        return response.content

    # -- plumbing -----------------------------------------------------------------------------------------

    def _sign(self, params: dict[str, Any]) -> tuple[int, str]:
        return sign_request(params, self.account.key)

    def _signed_get(self, path: str, params: dict[str, Any]) -> RelayRequest:
        timestamp, signature = self._sign(bound_params("GET", path, params))
        query = {"timestamp": str(timestamp), "signature": signature}
        return RelayRequest("GET", f"{self.base_url}{path}", params=query)

    async def _until_ready(self, build: Callable[[], RelayRequest], wait_s: float, what: str) -> RelayAnswer:
        """Send ``build()`` (re-signed each attempt) until it succeeds, is refused, or ``wait_s`` passes."""
        deadline = time.monotonic() + wait_s
        delay_s = self.backoff_s
        while True:
            answer = await self._attempt(build)
            if isinstance(answer, RelayAnswer):
                return answer
            status, reason = answer
            if time.monotonic() + delay_s > deadline:
                raise RelayNotReady(f"{what}: still not ready after {wait_s:.0f}s ({reason})", status)
            log.debug(
                "[relay-client] not ready, retrying what=%s reason=%s delay_s=%.2f", what, reason, delay_s
            )
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, self.max_backoff_s)

    async def _attempt(self, build: Callable[[], RelayRequest]) -> RelayAnswer | tuple[int | None, str]:
        """The response, or why to try again: (the HTTP status, None with no answer, and the reason)."""
        try:
            response = await self._send(build())
        except (httpx.TransportError, aiohttp.ClientError, TimeoutError) as exc:
            return None, f"{type(exc).__name__}: {exc}"
        if response.is_success:
            return response
        message = _message(response)
        if response.status_code in NOT_YET_STATUSES or response.status_code >= 500:
            return response.status_code, f"{response.status_code} {message}"
        raise RelayRefused(response.status_code, message)

    async def _send(self, request: RelayRequest) -> RelayAnswer:
        if self._session is None:
            assert self._http is not None
            parts = [
                ("files", (f"{i}", data, "application/octet-stream")) for i, data in enumerate(request.files)
            ]
            built = self._http.build_request(
                request.method, request.url, params=request.params, json=request.json, data=request.fields,
                files=parts or None,
            )  # fmt: skip
            response = await self._http.send(built)
            return RelayAnswer(response.status_code, response.content)
        body: aiohttp.FormData | None = None
        if request.fields is not None:
            body = aiohttp.FormData(request.fields)  # the fields first, then the files
            for i, data in enumerate(request.files):
                body.add_field("files", data, filename=f"{i}", content_type="application/octet-stream")
        async with self._session.request(
            request.method, request.url, params=request.params, json=request.json, data=body
        ) as response:
            return RelayAnswer(response.status, await response.read())


def _message(response: RelayAnswer) -> str:
    try:
        return str(response.json().get("message", response.text))
    except ValueError:
        return response.text[:200]
