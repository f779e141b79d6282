"""The application side of the network: buy a task, follow it on chain, download and verify its result.

    async with ApplicationClient(rpc_url, deployment, relay_url, account, state_dir) as app:
        task_id, files = await app.run(TaskType.GPT, args_json, request_id="chat-42")

Money moves only through ``createTask`` / ``createTaskWithValidation`` (the fee, as msg.value; the
latter for a sampled task, issue 28) and ``cancelTask`` (refunds), both sent
by the exactly-once ``TxSender`` whose journal lives in ``state_dir`` beside the request records
(``submissions.py``): a request id creates at most one task, across crashes and restarts. See
docs/application.md for the fee rule and the guarantees.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount
from web3 import AsyncWeb3

from cluster.chain.artifacts import all_abis, load_artifact
from cluster.chain.contracts import DRAW_GAS_ALLOWANCE, Events, Validation
from cluster.chain.deploy import Deployment
from cluster.chain.revert import ContractRevert
from cluster.chain.rpc import connect
from cluster.chain.sender import SenderConfig, TxRequest, TxSender
from cluster.chain.task_events import FeeRefunded, NoArgumentsReported, TaskEvent, TaskPending, task_events
from cluster.chain.tx_journal import TxJournal
from cluster.protocol.hashes import task_hash
from cluster.protocol.task import TaskType, parse_task_args, task_cap
from cluster.relay import RelayClient, RelayNotReady, RelayRefused
from network.app.errors import (
    ArgumentsNotDelivered,
    ContractRejected,
    RequestConflict,
    SampledFeeTooHigh,
    TaskAbortedError,
    TaskTimeout,
    WrongChain,
    rejected,
)
from network.app.models import Submission, TaskOutcome
from network.app.pricing import AuditTerms, PricePolicy
from network.app.submissions import RequestRecord, SubmissionStore
from network.app.verify import expected_file_count, verify_files
from network.app.watch import ProgressCallback, TaskLogReader, TaskTrace, TaskWatcher

log = logging.getLogger(__name__)
# The default task timeout is 15 minutes from the start; the rest covers a wait in the queue and the upload.
DEFAULT_TIMEOUT_S = 20 * 60.0
ZERO_DATA_HASH = b"\0" * 32  # dataHash is reserved by the protocol


@dataclass(frozen=True)
class ClientSettings:
    price: PricePolicy = field(default_factory=PricePolicy)
    poll_interval_s: float = 1.0  # how often a waiting call reads the chain
    confirmations: int = 0  # blocks an event must be deep before it counts (0: a devnet, an L2)
    # the least the argument upload waits for the relay (to see the task, or to come back); it waits on to
    # the task's own deadline, then cancels the task for the refund
    relay_wait_s: float = 60.0
    relay_backoff_s: float = 0.25
    relay_max_backoff_s: float = 5.0
    sender: SenderConfig = field(default_factory=SenderConfig)


class ApplicationClient:
    """One application account buying tasks. Use as an async context manager, or call ``aclose``.

    ``relay_http`` (optional) is the HTTP client the relay calls go through; the client closes it.
    """

    def __init__(
        self,
        rpc: str | AsyncWeb3,
        deployment: Deployment,
        relay_url: str,
        account: LocalAccount,
        state_dir: str | Path,
        *,
        settings: ClientSettings | None = None,
        relay_http: httpx.AsyncClient | None = None,
    ):
        self.settings = settings or ClientSettings()
        self.deployment = deployment
        self.account = account
        self._owns_w3 = isinstance(rpc, str)
        self.w3: AsyncWeb3 = connect(rpc) if isinstance(rpc, str) else rpc
        state = Path(state_dir)
        state.mkdir(parents=True, exist_ok=True)
        self.sender = TxSender(
            self.w3, TxJournal(state / "transactions.db"), all_abis().values(), self.settings.sender
        )
        self.requests = SubmissionStore(state / "requests.db")
        self.task = self._contract("Task")
        self.node = self._contract("Node")
        self.queue = self._contract("TaskQueue")
        self.relay = RelayClient(
            relay_url,
            account,
            backoff_s=self.settings.relay_backoff_s,
            max_backoff_s=self.settings.relay_max_backoff_s,
            http=relay_http,
        )
        reader = TaskLogReader(self.w3, deployment.address("Task"), confirmations=self.settings.confirmations)
        self.watcher = TaskWatcher(reader, poll_interval_s=self.settings.poll_interval_s)
        self._locks: dict[str, asyncio.Lock] = {}
        self._chain_checked = False

    async def __aenter__(self) -> ApplicationClient:
        await self._check_chain()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.sender.aclose()
        await self.relay.aclose()
        if self._owns_w3:
            await self.w3.provider.disconnect()
        self.sender.journal.close()
        self.requests.close()

    # -- pricing --------------------------------------------------------------------------------------------

    async def estimated_ms(self, task_type: TaskType, cap: int) -> int:
        """The run time the TaskQueue contract estimates for a task: base[type] + perUnit[type] * cap."""
        return await self.queue.functions.estimatedMs(int(task_type), cap).call()

    async def quote(
        self, task_type: TaskType, task_args_json: str, *, validation: Validation = Validation.FULL
    ) -> int:
        """The default fee of a task, in wei: ``PricePolicy.fee_for`` of the chain's estimate (three runs)
        for Full validation; a sampled task pays one run (a third of it) and the audit premium,
        ``p (1 + 2(1+m)/N)`` at the chain's audit rate N (the Full fee when N is 1)."""
        args = parse_task_args(task_type, task_args_json)
        terms = await self.audit_terms() if Validation(validation) != Validation.FULL else None
        return await self._default_fee(task_type, task_cap(args), terms)

    async def audit_terms(self) -> AuditTerms:
        """The chain's terms for sampled tasks now: the audit rate, the margin, the node stake."""
        rate, margin, stake = await asyncio.gather(
            self.task.functions.auditRate().call(),
            self.task.functions.AUDIT_MARGIN_BPS().call(),
            self.node.functions.nodeStake().call(),
        )
        return AuditTerms(audit_rate=rate, margin_bps=margin, node_stake_wei=stake)

    async def _default_fee(self, task_type: TaskType, cap: int, sampled: AuditTerms | None = None) -> int:
        """The price policy's fee for the chain's estimate (a sampled one's when ``sampled`` samples), and
        never below the chain's minimum fee."""
        minimum = await self.task.functions.minTaskFee().call()
        fee = self.settings.price.fee_for(await self.estimated_ms(task_type, cap))
        if sampled is not None and sampled.samples:
            fee = sampled.sampled_fee_for_full(fee)
        return max(minimum, fee)

    # -- submitting ----------------------------------------------------------------------------------------

    async def submit(
        self,
        task_type: TaskType,
        task_args_json: str,
        *,
        fee_wei: int | None = None,
        vram_limit: int = 0,
        request_id: str | None = None,
        validation: Validation = Validation.FULL,
    ) -> int:
        """Create the task (paying the fee) and upload its arguments; returns the task id.

        See ``submit_request``, which also returns the request id and the fee that was paid.
        """
        submission = await self.submit_request(
            task_type, task_args_json, fee_wei=fee_wei, vram_limit=vram_limit, request_id=request_id,
            validation=validation,
        )  # fmt: skip
        return submission.task_id

    async def submit_request(
        self,
        task_type: TaskType,
        task_args_json: str,
        *,
        fee_wei: int | None = None,
        vram_limit: int = 0,
        request_id: str | None = None,
        validation: Validation = Validation.FULL,
    ) -> Submission:
        """Create the task for ``request_id`` unless it exists already, then upload the arguments.

        ``validation`` (issue 28): FULL (the default) runs the task on three nodes, as ``createTask``
        always did; SAMPLED runs it on one node, audited by two more 1 time in the chain's audit rate N,
        for about 1/3 (1 + 2.2/N) of the Full fee; SAMPLED_RESULT_AFTER_AUDIT is SAMPLED whose result
        the relay serves only after the task's decision. At N = 1 a sampled request is a Full task at
        the Full fee. The fee (given or the default) is checked against the network's bound on a
        sampled run's pay, ``nodeStake / (2 N)``, before anything is sent: ``SampledFeeTooHigh``.

        Calling again with the same request id (in this process or after a restart on the same state
        dir) never creates a second task: it finishes what the first call left (the transaction, the
        upload) and returns the same task. Without a request id a fresh one is generated and recorded
        before anything is signed: ``pending()`` and ``resume_pending()`` find it after a crash.

        Raises ``ArgumentsInvalid`` (nothing sent), ``ContractRejected`` (e.g. "Task fee is too low",
        with ``suggested_fee_wei``), ``RequestConflict``, ``RelayNotReady`` (the task exists: call again
        with the same request id to retry the upload), ``TxTimeout`` (call again to keep waiting).
        """
        task_type = TaskType(task_type)  # the door: a plain 0 or 1 is taken too, anything else refused
        validation = Validation(validation)
        args = parse_task_args(task_type, task_args_json)  # before anything costs money
        if vram_limit < 0 or (fee_wei is not None and fee_wei <= 0):
            raise ValueError(f"{vram_limit=} must be >= 0 and {fee_wei=} > 0")
        await self._check_chain()
        request_id = request_id or uuid.uuid4().hex
        digest = task_hash(task_args_json)
        async with self._locks.setdefault(request_id, asyncio.Lock()):
            record = self.requests.get(request_id)
            if record is None:
                cap = task_cap(args)
                terms = await self.audit_terms() if validation != Validation.FULL else None
                if fee_wei is None:
                    fee_wei = await self._default_fee(task_type, cap, terms)
                audit_rate = 1
                if terms is not None and terms.samples:
                    audit_rate = terms.audit_rate
                    if terms.run_pay(fee_wei) > terms.max_run_pay_wei:
                        raise SampledFeeTooHigh(
                            fee_wei, terms.run_pay(fee_wei), terms.max_run_pay_wei, terms.audit_rate
                        )
                record = self.requests.add(
                    RequestRecord(
                        request_id, task_type, digest, task_args_json, fee_wei, vram_limit, cap,
                        validation=validation, audit_rate=audit_rate,
                    )
                )  # fmt: skip
            record.check_same_request(task_type, digest, fee_wei, vram_limit, validation)
            return await self._finish(record)

    def pending(self) -> list[str]:
        """Request ids whose task may exist on chain but whose arguments are not yet on the relay."""
        return [record.request_id for record in self.requests.unfinished()]

    async def resume_pending(self) -> list[Submission]:
        """Finish every request a previous process left half done (call once after a restart)."""
        done = []
        for record in self.requests.unfinished():
            async with self._locks.setdefault(record.request_id, asyncio.Lock()):
                done.append(await self._finish(self.requests.get(record.request_id) or record))
        return done

    async def _finish(self, record: RequestRecord) -> Submission:
        if record.state in ("rejected", "cancelled"):
            raise RequestConflict(
                f"request {record.request_id!r}: its task was {record.state} on chain; use a new request id"
            )
        if record.task_id is None:
            record = await self._create(record)
        assert record.task_id is not None and record.block_number is not None and record.tx_hash
        if record.state != "uploaded":
            await self._upload_args(record)
            self.requests.mark_uploaded(record.request_id)
        return Submission(
            request_id=record.request_id,
            task_id=record.task_id,
            task_type=record.task_type,
            task_hash=record.task_hash,
            fee_wei=record.fee_wei,
            vram_limit=record.vram_limit,
            cap=record.cap,
            block_number=record.block_number,
            tx_hash=record.tx_hash,
            validation=record.validation,
            audit_rate=record.audit_rate,
        )

    async def _upload_args(self, record: RequestRecord) -> None:
        """Upload the arguments, trying until the task's deadline: the relay answers "not yet" until it
        has seen the task, and may be down for a while (RelayClient retries both). A task whose arguments
        cannot be delivered is cancelled for its refund, not left holding three nodes to its deadline."""
        assert record.task_id is not None and record.block_number is not None
        timeout_s = await self.task.functions.taskTimeout().call()
        created_s = (await self.w3.eth.get_block(record.block_number))["timestamp"]
        wait_s = max(self.settings.relay_wait_s, created_s + timeout_s - time.time())
        try:
            receipt = await self.relay.upload_args(record.task_id, record.task_args, wait_s=wait_s)
        except (RelayNotReady, RelayRefused) as exc:
            refund = await self._cancel_when_allowed(record.task_id)
            self.requests.mark_cancelled(record.request_id)
            raise ArgumentsNotDelivered(record.task_id, refund, str(exc)) from exc
        if receipt is not None:  # kept before the upload counts as done: it refutes false reports
            self.requests.save_receipt(receipt)

    async def _cancel_when_allowed(self, task_id: int, attempts: int = 5) -> int:
        """Cancel the task; a started task only after its on-chain deadline (its start may have come
        after its creation, from the queue), so wait for that deadline when the chain says so."""
        for _ in range(attempts):
            try:
                return await self.cancel(task_id)
            except ContractRejected as exc:
                if exc.name != "DeadlineNotPassed":
                    raise
                deadline_s = int(exc.revert.error_args["deadline"])  # DeadlineNotPassed says when
                await asyncio.sleep(max(1.0, deadline_s + 1 - time.time()))
        return await self.cancel(task_id)

    async def retire_request(self, request_id: str) -> int | None:
        """Send no more createTask for ``request_id``: the chain task it created (to follow, or to cancel
        for the refund), or None when it provably created none, and then it is forgotten, so that no
        later ``resume_pending`` creates it. None means: no request was recorded under the id (its row is
        written before createTask is signed), its createTask reverted, or none was signed under its
        idempotency key (or the node refused it before any mempool). A createTask signed but not settled
        is settled first (found mined, or sent again under its key): the answer is never "maybe"."""
        async with self._locks.setdefault(request_id, asyncio.Lock()):
            record = self.requests.get(request_id)
            if record is None or record.state == "rejected":
                return None
            if record.task_id is None:
                entry = self.sender.journal.get(record.idempotency_key)
                if entry is None or entry.status == "failed":
                    self.requests.delete(request_id)
                    return None
                try:
                    record = await self._create(record)
                except ContractRejected:  # mined reverted: the key is spent, no task
                    return None
            return record.task_id

    async def _create(self, record: RequestRecord) -> RequestRecord:
        """createTask, or createTaskWithValidation for a request priced as sampled (at N > 1)."""
        action = "createTaskWithValidation" if record.is_sampled else "createTask"
        sampled_args = (int(record.validation),) if record.is_sampled else ()
        request = TxRequest.call(
            self.task, action, record.task_type, record.task_hash, ZERO_DATA_HASH,
            record.vram_limit, record.cap, *sampled_args, value_wei=record.fee_wei,
            gas_allowance=DRAW_GAS_ALLOWANCE,
        )  # fmt: skip
        try:
            sent = await self.sender.send(self.account, request, key=record.idempotency_key)
        except ContractRevert as exc:
            if exc.is_mined:
                self.requests.mark_rejected(record.request_id)  # the key is spent on chain
            else:
                self.requests.delete(record.request_id)  # nothing reached the chain: the id may be retried
            terms = None
            if record.is_sampled:
                margin = await self.task.functions.AUDIT_MARGIN_BPS().call()
                terms = AuditTerms(audit_rate=record.audit_rate, margin_bps=margin, node_stake_wei=0)
            raise rejected(action, exc, terms) from None
        events = await self._receipt_events(sent.tx_hash)
        (pending,) = [e for e in events if isinstance(e, TaskPending) and e.task_hash == record.task_hash]
        self.requests.mark_created(record.request_id, pending.task_id, pending.block_number, sent.tx_hash)
        created = self.requests.get(record.request_id)
        assert created is not None
        return created

    # -- following -----------------------------------------------------------------------------------------

    async def wait(
        self,
        task_id: int,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        on_progress: ProgressCallback | None = None,
        until_uploaded: bool = False,
    ) -> TaskOutcome:
        """Follow the task's events until it is decided (TaskSuccess or TaskAborted) and return the outcome.

        ``until_uploaded``: on success, keep following until TaskResultUploaded (the result node was
        paid). ``on_progress(event)`` (sync or async) sees each of the task's events once, typed
        (``cluster.chain.task_events``), in chain order: TaskPending, TaskStarted (x3), commitments,
        disclosures, TaskSuccess, TaskNodeSuccess, TaskResultUploaded, TaskAborted, TaskFeeRefunded, ...
        A node's report that the arguments never came is refuted with the relay's receipt of the upload,
        when this client holds one (``refute_no_arguments``). Raises ``TaskTimeout``.
        """
        await self._check_task_id(task_id)

        async def on_event(event: TaskEvent) -> None:
            if isinstance(event, NoArgumentsReported):
                await self.refute_no_arguments(event.task_id)
            if on_progress is not None:
                maybe = on_progress(event)
                if inspect.isawaitable(maybe):
                    await maybe

        def is_done(trace: TaskTrace) -> bool:
            return trace.is_aborted or (trace.result is not None and (trace.uploaded or not until_uploaded))

        trace = await self.watcher.follow(
            task_id, self._start_block(task_id), until=is_done, timeout_s=timeout_s, on_progress=on_event,
            waiting_for="upload report" if until_uploaded else "decision",
        )  # fmt: skip
        return trace.outcome()

    async def results(
        self,
        task_id: int,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        on_progress: ProgressCallback | None = None,
    ) -> list[bytes]:
        """Wait for the task's success, download every result file and verify it against the chain.

        GPT: ``[0.json]``; SD: one PNG per image, in index order. Raises ``TaskAbortedError``,
        ``TaskTimeout``, ``ResultMismatch`` (files that do not recompute to the on-chain result).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        outcome = await self.wait(task_id, timeout_s=timeout_s, on_progress=on_progress)
        if outcome.status == "aborted":
            raise TaskAbortedError(task_id, outcome.reason or "", outcome.refund_wei)
        assert outcome.result is not None
        count = expected_file_count(task_id, outcome.task_type, outcome.result)
        try:
            # The relay answers "not yet" until the result node uploaded: the relay client retries.
            files = await asyncio.gather(
                *(
                    self.relay.get_result(task_id, index, wait_s=max(deadline - loop.time(), 0.0))
                    for index in range(count)
                )
            )
        except RelayNotReady:
            last = Events.TASK_RESULT_UPLOADED if outcome.results_uploaded else Events.TASK_SUCCESS
            raise TaskTimeout(task_id, timeout_s, "result files on the relay", last) from None
        verify_files(task_id, outcome.task_type, outcome.result, list(files))
        return list(files)

    async def run(
        self,
        task_type: TaskType,
        task_args_json: str,
        *,
        fee_wei: int | None = None,
        vram_limit: int = 0,
        request_id: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        on_progress: ProgressCallback | None = None,
        validation: Validation = Validation.FULL,
    ) -> tuple[int, list[bytes]]:
        """``submit`` then ``results``: the task id and its verified result files."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        task_id = await self.submit(
            task_type, task_args_json, fee_wei=fee_wei, vram_limit=vram_limit, request_id=request_id,
            validation=validation,
        )  # fmt: skip
        left = max(deadline - loop.time(), 0.0)
        return task_id, await self.results(task_id, timeout_s=left, on_progress=on_progress)

    # -- refuting -----------------------------------------------------------------------------------------

    async def refute_no_arguments(self, task_id: int) -> bool:
        """Show the chain the relay's receipt of this task's arguments: the nodes that reported them
        missing are slashed, the task ends ("Task arguments report refuted") and the fee, less the
        compensation of the nodes the reports held up, is refunded. True when the refutation was mined;
        False when this client holds no receipt or the chain refused it (the task already ended, no
        report stands, a receipt dated later than half the arguments wait after the start)."""
        receipt = self.requests.receipt(task_id)
        if receipt is None:
            return False
        signature = bytes.fromhex(receipt.signature.removeprefix("0x"))
        request = TxRequest.call(self.task, "refuteNoArguments", task_id, receipt.stored_at_s, signature)
        try:
            await self.sender.send(self.account, request, key=f"refute:{task_id}")
        except ContractRevert as exc:
            log.warning("[app] refutation refused task=%d reason=%s", task_id, exc.name)
            return False
        log.warning("[app] false 'no arguments' report refuted task=%d", task_id)
        return True

    # -- cancelling ----------------------------------------------------------------------------------------

    async def cancel(self, task_id: int) -> int:
        """Cancel a queued task (any time) or a started one (after its deadline); returns the refund in wei.

        Idempotent: calling again after a success returns the same refund. Raises ``ContractRejected``
        ("Task deadline not passed yet", "Task not found ..."), nothing spent when it was refused at
        estimation.
        """
        # a cancel may start two queued tasks: their nodes are drawn at mining
        request = TxRequest.call(self.task, "cancelTask", task_id, gas_allowance=2 * DRAW_GAS_ALLOWANCE)
        try:
            sent = await self.sender.send(self.account, request, key=f"cancel:{task_id}")
        except ContractRevert as exc:
            raise rejected("cancelTask", exc) from None
        return sum(
            e.amount_wei
            for e in await self._receipt_events(sent.tx_hash)
            if isinstance(e, FeeRefunded) and e.task_id == task_id and e.creator == self.account.address
        )

    # -- plumbing ------------------------------------------------------------------------------------------

    def _contract(self, name: str) -> Any:
        return self.w3.eth.contract(address=self.deployment.address(name), abi=load_artifact(name).abi)

    async def _check_chain(self) -> None:
        if not self._chain_checked:
            chain_id = await self.w3.eth.chain_id
            if chain_id != self.deployment.chain_id:
                raise WrongChain(
                    f"the deployment is on chain {self.deployment.chain_id}, the RPC on {chain_id}: "
                    "point the RPC URL at the deployment's chain, or use that chain's deployment file"
                )
            self._chain_checked = True

    async def _check_task_id(self, task_id: int) -> None:
        if not 1 <= task_id < await self.task.functions.nextTaskId().call():
            raise ValueError(f"no task {task_id} on chain")

    def _start_block(self, task_id: int) -> int:
        """Where the task's events begin: its createTask block when this app created it."""
        record = self.requests.by_task(task_id)
        if record is not None and record.block_number is not None:
            return record.block_number
        return self.deployment.block_number

    async def _receipt_events(self, tx_hash: str) -> list[TaskEvent]:
        receipt = await self.sender.rpc.call("eth_getTransactionReceipt", [tx_hash])
        decoder = self.watcher.reader.decoder
        return task_events([event for raw in receipt["logs"] if (event := decoder.decode(raw)) is not None])
