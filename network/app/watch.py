"""Following one task on chain: its Task-contract events, read by the indexed taskId, folded into a trace.

Every Task event of a task carries ``taskId`` as its first indexed parameter (topic 1), so one filtered
``eth_getLogs`` per poll returns exactly that task's events, however busy the network is. The reader
starts at the block of the task's createTask (known from the application's own records, else the
deployment block) and moves forward from the last block it read, so each event is seen once.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from web3 import AsyncWeb3

from cluster.chain.artifacts import load_artifact
from cluster.chain.contracts import Validation
from cluster.chain.events import EventDecoder, LogPager
from cluster.chain.rpc import RpcClient, hex_int
from cluster.chain.task_events import (
    AuditDrawn,
    FeeRefunded,
    NodeOutcome,
    ResultUploaded,
    TaskAborted,
    TaskEvent,
    TaskNodeSettled,
    TaskPending,
    TaskSampled,
    TaskStarted,
    TaskSuccess,
    task_events,
)
from cluster.protocol.task import TaskType
from network.app.errors import TaskTimeout
from network.app.models import TaskOutcome

ProgressCallback = Callable[[TaskEvent], Awaitable[None] | None]


@dataclass
class TaskTrace:
    """What the events of one task said so far."""

    task_id: int
    task_type: int | None = None
    fee_wei: int = 0
    selected: dict[int, str] = field(default_factory=dict)
    result: bytes | None = None
    result_node: str | None = None
    uploaded: bool = False
    abort_reason: str | None = None
    refund_wei: int = 0
    paid_to_nodes_wei: int = 0
    last_event: str | None = None
    block_number: int = 0
    validation: Validation = Validation.FULL
    audit_rate: int | None = None
    audited: bool | None = None
    slashed: set[str] = field(default_factory=set)

    def apply(self, event: TaskEvent) -> None:
        self.last_event = event.name
        match event:
            case TaskPending():
                self.task_type, self.fee_wei = event.task_type, event.fee_wei
            case TaskStarted():
                self.task_type = event.task_type
                self.selected[event.round] = event.node
            case TaskSuccess():
                self.result, self.result_node = event.result, event.result_node
            case ResultUploaded():
                self.uploaded = True
            case TaskAborted():
                self.abort_reason = event.reason
            case FeeRefunded():
                self.refund_wei += event.amount_wei
            case TaskNodeSettled(outcome=NodeOutcome.PAID):
                self.paid_to_nodes_wei += event.fee_wei
            case TaskNodeSettled(outcome=NodeOutcome.SLASHED):
                self.slashed.add(event.node)
            case TaskSampled():
                self.audit_rate = event.audit_rate
                self.validation = (
                    Validation.SAMPLED_RESULT_AFTER_AUDIT if event.result_after_audit else Validation.SAMPLED
                )
            case AuditDrawn():
                self.audited = event.is_audited

    @property
    def is_decided(self) -> bool:
        """TaskSuccess or TaskAborted seen: the task's fate is known."""
        return self.result is not None or self.abort_reason is not None

    @property
    def is_aborted(self) -> bool:
        # A task that succeeded is aborted ("Task Cancelled") when its result node never reports the
        # upload before the deadline: the abort wins.
        return self.abort_reason is not None

    def outcome(self) -> TaskOutcome:
        if self.task_type is None:
            raise ValueError(f"task {self.task_id}: no TaskPending seen; is the start block right?")
        return TaskOutcome(
            task_id=self.task_id,
            task_type=TaskType(self.task_type),
            status="aborted" if self.is_aborted else "succeeded",
            reason=self.abort_reason,
            fee_wei=self.fee_wei,
            selected_nodes=tuple(self.selected[r] for r in sorted(self.selected)),
            result=self.result,
            result_node=self.result_node,
            results_uploaded=self.uploaded,
            refund_wei=self.refund_wei,
            paid_to_nodes_wei=self.paid_to_nodes_wei,
            block_number=self.block_number,
            validation=self.validation,
            audit_rate=self.audit_rate,
            audited=self.audited,
            first_node_caught=bool(self.audited) and self.selected.get(0) in self.slashed,
        )


class TaskLogReader:
    """The Task contract's events of one task id, in chain order."""

    def __init__(
        self, w3: AsyncWeb3, task_address: str, *, page_blocks: int = 10_000, confirmations: int = 0
    ):
        self.rpc = RpcClient(w3)
        self.decoder = EventDecoder({"Task": (task_address, load_artifact("Task").abi)})
        self.pager = LogPager(self.rpc, self.decoder, page_blocks=page_blocks)
        self.confirmations = confirmations

    async def safe_head(self) -> int:
        return hex_int(await self.rpc.call("eth_blockNumber", [])) - self.confirmations

    async def read(self, task_id: int, first: int, last: int) -> list[TaskEvent]:
        topic = "0x" + task_id.to_bytes(32, "big").hex()  # taskId is every Task event's first indexed arg
        return task_events(await self.pager.all(first, last, topics=[None, topic]))


class TaskWatcher:
    def __init__(self, reader: TaskLogReader, *, poll_interval_s: float = 1.0):
        self.reader = reader
        self.poll_interval_s = poll_interval_s

    async def follow(
        self,
        task_id: int,
        from_block: int,
        *,
        until: Callable[[TaskTrace], bool],
        waiting_for: str,
        timeout_s: float,
        on_progress: ProgressCallback | None = None,
    ) -> TaskTrace:
        """Read the task's events from ``from_block`` until ``until(trace)``; ``TaskTimeout`` past the limit.

        ``on_progress(event)`` sees every event once, in chain order, as it is read.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        trace = TaskTrace(task_id)
        next_block = from_block
        while True:
            head = await self.reader.safe_head()
            if head >= next_block:
                for event in await self.reader.read(task_id, next_block, head):
                    trace.apply(event)
                    if on_progress is not None:
                        maybe = on_progress(event)
                        if inspect.isawaitable(maybe):
                            await maybe
                trace.block_number, next_block = head, head + 1
            if until(trace):
                return trace
            left = deadline - loop.time()
            if left <= 0:
                raise TaskTimeout(task_id, timeout_s, waiting_for, trace.last_event)
            await asyncio.sleep(min(self.poll_interval_s, left))
