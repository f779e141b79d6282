"""Who may make a relay request: the signer recovered from it, checked against what the chain said.

``RelayAccess`` is the relay's state the endpoints share (``app.state.relay``, reached through
``RelayDep``): its settings, the task records the follower keeps, the file store and the clock that
judges a signature's timestamp.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from cluster.protocol.receipts import ArgumentsReceipt, sign_receipt
from cluster.protocol.signing import SignatureInvalid, SignatureRefusal, verify_request
from network.relay.config import RelayConfig
from network.relay.errors import RelayError, not_yet
from network.relay.files import FileStore
from network.relay.store import RelayStore, TaskRecord

REFUSAL_STATUS = {
    SignatureRefusal.MALFORMED: 401,
    SignatureRefusal.STALE: 401,
    SignatureRefusal.WRONG_SIGNER: 403,
}


@dataclass(frozen=True)
class RelayAccess:
    config: RelayConfig
    store: RelayStore
    files: FileStore
    clock: Callable[[], float]

    def signer_of(
        self, params: dict[str, Any], timestamp: int, signature: str, allowed: set[str] | None, what: str
    ) -> str:
        """The request's signer; ``allowed`` None accepts any signer (the caller decides)."""
        try:
            return verify_request(
                params, timestamp, signature, now=self.clock(),
                expected_signers=None if allowed is None else sorted(allowed),
                max_skew_s=self.config.max_clock_skew_s,
            )  # fmt: skip
        except SignatureInvalid as exc:
            if exc.reason is SignatureRefusal.WRONG_SIGNER:
                message = f"{what}: the signer is not allowed ({exc.message})"
            else:
                message = f"{what}: {exc.message}"
            raise RelayError(REFUSAL_STATUS[exc.reason], message) from None

    def receipt(self, task_id: int, stored_at: float) -> ArgumentsReceipt | None:
        """The relay's signed word that it stored the task's arguments at ``stored_at`` (None without a
        receipt key): what refutes a false "no arguments" report on chain (cluster/protocol/receipts.py)."""
        key, chain_id = self.config.receipt_key, self.config.chain_id
        if key is None or chain_id is None:
            return None
        task_address = self.config.task_address
        return sign_receipt(key.get_secret_value(), chain_id, task_address, task_id, int(stored_at))

    def seen(self, task_id: int) -> TaskRecord:
        """The task as the relay saw it on chain; "not yet" (404) before its TaskPending."""
        return _seen(task_id, self.store.get(task_id))

    async def seen_async(self, task_id: int) -> TaskRecord:
        """``seen`` for an async endpoint: the event loop serves other requests while the database reads."""
        return _seen(task_id, await self.store.get_async(task_id))


def _seen(task_id: int, task: TaskRecord | None) -> TaskRecord:
    if task is None:
        raise not_yet(f"task {task_id} has not been seen on chain yet")
    return task


async def relay_of(request: Request) -> RelayAccess:
    """Async: FastAPI runs a plain ``def`` dependency in its thread pool, one more hop per request."""
    return request.app.state.relay


RelayDep = Annotated[RelayAccess, Depends(relay_of)]
