"""One round of a task for one of the farm's nodes, driven step by step; each step safe to replay.

    SELECTED --execute--> EXECUTED --commit--> COMMITTED --disclose--> DISCLOSED --chosen--> UPLOADING
       \\--task invalid--> ERROR_FOUND --report_error--> DISCLOSED        events --> DONE (paid, ...)

A sampled task's one node (``NodeTask.is_lone``, issue 28) seals a task error as the empty result instead
of reporting it, and at COMMITTED uploads its files to the relay, waits for the draw, then discloses (which
ends the task) or starts the audit; from the audit's start it is round 0 of a three-node task.

Each handler is named by what it does. A step writes what it produced to the store before the transaction
that depends on it goes out (result, nonce and files before the commitment) and sends under an idempotency
key, so a crash at any point replays to the same transactions. Steps that wait for the chain (all
commitments in, the decision) return False and are woken by the chain watch. Past the deadline the node
cancels the task, but for what may still be done then: a disclosure once every commitment is in (the
contract takes it until the cancel; a cancel first would slash the round as a withholder) and the upload
of the result node. The chain's events, applied by ``ChainWatch``, end every round (``Step.DONE``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import aiohttp
from eth_account.signers.local import LocalAccount

from cluster.chain.revert import ContractRevert
from cluster.coordinator.chain_ops import ChainOps, TaskTimers
from cluster.coordinator.clock import ChainClock
from cluster.coordinator.nodes import NodeSet
from cluster.coordinator.round_state import NodeTask, Step
from cluster.coordinator.scheduling.runner import JobRunner
from cluster.coordinator.store import RoundStore
from cluster.coordinator.timeline import RoundTimeline
from cluster.failpoints import NO_FAILPOINTS, Failpoints
from cluster.failures import ArgumentsMismatch, FailureCode
from cluster.protocol.errors import TaskExecutionError
from cluster.protocol.hashes import new_nonce, task_hash
from cluster.protocol.task import check_within_cap, parse_task_args
from cluster.relay import RelayClient, RelayNotReady
from cluster.workers.messages import JobRequest

log = logging.getLogger(__name__)
Guard = Callable[[NodeTask], Awaitable[bool]]
RELAY_CONNECTIONS = 32


def relay_session() -> aiohttp.ClientSession:
    """Every round talks to the relay: connections are kept (a new one costs more than the request), on
    aiohttp, whose cost per request does not grow with the requests waiting (cluster/relay/client.py)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=RELAY_CONNECTIONS), timeout=aiohttp.ClientTimeout(total=30.0)
    )


class RoundDriver:
    """Takes the next step of any round of the farm's nodes. Owns no loop: the coordinator calls
    ``advance`` whenever a round may move (a chain event, a poll, a retry)."""

    def __init__(
        self, store: RoundStore, ops: ChainOps, pool: JobRunner, nodes: NodeSet, clock: ChainClock,
        timers: TaskTimers, *, relay_url: str, http: aiohttp.ClientSession, guard: Guard | None = None,
        failpoints: Failpoints = NO_FAILPOINTS,
        timeline: RoundTimeline | None = None,
    ):  # fmt: skip
        self.store = store
        self.ops = ops
        self.pool = pool
        self.nodes = nodes
        self.clock = clock
        self.timers = timers  # the chain watch follows them
        self.guard = guard  # the card guard (drivers/guard.py): True while it holds the commitment
        self.failpoints = failpoints
        self.timeline = timeline or RoundTimeline()
        self._relay_url = relay_url
        self._http = http
        self._relays: dict[str, RelayClient] = {}
        self._uploaded: set[tuple[int, int]] = set()  # rounds whose upload was reported: they wait to be paid
        self._sealed_uploads: set[tuple[int, int]] = set()  # lone rounds whose files the relay took early
        self._handlers: dict[Step, Callable[[NodeTask], Awaitable[bool]]] = {
            Step.SELECTED: self._execute,
            Step.EXECUTED: self._commit,
            Step.ERROR_FOUND: self._report_error,
            Step.COMMITTED: self._disclose,
            Step.DISCLOSED: self._await_decision,
            Step.UPLOADING: self._upload,
        }

    async def advance(self, task: NodeTask) -> bool:
        """Take the next step of ``task``; True when it moved, False when it waits for the chain."""
        if task.step is Step.DONE:
            return False
        past_deadline = self.clock.is_past(task.deadline_chain_s)
        if past_deadline and (task.failure is not None or not self._may_act_late(task)):
            return await self._cancel(task)
        if task.failure is not None:
            return False  # a final failure: the chain's events or the deadline's cancel end this round
        return await self._handlers[task.step](task)

    # -- the steps ------------------------------------------------------------------------------------------

    async def _execute(self, task: NodeTask) -> bool:
        if task.round == 0 and task.cap is None and task.audit_rate == 0:
            task = await self._read_sampling(task)
        if task.task_hash == bytes(32):  # an audit round of a task pending before the farm's first block
            task = await self._read_task_hash(task)
        args_json = task.args_json or await self._fetch_args(task)
        if args_json is None:
            return True  # reported missing: the second report (or the deadline's cancel) ends the task
        try:
            args = parse_task_args(task.task_type, args_json)  # the job's one parse: workers take it parsed
            # Asking for more than the fee paid for (the queue ranks by cap) is the creator's error.
            check_within_cap(args, task.cap)
        except TaskExecutionError as exc:  # arguments the relay took but a node must refuse
            return self._found_error(task, exc)
        request = JobRequest(
            args, self.clock.to_unix_s(task.deadline_chain_s), task_id=task.task_id, round=task.round
        )
        reply = await self.pool.run_job(self.nodes[task.node].card, request)
        self.timeline.spent(task.key, "engine_s", reply.engine_s)
        if reply.error is not None:  # the pool returns only task errors; transient ones it retried
            return self._found_error(task, reply.error)
        files, result = list(reply.files), reply.result
        # result, nonce and files on disk before the commitment can be sent: one transaction (store.py)
        with self.store.transaction():
            self.store.write_files(task.task_id, task.round, files)
            self.store.patch(
                task.task_id,
                task.round,
                step=Step.EXECUTED,
                result=result,
                nonce=new_nonce(),
                num_files=len(files),
            )
        self.timeline.mark(task.key, "executed")
        log.info("[coordinator] executed task=%d round=%d node=%s", task.task_id, task.round, task.node)
        return True

    async def _fetch_args(self, task: NodeTask) -> str | None:
        """The arguments from the relay, waited for until the chain lets a node report them missing
        (Task.argumentsWait after the start); then reported, and None. A lone report changes nothing:
        a second one moves the deadline to the contract's response window, after which the cancel pays
        the reporters for the wait. Reported only when the relay itself said, last, that it has none: a
        relay that cannot be reached may hold them, and its receipt would refute the report, which the
        contract slashes; the round then waits on, and is cancelled at the deadline."""
        relay = self._relay_for(task.node)
        deadline_s = task.deadline_chain_s
        if task.started_chain_s is None:  # a row of an older version: wait until the deadline
            report_from_s = deadline_s
        else:
            report_from_s = task.started_chain_s + self.timers.arguments_wait_s
        try:
            wait_s = max(1.0, self.clock.seconds_left(min(deadline_s, report_from_s)))
            args_json = await relay.get_args(task.task_id, wait_s=wait_s)
        except RelayNotReady as exc:
            may_report = self.clock.is_past(report_from_s) and not self.clock.is_past(deadline_s)
            if not (may_report and exc.says_missing):
                raise
            await self.ops.report_no_arguments(self._account(task), task.task_id, task.round)
            log.warning("[coordinator] no arguments, reported task=%d round=%d", task.task_id, task.round)
            self.store.patch(
                task.task_id, task.round, failure="selected: arguments never came (reported)",
                failure_code=FailureCode.ARGUMENTS_NEVER_CAME,
            )  # fmt: skip
            return None
        if task_hash(args_json) != task.task_hash:  # the relay checks this too; never run unverified args
            raise ArgumentsMismatch(f"task {task.task_id}: the relay's arguments do not hash to the taskHash")
        self.store.patch(task.task_id, task.round, args_json=args_json)
        self.timeline.mark(task.key, "args_fetched")
        return args_json

    async def _read_sampling(self, task: NodeTask) -> NodeTask:
        """A task pending before the farm's first block: whether it is sampled comes from its storage."""
        audit_rate, result_after_audit = await self.ops.task_sampling(task.task_id)
        if audit_rate == 0:
            return task
        sampling = {"audit_rate": audit_rate, "result_after_audit": result_after_audit}
        self.store.patch(task.task_id, task.round, **sampling)
        return replace(task, **sampling)

    async def _read_task_hash(self, task: NodeTask) -> NodeTask:
        """The hash its arguments are checked against: a sibling round's that read it already, or the task's
        TaskPending log (unknown to this farm's store, and dropped from the task's storage at its start)."""
        rows = self.store.of_task(task.task_id)
        siblings = [r.task_hash for r in rows if r.task_hash not in (None, bytes(32))]
        found = siblings[0] if siblings else await self.ops.pending_task_hash(task.task_id)
        if found is None:
            return task  # its arguments then fail their check (ArgumentsMismatch): nothing vouches for them
        self.store.patch(task.task_id, task.round, task_hash=found)
        return replace(task, task_hash=found)

    def _found_error(self, task: NodeTask, error: TaskExecutionError) -> bool:
        log.warning(
            "[coordinator] task error task=%d round=%d code=%s message=%s",
            task.task_id, task.round, error.code.value, error.message,
        )  # fmt: skip
        if task.is_lone:  # a public report would show the outcome before the draw: the empty result, sealed
            with self.store.transaction():
                self.store.write_files(task.task_id, task.round, [])
                self.store.patch(
                    task.task_id, task.round, step=Step.EXECUTED, result=b"", nonce=new_nonce(), num_files=0,
                    error=f"{error.code.value}: {error.message}",
                )  # fmt: skip
            return True
        self.store.patch(
            task.task_id, task.round, step=Step.ERROR_FOUND, error=f"{error.code.value}: {error.message}"
        )
        return True

    async def _commit(self, task: NodeTask) -> bool:
        assert task.result is not None and task.nonce is not None
        if self.guard is not None and await self.guard(task):
            return False  # nothing of ours is committed; the task is cancelled at its deadline
        self.failpoints.reached("before_commit", task.key)
        async with self._on_chain(task, "committed"):
            await self.ops.commit(self._account(task), task.task_id, task.round, task.result, task.nonce)
        self.failpoints.reached("after_commit", task.key)
        self.store.patch(task.task_id, task.round, step=Step.COMMITTED)
        return True

    async def _report_error(self, task: NodeTask) -> bool:
        await self.ops.report_error(self._account(task), task.task_id, task.round)
        # an error report is the commitment and the disclosure at once
        self.store.patch(task.task_id, task.round, step=Step.DISCLOSED)
        return True

    async def _disclose(self, task: NodeTask) -> bool:
        if not task.commitments_ready:
            return False
        assert task.result is not None and task.nonce is not None
        if task.is_lone:
            return await self._disclose_alone(task)
        return await self._send_disclosure(task)

    async def _send_disclosure(self, task: NodeTask) -> bool:
        assert task.result is not None and task.nonce is not None
        async with self._on_chain(task, "disclosed"):
            await self.ops.disclose(self._account(task), task.task_id, task.round, task.result, task.nonce)
        self.failpoints.reached("after_disclose", task.key)
        self.store.patch(task.task_id, task.round, step=Step.DISCLOSED)
        return True

    async def _disclose_alone(self, task: NodeTask) -> bool:
        """A sampled task's one node: its files to the relay first (checked there against the commitment;
        the disclosure ends the task, so nothing can be uploaded after it), then the draw, read from the
        second block after the commitment's: not audited, the disclosure (paid, the task ends); audited,
        the audit's start, by anyone and so by this node (its auditors' commitments then lead to the
        disclosure as in a three-node task)."""
        assert task.result is not None and task.nonce is not None
        await self._upload_sealed(task)
        is_drawn, is_audited = await self.ops.audit_draw(task.task_id)
        if not is_drawn:
            return False  # looked at again within a poll (NodeTask.awaits_draw)
        if is_audited:
            return await self._start_audit(task)
        return await self._send_disclosure(task)

    async def _start_audit(self, task: NodeTask) -> bool:
        try:
            async with self._on_chain(task, "audit_started"):
                await self.ops.start_audit(self._account(task), task.task_id)
        except ContractRevert as exc:
            if exc.name in ("AuditNodesUnavailable", "AuditPoolTooLow"):
                log.info("[coordinator] audit waits task=%d: %s", task.task_id, exc.name)
                return False  # refused at the estimate, unsent: tried again within a poll
            if exc.name != "TaskNotAudited":
                raise
            # started by someone else (or mined for us and not yet seen): TaskAuditStarted comes
        log.info("[coordinator] audited task=%d node=%s", task.task_id, task.node)
        return False  # the row waits for the auditors' commitments (TaskAuditStarted, then CommitmentsReady)

    async def _upload_sealed(self, task: NodeTask) -> None:
        """The lone node's files with its result and nonce, once per process (a sealed error has none)."""
        if task.num_files == 0 or (task.task_id, task.round) in self._sealed_uploads:
            return
        assert task.result is not None and task.nonce is not None
        files = self.store.read_files(task.task_id, task.round)
        wait_s = max(1.0, self.clock.seconds_left(task.deadline_chain_s))
        relay = self._relay_for(task.node)
        await relay.upload_results(task.task_id, files, wait_s=wait_s, sealed=(task.result, task.nonce))
        self._sealed_uploads.add((task.task_id, task.round))
        self.timeline.mark(task.key, "uploaded")

    async def _await_decision(self, task: NodeTask) -> bool:
        if not task.is_result_node:
            return False  # settled, slashed or aborted by events
        self.store.patch(task.task_id, task.round, step=Step.UPLOADING)
        return True

    async def _upload(self, task: NodeTask) -> bool:
        if (task.task_id, task.round) in self._uploaded:
            return False  # done in this process: TaskNodeSuccess ends it (a restart uploads once more)
        files = self.store.read_files(task.task_id, task.round)
        self.failpoints.reached("before_upload", task.key)
        wait_s = max(1.0, self.clock.seconds_left(task.deadline_chain_s))
        await self._relay_for(task.node).upload_results(task.task_id, files, wait_s=wait_s)
        self.failpoints.reached("after_upload", task.key)
        async with self._on_chain(task, "uploaded"):
            await self.ops.report_uploaded(self._account(task), task.task_id, task.round)
        log.info("[coordinator] results uploaded task=%d node=%s", task.task_id, task.node)
        self._uploaded.add((task.task_id, task.round))
        return False  # TaskNodeSuccess marks it done

    def round_ended(self, key: tuple[int, int]) -> None:
        """The round's runner is done: forget what this process kept of it."""
        self._uploaded.discard(key)
        self._sealed_uploads.discard(key)

    @staticmethod
    def _may_act_late(task: NodeTask) -> bool:
        """What a round may still do past its deadline, until someone cancels: its disclosure once all
        committed (never sending it would slash it), and the result node's upload."""
        return task.step is Step.UPLOADING or (task.step is Step.COMMITTED and task.commitments_ready)

    async def _cancel(self, task: NodeTask) -> bool:
        try:
            await self.ops.cancel(self._account(task), task.task_id)
        except ContractRevert as exc:
            if exc.name != "TaskNotFound":
                raise  # still running: a real refusal (e.g. the deadline by chain time not yet passed)
            log.info("[coordinator] task already ended task=%d", task.task_id)  # and its storage deleted
        return False  # TaskAborted / TaskNodeCancelled mark it done

    # -- plumbing ----------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _on_chain(self, task: NodeTask, stage: str) -> AsyncIterator[None]:
        """Time a transaction of the round (signing, sending, mining) and mark the stage it completes."""
        started = time.perf_counter()
        yield
        self.timeline.spent(task.key, "chain_s", time.perf_counter() - started)
        self.timeline.mark(task.key, stage)

    def _account(self, task: NodeTask) -> LocalAccount:
        return self.nodes[task.node].account

    def _relay_for(self, node: str) -> RelayClient:
        if node not in self._relays:
            self._relays[node] = RelayClient(self._relay_url, self.nodes[node].account, session=self._http)
        return self._relays[node]
