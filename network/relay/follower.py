"""Follows the Task and Node contracts' events into the relay's store, from the store's own block cursor.

The relay needs only an RPC URL and the contract addresses: creators, selected nodes and validated results
come from Task events, the network statistics from Task and Node events. Each page of events is applied
in one transaction with the cursor move, and only if the cursor is where the page began, so every event
is applied exactly once: across a crash, and across replicas handing the follower's lease to each other
(``network.relay.lease``: only its holder follows; the others serve requests from the same tables).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from web3 import AsyncWeb3

from cluster.chain.contracts import Events, NodeStatus
from cluster.chain.events import ChainEvent, EventDecoder, LogPager
from cluster.chain.rpc import RpcClient, hex_int
from cluster.chain.task_events import (
    AuditStarted,
    CommitmentSubmitted,
    TaskAborted,
    TaskPending,
    TaskSampled,
    TaskStarted,
    TaskSuccess,
    task_event,
)
from cluster.failures import Failure, classify
from network.relay.chain_facts import ChainFacts
from network.relay.lease import FollowerLease
from network.relay.schema import TaskPhase
from network.relay.store import CursorMoved, RelayStore

log = logging.getLogger(__name__)
CURSOR_NAME = "task-events"
# A failure that asking again cannot change (a bug, an event that does not apply) is tried again from the
# cursor (no event may be skipped), but less and less often, up to this.
FINAL_FAILURE_BACKOFF_MAX_S = 60.0
Contract = tuple[str, Sequence[Mapping[str, Any]]]  # (address, ABI)


class ChainFollower:
    def __init__(
        self,
        w3: AsyncWeb3,
        store: RelayStore,
        lease: FollowerLease,
        *,
        task: Contract,
        node: Contract | None = None,
        start_block: int = 0,
        confirmations: int = 0,
        page_blocks: int = 2_000,
    ):
        contracts = {"Task": task} if node is None else {"Task": task, "Node": node}
        self.rpc = RpcClient(w3)
        self.pager = LogPager(self.rpc, EventDecoder(contracts), page_blocks=page_blocks)
        self.store = store
        self.lease = lease
        self.start_block = start_block
        self.confirmations = confirmations
        self.following = False  # this replica holds the lease
        self.head_seen = -1  # the chain's head at the last poll (events are read up to it - confirmations)
        self.failure: str | None = None  # why the last poll failed, until one works (GET /v1/relay shows it)
        self._num_final_failures = 0  # in a row: the wait before the next try grows with them

    def next_block(self) -> int:
        stored = self.store.get_cursor(CURSOR_NAME)
        return self.start_block if stored is None else stored

    async def poll(self) -> int:
        """Apply every page up to the newest block ``confirmations`` deep; returns the events applied."""
        self.head_seen = hex_int(await self.rpc.call("eth_blockNumber", []))
        head = self.head_seen - self.confirmations
        applied = 0
        while (first := await asyncio.to_thread(self.next_block)) <= head:
            last, events = await self.pager.page(first, head)
            await asyncio.to_thread(self._apply_page, first, last + 1, events)
            applied += len(events)
        return applied

    async def run(self, stop: asyncio.Event, poll_interval_s: float) -> None:
        """Until ``stop``: take the lease when it is free, and follow while holding it. A poll that fails
        starts again from the cursor, classified once (``cluster.failures``): the moment's failures (the
        chain or the database unreachable) at the next poll, with a warning; anything else is logged with
        its traceback once, shown in ``failure``, and tried again less and less often."""
        wait_s = poll_interval_s
        try:
            while not stop.is_set():
                was_following = self.following
                self.following = await asyncio.to_thread(self.lease.try_acquire)
                if self.following != was_following:
                    log.info("[relay] %s the chain", "following" if self.following else "stopped following")
                wait_s = poll_interval_s
                if self.following:
                    try:
                        await self.poll()
                        self.failure, self._num_final_failures = None, 0
                    except CursorMoved as exc:
                        log.warning("[relay] another follower applied the page first: %s", exc)
                    except Exception as exc:
                        wait_s = self._failed(exc, poll_interval_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait_s)
        finally:
            self.following = False
            await asyncio.to_thread(self.lease.release)

    def _failed(self, exc: Exception, poll_interval_s: float) -> float:
        """Record a failed poll; the seconds until the next."""
        reason = f"{type(exc).__name__}: {exc}"
        is_repeat, self.failure = reason == self.failure, reason
        if classify(exc) is Failure.TRANSIENT:
            log.warning("[relay] following the chain failed, retrying from the cursor: %s", reason)
            return poll_interval_s
        if not is_repeat:
            log.error("[relay] following the chain failed; retrying from the cursor", exc_info=exc)
        self._num_final_failures += 1
        return min(poll_interval_s * 2**self._num_final_failures, FINAL_FAILURE_BACKOFF_MAX_S)

    def _apply_page(self, first: int, next_block: int, events: list[ChainEvent]) -> None:
        # One transaction per page: a node asking between a task's TaskPending and its third TaskStarted
        # must not find itself missing from the selection (a final 403) when it is merely early.
        with self.store.chain_page(CURSOR_NAME, first, next_block) as facts:
            for event in events:
                apply_event(facts, event)


def apply_event(facts: ChainFacts, event: ChainEvent) -> None:
    if event.contract == "Node":
        _apply_node_event(facts, event)
        return
    at = event.block_time_s
    match task_event(event):
        case TaskPending() as pending:
            p = pending
            facts.saw_task(p.task_id, p.task_type, p.creator, p.task_hash, p.cap)
            facts.task_phase_changed(TaskPhase.NONE, TaskPhase.QUEUED)
        case TaskSampled() as sampled:  # right after its TaskPending, in the same transaction
            facts.saw_sampled(sampled.task_id, sampled.result_after_audit)
        case TaskStarted() as started:
            # An audit's rounds 1 and 2 start with a zero hash (TaskPending has the task's): it names no task.
            if any(started.task_hash):
                facts.saw_task(started.task_id, started.task_type, started.creator, started.task_hash)
            facts.saw_selection(started.task_id, started.round, started.node)
            if started.round == 0:  # one start emits one TaskStarted per round it selects
                facts.task_phase_changed(TaskPhase.QUEUED, TaskPhase.RUNNING)
        case CommitmentSubmitted() as committed if committed.round == 0:
            facts.saw_first_commitment(committed.task_id, committed.commitment)
        case AuditStarted() as audit:
            facts.saw_audit(audit.task_id)
        case TaskSuccess() as success:
            facts.saw_success(success.task_id, success.result, success.result_node, at)
            facts.task_phase_changed(TaskPhase.RUNNING, TaskPhase.SUCCEEDED)
        case TaskAborted() as aborted:
            ended = facts.saw_abort(aborted.task_id, aborted.reason, at)
            if ended is not None:
                facts.task_phase_changed(ended, TaskPhase.ABORTED)


def _apply_node_event(facts: ChainFacts, event: ChainEvent) -> None:
    args, where = event.args, {"block": event.block_number, "log_index": event.log_index}
    if event.name == Events.NODE_JOINED:
        facts.node_joined(args["node"], args["gpuName"], args["gpuVramGB"], args["runtime"], **where)
    elif event.name == Events.NODE_STATUS_CHANGED:
        was, now = NodeStatus(args["from"]), NodeStatus(args["to"])
        facts.node_status_changed(args["node"], was, now, **where)
