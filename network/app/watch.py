"""Following one task on chain: its Task-contract events, read by the indexed taskId, folded into a trace.

Every Task event of a task carries ``taskId`` as its first indexed parameter (topic 1), so one filtered
``eth_getLogs`` per poll returns exactly that task's events, however busy the network is. The reader
starts at the block of the task's createTask (known from the application's own records, else the
deployment block) and moves forward from the last block it read, so each event is seen once.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from web3 import AsyncWeb3

from cluster.chain.artifacts import load_artifact
from cluster.chain.contracts import Events
from cluster.chain.events import RANGE_TOO_LARGE_PHRASES, ChainEvent, EventDecoder
from cluster.chain.rpc import RpcClient, RpcError, hex_int
from cluster.protocol.task import TaskType
from network.app.errors import TaskTimeout
from network.app.models import TaskOutcome

ProgressCallback = Callable[[str, Mapping[str, Any]], Awaitable[None] | None]


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

    def apply(self, event: ChainEvent) -> None:
        args = event.args
        self.last_event = event.name
        if event.name == Events.TASK_PENDING:
            self.task_type, self.fee_wei = args["taskType"], args["fee"]
        elif event.name == Events.TASK_STARTED:
            self.task_type = args["taskType"]
            self.selected[args["round"]] = args["selectedNode"]
        elif event.name == Events.TASK_SUCCESS:
            self.result, self.result_node = bytes(args["result"]), args["resultNode"]
        elif event.name == Events.TASK_RESULT_UPLOADED:
            self.uploaded = True
        elif event.name == Events.TASK_ABORTED:
            self.abort_reason = args["reason"]
        elif event.name == Events.TASK_FEE_REFUNDED:
            self.refund_wei += args["amount"]
        elif event.name == Events.TASK_NODE_SUCCESS:
            self.paid_to_nodes_wei += args["fee"]

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
        )


class TaskLogReader:
    """The Task contract's logs of one task id, in chain order, pages shrunk when a provider refuses."""

    def __init__(
        self, w3: AsyncWeb3, task_address: str, *, page_blocks: int = 10_000, confirmations: int = 0
    ):
        self.rpc = RpcClient(w3)
        self.address = task_address
        self.decoder = EventDecoder({"Task": (task_address, load_artifact("Task").abi)})
        self.page_blocks = page_blocks
        self.confirmations = confirmations

    async def safe_head(self) -> int:
        return hex_int(await self.rpc.call("eth_blockNumber", [])) - self.confirmations

    async def read(self, task_id: int, first: int, last: int) -> list[ChainEvent]:
        topic = "0x" + task_id.to_bytes(32, "big").hex()
        events: list[ChainEvent] = []
        while first <= last:
            end = min(last, first + self.page_blocks - 1)
            query = {
                "fromBlock": hex(first),
                "toBlock": hex(end),
                "address": self.address,
                "topics": [None, topic],
            }
            try:
                raw_logs = await self.rpc.call("eth_getLogs", [query])
            except RpcError as exc:
                if end == first or not exc.message_has(*RANGE_TOO_LARGE_PHRASES):
                    raise
                self.page_blocks = max(1, (end - first + 1) // 2)
                continue
            for raw in raw_logs:
                event = None if raw.get("removed") else self.decoder.decode(raw)
                if event is not None:
                    events.append(event)
            first = end + 1
        return sorted(events, key=lambda e: e.position)


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

        ``on_progress(event_name, args)`` sees every event once, in chain order, as it is read.
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
                        maybe = on_progress(event.name, event.args)
                        if inspect.isawaitable(maybe):
                            await maybe
                trace.block_number, next_block = head, head + 1
            if until(trace):
                return trace
            left = deadline - loop.time()
            if left <= 0:
                raise TaskTimeout(task_id, timeout_s, waiting_for, trace.last_event)
            await asyncio.sleep(min(self.poll_interval_s, left))
