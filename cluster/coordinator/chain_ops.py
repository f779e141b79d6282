"""Every transaction the coordinator sends, each under an idempotency key naming the state change.

Keys are what make restarts safe (cluster.chain.sender): the same key never produces a second state
change, so any step may be replayed after a crash. A key names the change, not the attempt:
``commit:task=12:round=1`` is sent once whatever happens to the process in between.

A task step's gas is not estimated: which path a call takes (a disclosure that settles the task and
starts a queued one, or one that only records itself) depends on what lands before it, so an estimate
made against today's state ran out of gas whenever a sibling's transaction came first, and cost the
chain node an extra execution of every call. ``StepGas`` gives each step the gas of its dearest path
instead: a floor measured on the contracts, raised to what the farm has seen the step use. Unused gas
is refunded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from eth_account.signers.local import LocalAccount
from web3 import AsyncWeb3

from cluster.chain.abi_calls import CallEncoder
from cluster.chain.artifacts import load_artifact
from cluster.chain.contracts import Events, NodeStatus
from cluster.chain.events import EventDecoder, LogPager, event_topic
from cluster.chain.rpc import hex_int
from cluster.chain.sender import SentTx, TxRequest, TxSender
from cluster.chain.task_events import TaskPending, task_event
from cluster.chain.tx_journal import TxJournal
from cluster.protocol.cards import CardModel
from cluster.protocol.hashes import commitment

# Each task step: the key prefix of its transactions, and a gas limit above its dearest path
# (benchmarks/results/chain_gas.md). A step that ends rounds may start up to two queued tasks
# (Task.MAX_STARTS_PER_CALL), about 300-400k gas each with the queue rent's payment; no path depends on
# the network's size, nor on queued tasks that no available node could run. A step seen to use more raises
# its limit (StepGas, from the receipts).
STEP_GAS_FLOORS = {
    "submitTaskResultCommitment": ("commit", 150_000),  # the third (CommitmentsReady, a deadline moved): 47k
    "reportTaskError": ("error", 1_300_000),  # the second may abort the task and pay: 398k, + starts
    "discloseTaskResult": ("disclose", 1_300_000),  # the second decides and pays: 345k, + starts
    "reportResultsUploaded": ("uploaded", 1_300_000),  # pays, deletes the task: 347k, + starts
}
# Life-cycle calls (join, resume, pause, quit, cancel) are estimated, so that a call that would revert is
# refused before it is signed, and signed with at least this much: each may move a card model's other
# nodes between selection pools (its third node arriving or leaving) and start up to two queued tasks,
# which an estimate made a block earlier does not see. About 1.1M on the dearest path; unused gas is
# refunded.
LIFECYCLE_GAS_FLOOR = 1_500_000
GAS_HEADROOM = 1.5  # over the most gas a step was seen to use
# Called before a node account signs: (its address, the gas limit, the value) -> returns once the account
# can pay them (cluster/coordinator/funds/gas.py tops it up first when it could not).
GasGate = Callable[[str, int, int], Awaitable[None]]


class AccountSender(Protocol):
    """Sends a transaction of one of the farm's accounts exactly once (``TxSender``, or a round driver)."""

    async def send(self, account: LocalAccount, request: TxRequest, *, key: str) -> SentTx: ...


class StepGas:
    """The gas limit of each task step: its floor, or more once the farm saw the step use more (its
    receipts, in the journal, survive restarts)."""

    def __init__(self, journal: TxJournal | None = None):
        self.floors = {method: floor for method, (_, floor) in STEP_GAS_FLOORS.items()}
        self.most_used: dict[str, int] = {}
        if journal is not None:
            for method, (prefix, _) in STEP_GAS_FLOORS.items():
                self.saw(method, journal.most_gas_used(f"{prefix}:"))

    def limit(self, method: str) -> int:
        return max(self.floors[method], int(self.most_used.get(method, 0) * GAS_HEADROOM))

    def saw(self, method: str, gas_used: int) -> None:
        self.most_used[method] = max(self.most_used.get(method, 0), gas_used)


@dataclass(slots=True)
class TaskTimers:
    """The Task contract's owner-settable times that rounds depend on: read once at start, then followed
    through their events (``ChainWatch``), never read per round."""

    task_timeout_s: int  # a task started at block time t has its deadline at t + task_timeout_s
    arguments_wait_s: int  # from a task's start on, a node may report its arguments missing


class ChainOps:
    def __init__(self, w3: AsyncWeb3, sender: TxSender, addresses: dict[str, str]):
        self.w3 = w3
        self.sender = sender
        self.task = w3.eth.contract(address=addresses["Task"], abi=load_artifact("Task").abi)
        self.node = w3.eth.contract(address=addresses["Node"], abi=load_artifact("Node").abi)
        self.qos = w3.eth.contract(address=addresses["QoS"], abi=load_artifact("QoS").abi)
        self.step_gas = StepGas(sender.journal)
        self._steps = CallEncoder(self.task.address, load_artifact("Task").abi, STEP_GAS_FLOORS)
        self._views = CallEncoder(self.node.address, load_artifact("Node").abi, ["nodeStatus"])
        self.gas_gate: GasGate | None = None  # set by the coordinator's funds once balances are known
        # With round drivers, a node account's transactions are signed, journaled and sent by the driver
        # that owns its nonces (drivers/fleet.py): None here means this process's own sender.
        self.route: Callable[[str], AccountSender | None] = lambda address: None

    # -- reads --------------------------------------------------------------------------------------------

    async def node_status(self, address: str) -> NodeStatus:
        data = await self.sender.call(
            TxRequest(self.node.address, self._views.encode("nodeStatus", (address,)))
        )
        return NodeStatus(int(data, 16))

    async def transaction_count(self, address: str) -> int:
        """The node's transactions mined so far: the generation its life-cycle keys carry."""
        return hex_int(await self.sender.rpc.call("eth_getTransactionCount", [address, "latest"]))

    async def qos_score(self, address: str) -> int:
        return await self.qos.functions.score(address).call()

    async def node_stake_wei(self) -> int:
        return await self.node.functions.nodeStake().call()

    async def task_timers(self) -> TaskTimers:
        timeout_s, wait_s = await asyncio.gather(
            self.task.functions.taskTimeout().call(), self.task.functions.argumentsWait().call()
        )
        return TaskTimers(task_timeout_s=int(timeout_s), arguments_wait_s=int(wait_s))

    async def audit_draw(self, task_id: int) -> tuple[bool, bool]:
        """A sampled task's draw: (whether it can be read yet, whether it audits the task)."""
        is_drawn, is_audited = await self.task.functions.auditDraw(task_id).call()
        return bool(is_drawn), bool(is_audited)

    async def task_sampling(self, task_id: int) -> tuple[int, bool]:
        """(audit rate, result after the audit) of a running task, from its storage: for a task whose
        TaskPending came before the farm's first block (0 for a full task)."""
        info = await self.task.functions.getTask(task_id).call()
        return int(info[9]), bool(info[11])  # ITask.TaskInfo's auditRate and resultAfterAudit

    async def pending_task_hash(self, task_id: int) -> bytes | None:
        """A task's hash from its TaskPending log, searched back from the latest block: for an audit's
        rounds (their TaskStarted carries zero) of a task that was pending before the farm's first block,
        so that neither the store nor the task's storage (which drops it at the start) has it."""
        abi = self.task.abi
        (pending_abi,) = [e for e in abi if e.get("type") == "event" and e["name"] == Events.TASK_PENDING]
        pager = LogPager(self.sender.rpc, EventDecoder({"Task": (self.task.address, abi)}))
        topics = ["0x" + event_topic(pending_abi).hex(), "0x" + task_id.to_bytes(32, "big").hex()]
        head = hex_int(await self.sender.rpc.call("eth_blockNumber", []))
        found = await pager.last_match(head, topics=topics)
        pending = None if found is None else task_event(found)
        return pending.task_hash if isinstance(pending, TaskPending) else None

    async def latest_block_time_s(self) -> int:
        block = await self.sender.rpc.call("eth_getBlockByNumber", ["latest", False])
        return hex_int(block["timestamp"])

    async def balance(self, address: str) -> int:
        return hex_int(await self.sender.rpc.call("eth_getBalance", [address, "latest"]))

    async def credits(self, contract: str, address: str) -> int:
        """What ``contract`` ("Node" or "Task": both are Payouts) holds for ``address`` after it refused a
        payment."""
        return int(await self._payouts(contract).functions.credits(address).call())

    # -- the operator's money (cluster/coordinator/funds) --------------------------------------------------

    async def top_up(self, operator: LocalAccount, node: str, amount_wei: int, number: int) -> SentTx:
        """The node's ``number``-th top-up of gas money from the operator account."""
        return await self.send(operator, TxRequest(to=node, value_wei=amount_wei), f"topup:{node}:{number}")

    async def withdraw(self, account: LocalAccount, contract: str, generation: int) -> SentTx:
        """Pull the account's credit out of ``contract`` (estimated: a withdrawal with no credit reverts
        unsent)."""
        request = TxRequest.call(self._payouts(contract), "withdraw")
        return await self.send(account, request, f"withdraw:{contract}:{account.address}:{generation}")

    def _payouts(self, contract: str) -> Any:
        return {"Node": self.node, "Task": self.task}[contract]

    # -- node lifecycle -----------------------------------------------------------------------------------

    async def fund(self, operator: LocalAccount, node: str, amount_wei: int, generation: int) -> SentTx:
        """The node's stake and gas reserve, once per generation. A funding a killed process signed keeps
        its amount: the reserve follows the gas price, so the amount asked for now may differ, and the
        key names the change, not the amount."""
        key = f"fund:{node}:{generation}"
        if (signed := self.sender.journal.get(key)) is not None:
            amount_wei = int(signed.tx_fields["value"])
        return await self.send(operator, TxRequest(to=node, value_wei=amount_wei), key)

    async def join(self, account: LocalAccount, card: CardModel, stake_wei: int, generation: int) -> SentTx:
        request = TxRequest.call(
            self.node, "join", *card.join_args, value_wei=stake_wei, gas_floor=LIFECYCLE_GAS_FLOOR
        )
        return await self.send(account, request, f"join:{account.address}:{generation}")

    async def resume(self, account: LocalAccount, generation: int) -> SentTx:
        request = TxRequest.call(self.node, "resume", gas_floor=LIFECYCLE_GAS_FLOOR)
        return await self.send(account, request, f"resume:{account.address}:{generation}")

    async def pause(self, account: LocalAccount, generation: int) -> SentTx:
        request = TxRequest.call(self.node, "pause", gas_floor=LIFECYCLE_GAS_FLOOR)
        return await self.send(account, request, f"pause:{account.address}:{generation}")

    async def quit(self, account: LocalAccount, generation: int) -> SentTx:
        request = TxRequest.call(self.node, "quit", gas_floor=LIFECYCLE_GAS_FLOOR)
        return await self.send(account, request, f"quit:{account.address}:{generation}")

    # -- task steps ---------------------------------------------------------------------------------------

    async def commit(
        self, account: LocalAccount, task_id: int, round_: int, result: bytes, nonce: bytes
    ) -> SentTx:
        value = commitment(result, nonce, account.address)
        args = (task_id, round_, value)
        return await self._step(
            account, "submitTaskResultCommitment", args, f"commit:task={task_id}:round={round_}"
        )

    async def report_no_arguments(self, account: LocalAccount, task_id: int, round_: int) -> SentTx:
        """Gas estimated (like the cancel): a report a block too early reverts at the estimate, unsent,
        and is tried again; a fixed-gas step would be mined reverted under its once-only key."""
        request = TxRequest.call(
            self.task, "reportNoArguments", task_id, round_, gas_floor=LIFECYCLE_GAS_FLOOR
        )
        return await self.send(account, request, f"noargs:task={task_id}:round={round_}")

    async def report_error(self, account: LocalAccount, task_id: int, round_: int) -> SentTx:
        return await self._step(
            account, "reportTaskError", (task_id, round_), f"error:task={task_id}:round={round_}"
        )

    async def disclose(
        self, account: LocalAccount, task_id: int, round_: int, result: bytes, nonce: bytes
    ) -> SentTx:
        args = (task_id, round_, result, nonce)
        return await self._step(
            account, "discloseTaskResult", args, f"disclose:task={task_id}:round={round_}"
        )

    async def report_uploaded(self, account: LocalAccount, task_id: int, round_: int) -> SentTx:
        key = f"uploaded:task={task_id}:round={round_}"
        return await self._step(account, "reportResultsUploaded", (task_id, round_), key)

    async def start_audit(self, account: LocalAccount, task_id: int) -> SentTx:
        """Estimated, like the cancel: with no two nodes free for the audit, or a pool too low to pay them,
        it reverts at the estimate, unsent, and is tried again."""
        request = TxRequest.call(self.task, "startAudit", task_id, gas_floor=LIFECYCLE_GAS_FLOOR)
        return await self.send(account, request, f"audit:task={task_id}")

    async def cancel(self, account: LocalAccount, task_id: int) -> SentTx:
        request = TxRequest.call(self.task, "cancelTask", task_id, gas_floor=LIFECYCLE_GAS_FLOOR)
        return await self.send(account, request, f"cancel:task={task_id}:by={account.address}")

    async def send(
        self, account: LocalAccount, request: TxRequest, key: str, *, gated: bool = True
    ) -> SentTx:
        """Any transaction of the farm's accounts, sent by the account's owner; ``gated``: the account topped
        up first if the book says it cannot pay (not for a sweep, which sends what is above its reserve)."""
        if (
            gated and self.gas_gate is not None
        ):  # an estimated call is signed with at least the life-cycle floor
            gas = request.gas or max(request.gas_floor, LIFECYCLE_GAS_FLOOR)
            await self.gas_gate(account.address, gas, request.value_wei)
        return await (self.route(account.address) or self.sender).send(account, request, key=key)

    async def _step(self, account: LocalAccount, method: str, args: tuple[Any, ...], key: str) -> SentTx:
        """A task step: sent with its dearest path's gas (see the module doc), its use remembered."""
        request = TxRequest(
            self.task.address, self._steps.encode(method, args), gas=self.step_gas.limit(method)
        )
        if self.gas_gate is not None:
            await self.gas_gate(account.address, request.gas or 0, 0)
        sent = await (self.route(account.address) or self.sender).send(account, request, key=key)
        self.step_gas.saw(method, sent.gas_used)
        return sent


def abis() -> list[Any]:
    """Every contract ABI, so the sender decodes any custom error a call can revert with."""
    from cluster.chain.artifacts import all_abis

    return list(all_abis().values())
