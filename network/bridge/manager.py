"""Runs the bridge's tasks: pays for them, follows them, keeps their results; cancels the overdue ones.

Each task has one worker coroutine. It submits under the task's bridge id as request id (idempotent
across restarts), then follows the chain until the result is validated and downloaded, or the task is
aborted. A failure is classified once (``cluster.failures.classify``): the moment's failures (the chain
or the relay unreachable, a transaction not mined yet) are retried; anything else ends the task as
failed, with its reason, once. A sweep cancels tasks past the bridge's deadline (``task_timeout_s``),
failed ones whose task was created included: a queued task at once, a started one once its on-chain
deadline passed; the refund comes back to the wallet. A task past that deadline with no chain task
(the chain unreachable all along) ends failed, once its request is retired (``retire_request``: a
createTask signed under its idempotency key is settled, never left for a restart to send): by its
worker, between attempts, when none of its own sends can be in flight, or by the sweep once it failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from cluster.chain.task_events import TaskEvent, TaskStarted
from cluster.failures import Failure, classify
from cluster.protocol.gpt import GPTTaskArgs, require_text_only
from cluster.protocol.task import parse_task_args
from network.app import (
    ApplicationClient,
    ArgumentsNotDelivered,
    ContractRejected,
    SampledFeeTooHigh,
    TaskAbortedError,
    TaskTimeout,
)
from network.bridge.config import VALIDATIONS, ApiKey, BridgeConfig, ModelSpec, ValidationName
from network.bridge.tasks import BridgeTask, EventView, SpendLimits, TaskStore

log = logging.getLogger(__name__)
FOLLOW_SLICE_S = 30.0  # a worker re-reads its row this often while it waits on the chain
RETRY_S = 2.0


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, int) and abs(value) >= 2**53:
        return str(value)
    return value


class TaskManager:
    def __init__(self, config: BridgeConfig, app: ApplicationClient, store: TaskStore):
        self.config = config
        self.app = app
        self.store = store
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._changed: dict[str, asyncio.Condition] = {}
        self._sweeper: asyncio.Task[None] | None = None

    # -- life cycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        for record in self.store.unfinished():  # a restarted bridge picks up where it stopped
            self._spawn(record.id)
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        tasks = [*self._workers.values(), *([self._sweeper] if self._sweeper else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- creating and reading -------------------------------------------------------------------------

    async def fee_for(self, model: ModelSpec, task_args: str, validation: ValidationName = "full") -> int:
        """The model's fixed fee, or the chain-priced default of the validation (a sampled task's is about
        0.41 of the Full one at N = 10). A sampled fee whose run pay exceeds the network's bound
        (nodeStake / (2 N)) raises ``SampledFeeTooHigh``, before anything is recorded or paid."""
        chosen = VALIDATIONS[validation]
        fee = model.fee_wei or await self.app.quote(model.task_type, task_args, validation=chosen)
        if validation != "full":
            terms = await self.app.audit_terms()
            if terms.samples and terms.run_pay(fee) > terms.max_run_pay_wei:
                raise SampledFeeTooHigh(fee, terms.run_pay(fee), terms.max_run_pay_wei, terms.audit_rate)
        return fee

    async def balance(self) -> int:
        return await self.app.w3.eth.get_balance(self.app.account.address)

    def create(
        self, kind: str, model: ModelSpec, task_args: str, fee_wei: int, vram_limit: int, *,
        key: ApiKey, balance_wei: int, validation: ValidationName = "full",
    ) -> BridgeTask:  # fmt: skip
        """Record and start the task, if the wallet and the key's limits allow its fee (``SpendRefused``)."""
        args = parse_task_args(model.task_type, task_args)  # raises ArgumentsInvalid: the caller's 400
        if isinstance(args, GPTTaskArgs):
            require_text_only(args)  # nodes would report the task error after it was paid for
        now = time.time()
        record = BridgeTask(
            id=f"task_{uuid.uuid4().hex}", kind=kind, model=model.id, task_type=model.task_type,
            task_args=task_args, vram_limit=vram_limit or model.vram_limit, fee_wei=fee_wei,
            created_at=now, deadline=now + self.config.task_timeout_s, key_name=key.name,
            validation=validation,
        )  # fmt: skip
        limits = SpendLimits(
            key.name, key.max_fee_wei, key.max_wei_per_day, key.max_wei_total, day_start=now - now % 86_400
        )
        self.store.add_if_affordable(
            record, balance_wei=balance_wei, reserve_wei=self.config.gas_reserve_wei, limits=limits
        )
        self._spawn(record.id)
        return record

    def get(self, task_id: str) -> BridgeTask | None:
        return self.store.get(task_id)

    async def wait_change(self, task_id: str, timeout_s: float) -> None:
        """Return when the task's row changes (or after ``timeout_s``)."""
        condition = self._changed.setdefault(task_id, asyncio.Condition())
        async with condition:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(condition.wait(), timeout_s)

    async def wait_done(self, task_id: str) -> BridgeTask:
        while True:
            record = self.store.get(task_id)
            assert record is not None
            if record.done:
                return record
            await self.wait_change(task_id, 1.0)

    # -- the worker -----------------------------------------------------------------------------------

    def _spawn(self, task_id: str) -> None:
        self._workers[task_id] = asyncio.create_task(self._work(task_id), name=f"bridge {task_id}")
        self._workers[task_id].add_done_callback(lambda _: self._workers.pop(task_id, None))

    async def _update(self, record_id: str, /, **fields: Any) -> None:
        self.store.update(record_id, **fields)
        condition = self._changed.setdefault(record_id, asyncio.Condition())
        async with condition:
            condition.notify_all()

    async def _work(self, task_id: str) -> None:
        while True:
            record = self.store.get(task_id)
            if record is None or record.done:
                return
            try:
                if record.task_id is None and time.time() >= record.deadline:
                    if await self._retire_overdue(record) is None:
                        return
                    continue  # its task was created after all: follow it (the sweep cancels it)
                await self._advance(record)
            except asyncio.CancelledError:
                raise
            except TaskAbortedError as exc:
                await self._update(task_id, status="aborted", reason=exc.reason, refund_wei=exc.refund_wei)
            except ContractRejected as exc:  # createTask refused (nothing spent at estimation)
                await self._update(task_id, status="aborted", reason=f"createTask refused: {exc.reason}")
            except SampledFeeTooHigh as exc:  # the audit rate rose since the fee was checked: nothing sent
                await self._update(task_id, status="aborted", reason=str(exc))
            except ArgumentsNotDelivered as exc:  # the client cancelled the task for its refund
                await self._update(task_id, status="aborted", reason=str(exc), refund_wei=exc.refund_wei)
            except TaskTimeout:
                continue  # still running on chain: keep following (the sweep cancels it when overdue)
            except Exception as exc:
                if classify(exc) is Failure.TRANSIENT:  # the relay or the RPC down, a transaction pending
                    log.warning("bridge task %s: %r; retrying", task_id, exc)
                    await asyncio.sleep(RETRY_S)
                    continue
                log.error("bridge task %s failed for good", task_id, exc_info=exc)
                await self._update(task_id, status="failed", reason=f"{type(exc).__name__}: {exc}")
                return

    async def _retire_overdue(self, record: BridgeTask) -> int | None:
        """A record past its deadline with no task id: the chain task its request created after all
        (recorded, so the sweep cancels it), or None: nothing was paid, and the record ends failed (one
        that failed already keeps its reason)."""
        task_id = await self.app.retire_request(record.id)
        if task_id is not None:
            await self._update(record.id, task_id=task_id)
        elif record.status == "failed":
            await self._update(record.id, swept=True)
        else:
            reason = "no chain task was created before the bridge's deadline; nothing was paid"
            await self._update(record.id, status="failed", reason=reason, swept=True)
        return task_id

    async def _advance(self, record: BridgeTask) -> None:
        submission = await self.app.submit_request(
            record.task_type, record.task_args, fee_wei=record.fee_wei, vram_limit=record.vram_limit,
            request_id=record.id, validation=VALIDATIONS[record.validation],
        )  # fmt: skip
        if record.task_id is None:
            await self._update(record.id, task_id=submission.task_id, fee_wei=submission.fee_wei)
        seen = 0
        events = list(record.events)

        async def progress(event: TaskEvent) -> None:
            nonlocal seen
            seen += 1
            if seen <= len(events):  # replayed after a restart or a retry: already recorded
                return
            # The API shows each chain event under its ABI names, as an explorer would.
            args = {k: _jsonable(v) for k, v in event.raw.args.items()}
            events.append(EventView(name=event.name, at=time.time(), args=args))
            fields: dict[str, Any] = {"events": events}
            if isinstance(event, TaskStarted):
                current = self.store.get(record.id)
                nodes = [*(current.selected_nodes if current else []), event.node]
                fields.update(selected_nodes=nodes, status="running")
            await self._update(record.id, **fields)

        files = await self.app.results(submission.task_id, timeout_s=FOLLOW_SLICE_S, on_progress=progress)
        self.store.save_results(record.id, files)
        await self._update(record.id, status="validated", num_results=len(files))

    # -- the sweep ------------------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval_s)
            try:
                await self.sweep()
            except Exception as exc:  # the next sweep tries again; a bug is logged with its traceback
                if classify(exc) is Failure.TRANSIENT:
                    log.warning("bridge sweep: %r", exc)
                else:
                    log.error("bridge sweep failed", exc_info=exc)

    async def sweep(self) -> list[str]:
        """Cancel every task past its deadline that the chain lets us cancel; the ids cancelled."""
        cancelled = []
        now = time.time()
        for record in self.store.to_sweep():
            if now < record.deadline:
                continue
            if record.task_id is None:
                # An unfinished one is retired by its worker; a failed one's worker has ended: retire it here.
                if record.status != "failed" or await self._retire_overdue(record) is None:
                    continue
                record = self.store.get(record.id) or record
            try:
                refund = await self.app.cancel(record.task_id)
            except ContractRejected as exc:
                if record.status == "failed" and exc.name == "TaskNotFound":  # it ended: nothing held
                    await self._update(record.id, swept=True)
                log.info("bridge task %s: not cancelled: %s", record.id, exc.reason)
                continue
            # The worker sees TaskAborted too; recording here makes the refund visible at once.
            reason = "Task Cancelled" + (f" (after: {record.reason})" if record.status == "failed" else "")
            await self._update(record.id, status="aborted", reason=reason, refund_wei=refund, swept=True)
            cancelled.append(record.id)
        return cancelled
