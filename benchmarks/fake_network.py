"""A fake chain and a fake relay in one process, for measuring only the control plane (issue 27).

    python -m benchmarks.fake_network --port 8545 --accounts accounts.json [--block-time 1.0]

The real coordinator talks to it over HTTP exactly as it talks to anvil and to the relay: JSON-RPC on
``POST /``, the relay's task endpoints under ``/v1/inference_tasks``. ``benchmarks/control_plane.py``
starts it as a subprocess, so that its CPU is not counted as the coordinator's.

The chain: a block every ``--block-time`` seconds holding the transactions received since the last one
(in each sender's nonce order), each with a receipt (status, a plausible ``gasUsed``, the logs). Signed
EIP-1559 transactions are decoded (sender recovered with libsecp256k1, nonce checked: "nonce too low",
"already known", replacements refused). Logs are encoded with eth_abi from the real Task ABI, so the
coordinator's ``EventDecoder`` decodes them unchanged.

A model of the Task contract for the farm's rounds (contracts/src/Task.sol and TaskSeals.sol): every block
the fake creates tasks for the idle farm accounts (three distinct ones each, shuffled), as an application's
``createTask`` would: ``TaskPending`` then ``TaskStarted`` for rounds 0, 1, 2. ``submitTaskResultCommitment``
emits ``TaskResultCommitmentSubmitted``; the third ``TaskResultCommitmentsReady`` (and ``TaskDeadlineMoved``
when the response window reaches past the deadline). ``discloseTaskResult`` checks the commitment
(keccak256(result, nonce, node)) and emits ``TaskResultDisclosed``; the second matching disclosure decides
(``TaskSuccess``, the result node is the earlier discloser of the pair, as the contract's ``_decide``) and
settles its discloser (``TaskNodeSuccess`` with fee * positionScore / 50), a later one is settled or
slashed against the decided result; ``reportResultsUploaded`` by the result node emits
``TaskResultUploaded`` and settles it. A round's end frees its node, which gets a new task at the next
block. ``cancelTask`` past the deadline ends the open rounds (``TaskAborted``, ``TaskNodeCancelled`` or
``TaskNodeSlashed``). Any step the real contract would refuse (wrong node, twice, before the commitments,
after the deadline, a commitment mismatch) is mined with status 0 and counted as failed.

What it does not model: gas (``gasUsed`` is a fixed plausible figure per step), balances (every account
holds 10^24 wei; fees and refunds move nothing), the Node and QoS contracts' events (node status changes,
QoS scores: the coordinator reads none of them), the task queue (every task starts at once), node
selection (random idle accounts, one card model), "no arguments" reports and error reports (refused,
counted as failed), reorgs. The relay answers a task's arguments to anyone and takes any result upload:
the requests' signatures are NOT checked (nor the files' digests).

``GET /stats``: RPC calls by method, transactions received, mined, failed (by reason), refused at
broadcast, tasks created, rounds paid, relay requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rlp
from aiohttp import web
from coincurve import PublicKey
from eth_abi import decode, encode
from eth_hash.auto import keccak

from cluster.chain.artifacts import load_artifact
from cluster.chain.checksums import checksum_address
from cluster.chain.events import event_topic
from cluster.chain.revert import abi_type
from cluster.protocol.hashes import commitment, task_hash

log = logging.getLogger("fake_network")

CHAIN_ID = 31337
CONTRACTS = ("Node", "Task", "TaskQueue", "QoS", "NetworkStats")
ADDRESSES = {name: checksum_address("0x" + keccak(f"fake-{name}".encode())[-20:].hex()) for name in CONTRACTS}
CREATOR = checksum_address("0x" + keccak(b"fake-application").hex()[-40:])
BASE_FEE_WEI = 10**9
TIP_WEI = 10**9
BALANCE_WEI = 10**24
NODE_STAKE_WEI = 10**18
TASK_FEE_WEI = 10**16
GPT = 1  # TaskType.GPT
NUM_ROUNDS = 3
POSITION_AWARDS = (10, 9, 6)
SCORE_DENOMINATOR = 50
MAX_RESULT_BYTES = 1024
AVAILABLE, BUSY, QUIT = 1, 2, 0  # cluster.chain.contracts.NodeStatus
# gasUsed by step, from benchmarks/results/chain_gas.md (the receipts' figures, not an execution)
GAS = {"commit": 47_000, "disclose": 90_000, "decide": 345_000, "uploaded": 347_000, "transfer": 21_000}
EMPTY_BLOOM = "0x" + "00" * 256


def task_args(task_id: int) -> str:
    """A GPT task's arguments, as benchmarks/load_app.py makes them (its cap, max_new_tokens, is 6)."""
    return json.dumps({
        "model": "benchmark/instant", "messages": [{"role": "user", "content": f"task {task_id}"}],
        "seed": task_id, "generation_config": {"max_new_tokens": 6},
    })  # fmt: skip


ARGS_CAP = 6


class Revert(Exception):
    """What the real contract would revert with (its custom error's name and arguments, as text)."""


# -- the ABI: events encoded, calls decoded ------------------------------------------------------------------


@dataclass(frozen=True)
class _EventSpec:
    topic0: str
    indexed: tuple[tuple[str, str], ...]
    data_names: tuple[str, ...]
    data_types: tuple[str, ...]


def _event_specs(abi: list[dict[str, Any]]) -> dict[str, _EventSpec]:
    specs = {}
    for item in abi:
        if item.get("type") != "event":
            continue
        inputs = item["inputs"]
        specs[item["name"]] = _EventSpec(
            topic0="0x" + event_topic(item).hex(),
            indexed=tuple((i["name"], abi_type(i)) for i in inputs if i.get("indexed")),
            data_names=tuple(i["name"] for i in inputs if not i.get("indexed")),
            data_types=tuple(abi_type(i) for i in inputs if not i.get("indexed")),
        )
    return specs


@dataclass(frozen=True)
class _Function:
    contract: str
    name: str
    types: tuple[str, ...]
    outputs: tuple[str, ...]


def _functions() -> dict[tuple[str, bytes], _Function]:
    found = {}
    for contract in ("Node", "Task", "QoS"):
        for item in load_artifact(contract).abi:
            if item.get("type") != "function":
                continue
            types = tuple(abi_type(i) for i in item["inputs"])
            selector = keccak(f"{item['name']}({','.join(types)})".encode())[:4]
            outputs = tuple(abi_type(o) for o in item.get("outputs", []))
            found[(ADDRESSES[contract], selector)] = _Function(contract, item["name"], types, outputs)
    return found


def revert_data(reason: str) -> str:
    """Error(string): what the coordinator's RevertDecoder reads as a revert with a message."""
    return "0x08c379a0" + encode(["string"], [reason]).hex()


# -- transactions ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Tx:
    hash: str
    raw: str
    sender: str
    nonce: int
    to: str | None
    value: int
    data: bytes
    gas: int
    max_fee: int
    tip: int


def decode_raw_tx(raw_hex: str) -> Tx:
    """An EIP-1559 (type 2) signed transaction: its fields and its sender, recovered from the signature."""
    raw = bytes.fromhex(raw_hex[2:] if raw_hex.startswith("0x") else raw_hex)
    if not raw or raw[0] != 2:
        raise ValueError("only EIP-1559 (type 2) transactions are taken")
    fields = rlp.decode(raw[1:])
    if len(fields) != 12:
        raise ValueError("malformed EIP-1559 transaction")
    chain_id, nonce, tip, max_fee, gas, to, value, data, access_list, y_parity, r, s = fields
    body = [chain_id, nonce, tip, max_fee, gas, to, value, data, access_list]
    digest = keccak(b"\x02" + rlp.encode(body))
    signature = int.from_bytes(r, "big").to_bytes(32, "big") + int.from_bytes(s, "big").to_bytes(32, "big")
    signature += bytes([int.from_bytes(y_parity, "big")])
    public = PublicKey.from_signature_and_message(signature, digest, hasher=None).format(compressed=False)
    sender = checksum_address("0x" + keccak(public[1:])[-20:].hex())
    if int.from_bytes(chain_id, "big") != CHAIN_ID:
        raise ValueError(f"wrong chain id {int.from_bytes(chain_id, 'big')}")
    as_int = lambda b: int.from_bytes(b, "big")  # noqa: E731
    return Tx(
        hash="0x" + keccak(raw).hex(), raw=raw_hex, sender=sender, nonce=as_int(nonce),
        to=checksum_address("0x" + to.hex()) if to else None, value=as_int(value), data=bytes(data),
        gas=as_int(gas), max_fee=as_int(max_fee), tip=as_int(tip),
    )  # fmt: skip


# -- the Task contract's model ----------------------------------------------------------------------------


@dataclass
class FakeTask:
    task_id: int
    nodes: list[str]
    deadline: int
    args_json: str
    fee: int = TASK_FEE_WEI
    balance: int = TASK_FEE_WEI
    commitments_ready: bool = False
    commit_pos: list[int] = field(default_factory=lambda: [0] * NUM_ROUNDS)
    disclose_pos: list[int] = field(default_factory=lambda: [0] * NUM_ROUNDS)
    # each round's commitment, then its result's hash once disclosed (TaskSeals' seals)
    seals: list[bytes | None] = field(default_factory=lambda: [None] * NUM_ROUNDS)
    ended: list[bool] = field(default_factory=lambda: [False] * NUM_ROUNDS)
    num_commits: int = 0
    num_disclosed: int = 0
    num_ended: int = 0
    decided_hash: bytes | None = None
    result_round: int | None = None
    is_ended: bool = False


Emit = Callable[[str, dict[str, Any]], None]


class TaskModel:
    """The farm's rounds as the Task contract runs them: see the module doc for what is modeled."""

    def __init__(self, accounts: list[str], *, task_timeout_s: int, response_window_s: int, seed: int = 0):
        self.accounts = [checksum_address(a) for a in accounts]
        self.idle: set[str] = set(self.accounts)
        self.task_of: dict[str, int] = {}
        self.tasks: dict[int, FakeTask] = {}
        self.args: dict[int, str] = {}  # every task's arguments, kept after it ends (the relay's store)
        self.next_task_id = 1
        self.task_timeout_s = task_timeout_s
        self.response_window_s = response_window_s
        self.arguments_wait_s = 120
        self.random = random.Random(seed)
        self.num_paid = 0  # TaskNodeSuccess events
        self.num_slashed = 0
        self.num_cancelled = 0
        self.num_succeeded = 0

    def node_status(self, address: str) -> int:
        if address not in self.idle and address not in self.task_of:
            return QUIT
        return BUSY if address in self.task_of else AVAILABLE

    # -- tasks created for the idle accounts (as an application's createTask would start them) ---------------

    def create_tasks(self, now: int, emit: Emit) -> int:
        idle = sorted(self.idle)
        self.random.shuffle(idle)
        created = 0
        for first in range(0, len(idle) - NUM_ROUNDS + 1, NUM_ROUNDS):
            nodes = idle[first : first + NUM_ROUNDS]
            task_id, self.next_task_id = self.next_task_id, self.next_task_id + 1
            args = task_args(task_id)
            digest = task_hash(args)
            self.args[task_id] = args
            self.tasks[task_id] = FakeTask(task_id, nodes, now + self.task_timeout_s, args)
            emit("TaskPending", {
                "taskId": task_id, "taskType": GPT, "creator": CREATOR, "taskHash": digest,
                "dataHash": b"\0" * 32, "vramLimit": 0, "cap": ARGS_CAP, "fee": TASK_FEE_WEI,
            })  # fmt: skip
            for r, node in enumerate(nodes):
                self.idle.discard(node)
                self.task_of[node] = task_id
                emit("TaskStarted", {
                    "taskId": task_id, "taskType": GPT, "creator": CREATOR, "selectedNode": node,
                    "taskHash": digest, "dataHash": b"\0" * 32, "round": r,
                })  # fmt: skip
            created += 1
        return created

    # -- the node steps ------------------------------------------------------------------------------------

    def call(self, name: str, args: tuple[Any, ...], sender: str, now: int, emit: Emit) -> str:
        """Run a Task transaction; returns its kind of gas (GAS) or raises Revert."""
        match name:
            case "submitTaskResultCommitment":
                return self._commit(*args, sender, now, emit)
            case "discloseTaskResult":
                return self._disclose(*args, sender, now, emit)
            case "reportResultsUploaded":
                return self._uploaded(*args, sender, emit)
            case "cancelTask":
                return self._cancel(args[0], sender, now, emit)
        raise Revert(f"NotModeled({name})")

    def _running(self, task_id: int) -> FakeTask:
        task = self.tasks.get(task_id)
        if task is None or task.is_ended:
            raise Revert(f"TaskNotRunning({task_id})")
        return task

    @staticmethod
    def _caller_round(task: FakeTask, round_: int, sender: str) -> None:
        if round_ >= NUM_ROUNDS:
            raise Revert(f"InvalidRound({round_})")
        if task.nodes[round_] != sender or task.ended[round_]:
            raise Revert(f"NotRoundNode({task.task_id}, {round_}, {sender})")

    def _commit(self, task_id: int, round_: int, value: bytes, sender: str, now: int, emit: Emit) -> str:
        task = self._running(task_id)
        self._caller_round(task, round_, sender)
        if task.commit_pos[round_]:
            raise Revert(f"AlreadyCommitted({task_id}, {round_})")
        if now > task.deadline:
            raise Revert(f"DeadlinePassed({task_id}, {task.deadline}, {now})")
        if value == b"\0" * 32:
            raise Revert(f"EmptyCommitment({task_id}, {round_})")
        task.seals[round_] = bytes(value)
        task.num_commits += 1
        task.commit_pos[round_] = task.num_commits
        emit("TaskResultCommitmentSubmitted",
             {"taskId": task_id, "round": round_, "node": sender, "commitment": bytes(value)})  # fmt: skip
        if task.num_commits == NUM_ROUNDS:
            task.commitments_ready = True
            emit("TaskResultCommitmentsReady", {"taskId": task_id})
            self._give_response_window(task, now, emit)
        return "commit"

    def _give_response_window(self, task: FakeTask, now: int, emit: Emit) -> None:
        until = now + self.response_window_s
        if until > task.deadline:
            task.deadline = until
            emit("TaskDeadlineMoved", {"taskId": task.task_id, "deadline": until})

    def _disclose(
        self, task_id: int, round_: int, result: bytes, nonce: bytes, sender: str, now: int, emit: Emit
    ) -> str:
        task = self._running(task_id)
        if not task.commitments_ready:
            raise Revert(f"CommitmentsNotReady({task_id}, {task.num_commits})")
        self._caller_round(task, round_, sender)
        if task.disclose_pos[round_]:
            raise Revert(f"AlreadyDisclosed({task_id}, {round_})")
        if len(result) > MAX_RESULT_BYTES:
            raise Revert(f"ResultTooLong({len(result)}, {MAX_RESULT_BYTES})")
        if commitment(result, nonce, sender) != task.seals[round_]:
            raise Revert(f"CommitmentMismatch({task_id}, {round_})")
        task.seals[round_] = keccak(bytes(result))
        task.num_disclosed += 1
        task.disclose_pos[round_] = task.num_disclosed
        emit(
            "TaskResultDisclosed",
            {"taskId": task_id, "round": round_, "node": sender, "result": bytes(result)},
        )
        return self._after_disclosure(task, round_, bytes(result), now, emit)

    def _round_at(self, task: FakeTask, position: int) -> int:
        return next(r for r in range(NUM_ROUNDS) if task.disclose_pos[r] == position)

    def _after_disclosure(self, task: FakeTask, round_: int, result: bytes, now: int, emit: Emit) -> str:
        """TaskSeals._afterDisclosure for GPT results (byte-equal results match)."""
        if task.decided_hash is not None:
            settled = task.seals[round_] == task.decided_hash
            self._end_round(task, round_, settled=settled, emit=emit)
            return "disclose"
        if task.num_disclosed == 2:
            first = self._round_at(task, 1)
            if task.seals[first] == task.seals[round_]:
                self._decide(task, first, round_, result, now, emit)
                return "decide"
        elif task.num_disclosed == 3:
            first, second = self._round_at(task, 1), self._round_at(task, 2)
            if task.seals[first] == task.seals[round_]:
                self._decide(task, first, round_, result, now, emit)
                self._end_round(task, second, settled=False, emit=emit)
            elif task.seals[second] == task.seals[round_]:
                self._decide(task, second, round_, result, now, emit)
                self._end_round(task, first, settled=False, emit=emit)
            else:
                task.is_ended = True
                emit("TaskAborted", {"taskId": task.task_id, "reason": "Task result illegal"})
                for r in range(NUM_ROUNDS):
                    self._end_round(task, r, settled=None, emit=emit)
            return "decide"
        return "disclose"

    def _decide(self, task: FakeTask, winner: int, partner: int, result: bytes, now: int, emit: Emit) -> None:
        task.result_round = winner
        task.decided_hash = task.seals[winner]
        emit("TaskSuccess", {"taskId": task.task_id, "result": result, "resultNode": task.nodes[winner]})
        self._give_response_window(task, now, emit)
        self._end_round(task, partner, settled=True, emit=emit)

    def _uploaded(self, task_id: int, round_: int, sender: str, emit: Emit) -> str:
        task = self.tasks.get(task_id)
        if task is None or task.decided_hash is None:
            raise Revert(f"TaskNotSucceeded({task_id})")
        self._caller_round(task, round_, sender)
        if round_ != task.result_round:
            raise Revert(f"NotResultNode({task_id}, {round_}, {task.result_round})")
        emit("TaskResultUploaded", {"taskId": task_id})
        task.is_ended = True
        self.num_succeeded += 1
        self._end_round(task, round_, settled=True, emit=emit)
        return "uploaded"

    def _cancel(self, task_id: int, sender: str, now: int, emit: Emit) -> str:
        task = self.tasks.get(task_id)
        if task is None:
            raise Revert(f"TaskNotFound({task_id})")
        if sender not in task.nodes and sender != CREATOR:
            raise Revert(f"NotAllowedToCancel({task_id}, {sender})")
        if now <= task.deadline:
            raise Revert(f"DeadlineNotPassed({task_id}, {task.deadline}, {now})")
        if not task.is_ended:
            task.is_ended = True
            emit("TaskAborted", {"taskId": task_id, "reason": "Task Cancelled"})
        open_rounds = [r for r in range(NUM_ROUNDS) if not task.ended[r]]
        for r in open_rounds:  # withheld disclosures are slashed (TaskSeals._endAfterDeadline)
            withheld = task.commitments_ready and not task.disclose_pos[r]
            self._end_round(task, r, settled=False if withheld else None, emit=emit)
        return "decide"

    def _end_round(self, task: FakeTask, round_: int, *, settled: bool | None, emit: Emit) -> None:
        """Task._endRound: True paid its share, False slashed, None cancelled; the node is freed (a slashed
        one too, here: the fake keeps every account serving); the last round deletes the task."""
        task.ended[round_] = True
        task.num_ended += 1
        is_last = task.num_ended == NUM_ROUNDS
        node = task.nodes[round_]
        if settled is True:
            commit_pos, disclose_pos = task.commit_pos[round_], task.disclose_pos[round_]
            score = POSITION_AWARDS[commit_pos - 1] + POSITION_AWARDS[disclose_pos - 1]
            share = task.balance if is_last else min(task.balance, task.fee * score // SCORE_DENOMINATOR)
            task.balance -= share
            emit("TaskNodeSuccess", {"taskId": task.task_id, "node": node, "fee": share})
            self.num_paid += 1
        elif settled is False:
            emit("TaskNodeSlashed", {"taskId": task.task_id, "node": node})
            self.num_slashed += 1
        else:
            emit("TaskNodeCancelled", {"taskId": task.task_id, "node": node})
            self.num_cancelled += 1
        if self.task_of.get(node) == task.task_id:
            del self.task_of[node]
            self.idle.add(node)
        if is_last:
            if task.balance:
                emit("TaskFeeRefunded", {"taskId": task.task_id, "creator": CREATOR, "amount": task.balance})
            del self.tasks[task.task_id]


# -- the chain ---------------------------------------------------------------------------------------------


@dataclass
class Block:
    number: int
    hash: str
    parent_hash: str
    timestamp: int
    tx_hashes: list[str]
    receipts: list[dict[str, Any]]
    logs: list[dict[str, Any]]
    gas_used: int
    receipts_json: bytes = b""  # eth_getBlockReceipts' result, serialized once


class FakeChain:
    def __init__(self, model: TaskModel, *, block_time_s: float):
        self.model = model
        self.block_time_s = block_time_s
        self.events = _event_specs(load_artifact("Task").abi)
        self.functions = _functions()
        self.blocks: list[Block] = []
        self.pool: list[Tx] = []  # received, not yet mined, in arrival order
        self.pool_hashes: dict[str, Tx] = {}
        self.mined_nonce: dict[str, int] = {}  # the next nonce each sender's mined transactions leave
        self.pending_nonce: dict[str, int] = {}
        self.receipts: dict[str, dict[str, Any]] = {}
        self.txs: dict[str, Tx] = {}
        self.reverts: dict[tuple[str, str, str], str] = {}  # (from, to, data) of a failed tx -> its reason
        self.stats: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.rpc_calls: Counter[str] = Counter()
        self.unknown: Counter[str] = Counter()
        self._mine(int(time.time()))  # the genesis block

    @property
    def head(self) -> Block:
        return self.blocks[-1]

    # -- blocks ---------------------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.block_time_s)
            self._mine(max(int(time.time()), self.head.timestamp))

    def _mine(self, timestamp: int) -> None:
        number = len(self.blocks)
        block_hash = "0x" + keccak(f"fake-block-{number}-{timestamp}".encode()).hex()
        parent = self.blocks[-1].hash if self.blocks else "0x" + "00" * 32
        block = Block(number, block_hash, parent, timestamp, [], [], [], 0)
        for tx in self._mineable():
            self._execute(block, tx)
        self._create_tasks(block)
        block.receipts_json = json.dumps(block.receipts).encode()
        self.blocks.append(block)
        self.stats["blocks"] += 1

    def _mineable(self) -> list[Tx]:
        """The pool's transactions each in its sender's nonce order (a gap holds the later ones back)."""
        chosen, waiting = [], []
        next_nonce = dict(self.mined_nonce)
        progress = True
        pool = self.pool
        while progress:
            progress, waiting = False, []
            for tx in pool:
                if tx.nonce == next_nonce.get(tx.sender, 0):
                    chosen.append(tx)
                    next_nonce[tx.sender] = tx.nonce + 1
                    progress = True
                else:
                    waiting.append(tx)
            pool = waiting
        self.pool = waiting
        for tx in chosen:
            self.pool_hashes.pop(tx.hash, None)
        return chosen

    def _emitter(self, block: Block, tx_hash: str, tx_index: int, logs: list[dict[str, Any]]) -> Emit:
        def emit(name: str, values: dict[str, Any]) -> None:
            spec = self.events[name]
            topics = [spec.topic0] + ["0x" + encode([t], [values[n]]).hex() for n, t in spec.indexed]
            data = encode(list(spec.data_types), [values[n] for n in spec.data_names])
            logs.append({
                "address": ADDRESSES["Task"], "topics": topics, "data": "0x" + data.hex(),
                "blockNumber": hex(block.number), "blockHash": block.hash,
                "blockTimestamp": hex(block.timestamp), "transactionHash": tx_hash,
                "transactionIndex": hex(tx_index), "logIndex": hex(len(block.logs) + len(logs)),
                "removed": False,
            })  # fmt: skip

        return emit

    def _receipt(self, block: Block, tx_hash: str, sender: str, to: str | None, status: int, gas: int,
                 logs: list[dict[str, Any]], price: int) -> None:  # fmt: skip
        block.gas_used += gas
        receipt = {
            "transactionHash": tx_hash, "transactionIndex": hex(len(block.receipts)), "blockHash": block.hash,
            "blockNumber": hex(block.number), "from": sender.lower(), "to": to.lower() if to else None,
            "cumulativeGasUsed": hex(block.gas_used), "gasUsed": hex(gas), "effectiveGasPrice": hex(price),
            "status": hex(status), "logs": logs, "logsBloom": EMPTY_BLOOM, "type": "0x2",
            "contractAddress": None,
        }  # fmt: skip
        block.receipts.append(receipt)
        block.tx_hashes.append(tx_hash)
        block.logs.extend(logs)
        self.receipts[tx_hash] = receipt

    def _execute(self, block: Block, tx: Tx) -> None:
        logs: list[dict[str, Any]] = []
        emit = self._emitter(block, tx.hash, len(block.receipts), logs)
        self.mined_nonce[tx.sender] = tx.nonce + 1
        price = min(tx.max_fee, BASE_FEE_WEI + tx.tip)
        status, gas = 1, GAS["transfer"]
        if tx.to is not None and tx.data:
            function = self.functions.get((tx.to, tx.data[:4]))
            try:
                if function is None:
                    raise Revert(f"UnknownFunction({tx.to}, 0x{tx.data[:4].hex()})")
                if function.contract != "Task":
                    raise Revert(f"NotModeled({function.contract}.{function.name})")
                args = decode(list(function.types), tx.data[4:])
                gas = GAS[self.model.call(function.name, args, tx.sender, block.timestamp, emit)]
                self.stats[f"mined:{function.name}"] += 1
            except Revert as exc:
                logs.clear()
                status, gas = 0, min(tx.gas, 30_000)
                reason = str(exc)
                self.failed[reason.split("(")[0]] += 1
                self.reverts[(tx.sender.lower(), (tx.to or "").lower(), "0x" + tx.data.hex())] = reason
                log.warning("[fake] reverted tx=%s from=%s: %s", tx.hash, tx.sender, reason)
        self.stats["txs_mined"] += 1
        self._receipt(block, tx.hash, tx.sender, tx.to, status, gas, logs, price)

    def _create_tasks(self, block: Block) -> None:
        """The application's createTask transactions of this block: one per task the idle nodes can take."""
        pending: list[dict[str, Any]] = []
        creations: list[list[dict[str, Any]]] = []

        def emit(name: str, values: dict[str, Any]) -> None:
            if name == "TaskPending":
                creations.append([])
            creations[-1].append({"name": name, "values": values})

        self.stats["tasks_created"] += self.model.create_tasks(block.timestamp, emit)
        for events in creations:
            tx_hash = "0x" + keccak(f"create-{events[0]['values']['taskId']}".encode()).hex()
            pending.clear()
            tx_emit = self._emitter(block, tx_hash, len(block.receipts), pending)
            for event in events:
                tx_emit(event["name"], event["values"])
            self._receipt(block, tx_hash, CREATOR, ADDRESSES["Task"], 1, 400_000, list(pending),
                          BASE_FEE_WEI + TIP_WEI)  # fmt: skip

    # -- JSON-RPC -------------------------------------------------------------------------------------------

    def handle(self, method: str, params: list[Any]) -> Any:
        self.rpc_calls[method] += 1
        handler = getattr(self, "rpc_" + method, None)
        if handler is None:
            self.unknown[method] += 1
            log.warning("[fake] unknown method %s %s", method, json.dumps(params)[:200])
            raise RpcFault(-32601, f"the fake network has no method {method}")
        return handler(*params)

    def _block(self, tag: str) -> Block | None:
        if tag in ("latest", "pending", "safe", "finalized"):
            return self.head
        if tag == "earliest":
            return self.blocks[0]
        number = int(tag, 16)
        return self.blocks[number] if number < len(self.blocks) else None

    def rpc_eth_chainId(self) -> str:
        return hex(CHAIN_ID)

    def rpc_net_version(self) -> str:
        return str(CHAIN_ID)

    def rpc_eth_blockNumber(self) -> str:
        return hex(self.head.number)

    def rpc_eth_gasPrice(self) -> str:
        return hex(BASE_FEE_WEI + TIP_WEI)

    def rpc_eth_maxPriorityFeePerGas(self) -> str:
        return hex(TIP_WEI)

    def rpc_eth_getBlockByNumber(self, tag: str, full: bool = False) -> dict[str, Any] | None:
        block = self._block(tag)
        if block is None:
            return None
        return {
            "number": hex(block.number), "hash": block.hash, "parentHash": block.parent_hash,
            "timestamp": hex(block.timestamp), "baseFeePerGas": hex(BASE_FEE_WEI),
            "gasLimit": hex(200_000_000), "gasUsed": hex(block.gas_used), "miner": "0x" + "00" * 20,
            "transactions": [self.rpc_eth_getTransactionByHash(h) for h in block.tx_hashes] if full
            else list(block.tx_hashes),
        }  # fmt: skip

    def rpc_eth_getBlockReceipts(self, tag: str) -> RawJson | None:
        block = self._block(tag)
        return None if block is None else RawJson(block.receipts_json)

    def rpc_eth_getTransactionReceipt(self, tx_hash: str) -> dict[str, Any] | None:
        return self.receipts.get(tx_hash)

    def rpc_eth_getTransactionByHash(self, tx_hash: str) -> dict[str, Any] | None:
        tx = self.txs.get(tx_hash)
        if tx is None:
            return None
        receipt = self.receipts.get(tx_hash)
        return {
            "hash": tx.hash, "from": tx.sender.lower(), "to": tx.to.lower() if tx.to else None,
            "nonce": hex(tx.nonce), "input": "0x" + tx.data.hex(), "value": hex(tx.value), "gas": hex(tx.gas),
            "blockNumber": receipt["blockNumber"] if receipt else None,
            "blockHash": receipt["blockHash"] if receipt else None,
        }  # fmt: skip

    def rpc_eth_getTransactionCount(self, address: str, tag: str = "latest") -> str:
        address = checksum_address(address)
        mined = self.mined_nonce.get(address, 0)
        if tag == "pending":
            return hex(max(mined, self.pending_nonce.get(address, 0)))
        return hex(mined)

    def rpc_eth_getBalance(self, address: str, tag: str = "latest") -> str:
        return hex(BALANCE_WEI)

    def rpc_eth_estimateGas(self, params: dict[str, Any], *_: Any) -> str:
        return hex(200_000)

    def rpc_eth_feeHistory(
        self, count: Any, newest: str, percentiles: list[float] | None = None
    ) -> dict[str, Any]:
        n = int(count, 16) if isinstance(count, str) else int(count)
        return {
            "oldestBlock": hex(max(self.head.number - n + 1, 0)),
            "baseFeePerGas": [hex(BASE_FEE_WEI)] * (n + 1), "gasUsedRatio": [0.5] * n,
            "reward": [[hex(TIP_WEI)] * len(percentiles or [])] * n,
        }  # fmt: skip

    def rpc_eth_sendRawTransaction(self, raw: str) -> str:
        self.stats["txs_received"] += 1
        try:
            tx = decode_raw_tx(raw)
        except Exception as exc:
            self.stats["txs_refused"] += 1
            raise RpcFault(-32602, f"invalid transaction: {exc}") from None
        if tx.hash in self.pool_hashes or tx.hash in self.receipts:
            self.stats["txs_refused"] += 1
            raise RpcFault(-32000, "already known")
        mined = self.mined_nonce.get(tx.sender, 0)
        if tx.nonce < mined:
            self.stats["txs_refused"] += 1
            raise RpcFault(-32000, f"nonce too low: next nonce {mined}, tx nonce {tx.nonce}")
        if tx.nonce < self.pending_nonce.get(tx.sender, 0):
            self.stats["txs_refused"] += 1  # the fake takes no replacement
            raise RpcFault(-32000, "replacement transaction underpriced")
        self.pending_nonce[tx.sender] = max(self.pending_nonce.get(tx.sender, 0), tx.nonce + 1)
        self.pool.append(tx)
        self.pool_hashes[tx.hash] = tx
        self.txs[tx.hash] = tx
        return tx.hash

    def rpc_eth_getLogs(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        first = (
            int(query.get("fromBlock", "0x0"), 16) if query.get("fromBlock") not in (None, "latest") else 0
        )
        to_tag = query.get("toBlock", "latest")
        last = self.head.number if to_tag in (None, "latest") else min(int(to_tag, 16), self.head.number)
        addresses = query.get("address")
        if isinstance(addresses, str):
            addresses = [addresses]
        wanted = {a.lower() for a in addresses} if addresses else None
        topics = query.get("topics") or []
        topic0 = topics[0] if topics else None
        topic0s = {topic0} if isinstance(topic0, str) else set(topic0) if topic0 else None
        found = []
        for number in range(first, last + 1):
            for entry in self.blocks[number].logs:
                if wanted is not None and entry["address"].lower() not in wanted:
                    continue
                if topic0s is not None and entry["topics"][0] not in topic0s:
                    continue
                found.append(entry)
        return found

    def rpc_eth_call(self, params: dict[str, Any], tag: str = "latest", *_: Any) -> str:
        to = checksum_address(params["to"])
        data = bytes.fromhex((params.get("data") or params.get("input") or "0x")[2:])
        function = self.functions.get((to, data[:4]))
        if function is None:
            raise RpcFault(-32000, f"the fake network has no function 0x{data[:4].hex()} at {to}")
        sender = (params.get("from") or "").lower()
        reason = self.reverts.get((sender, to.lower(), "0x" + data.hex()))
        if reason is not None:  # the replay of a failed transaction: its revert
            raise RpcFault(3, f"execution reverted: {reason}", revert_data(reason))
        args = decode(list(function.types), data[4:])
        values = self._view(function, args)
        if values is None:
            self.unknown[f"eth_call:{function.contract}.{function.name}"] += 1
            log.warning("[fake] eth_call of %s.%s not modeled", function.contract, function.name)
            raise RpcFault(3, "execution reverted: not modeled", revert_data(f"NotModeled({function.name})"))
        self.rpc_calls[f"eth_call:{function.contract}.{function.name}"] += 1
        return "0x" + encode(list(function.outputs), values).hex()

    def _view(self, function: _Function, args: tuple[Any, ...]) -> list[Any] | None:
        model = self.model
        match function.contract, function.name:
            case "Node", "nodeStatus":
                return [model.node_status(checksum_address(args[0]))]
            case "Node", "nodeStake":
                return [NODE_STAKE_WEI]
            case "Task", "taskTimeout":
                return [model.task_timeout_s]
            case "Task", "argumentsWait":
                return [model.arguments_wait_s]
            case "Task", "responseWindow":
                return [model.response_window_s]
            case "Task" | "Node", "credits":
                return [0]
            case "QoS", "score":
                return [0]
        return None


class RpcFault(Exception):
    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    def error(self) -> dict[str, Any]:
        error = {"code": self.code, "message": self.message}
        return error | ({"data": self.data} if self.data is not None else {})


class RawJson:
    """A result serialized once (a block's receipts): spliced into the answer as it is."""

    def __init__(self, data: bytes):
        self.data = data


# -- the server --------------------------------------------------------------------------------------------


class FakeNetwork:
    def __init__(self, chain: FakeChain):
        self.chain = chain
        self.relay: Counter[str] = Counter()
        self.started_s = time.monotonic()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_post("/", self.rpc)
        app.router.add_get("/v1/inference_tasks/{task_id}", self.get_args)
        app.router.add_post("/v1/inference_tasks/{task_id}/results", self.upload_results)
        app.router.add_get("/stats", self.stats)
        return app

    def _answer(self, request: dict[str, Any]) -> bytes:
        head = f'{{"jsonrpc":"2.0","id":{json.dumps(request.get("id"))},'.encode()
        try:
            result = self.chain.handle(request["method"], request.get("params") or [])
        except RpcFault as fault:
            return head + b'"error":' + json.dumps(fault.error()).encode() + b"}"
        except Exception as exc:  # a bug of the fake, or params it does not take: said, not hidden
            log.exception("[fake] %s failed", request.get("method"))
            return (
                head + b'"error":' + json.dumps({"code": -32603, "message": f"fake: {exc!r}"}).encode() + b"}"
            )
        body = result.data if isinstance(result, RawJson) else json.dumps(result).encode()
        return head + b'"result":' + body + b"}"

    async def rpc(self, request: web.Request) -> web.Response:
        payload = json.loads(await request.read())
        if isinstance(payload, list):
            body = b"[" + b",".join(self._answer(p) for p in payload) + b"]"
        else:
            body = self._answer(payload)
        return web.Response(body=body, content_type="application/json")

    async def get_args(self, request: web.Request) -> web.Response:
        """GET /v1/inference_tasks/{id}: the task's arguments (signature not checked)."""
        self.relay["get_args"] += 1
        args = self.chain.model.args.get(int(request.match_info["task_id"]))
        if args is None:
            return web.json_response({"message": "task not found"}, status=404)
        return web.json_response({"data": {"task_id": int(request.match_info["task_id"]), "task_args": args}})

    async def upload_results(self, request: web.Request) -> web.Response:
        """POST /v1/inference_tasks/{id}/results: the files read and dropped (signature not checked)."""
        self.relay["upload_results"] += 1
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            await part.read()  # type: ignore[union-attr]
        return web.json_response({"data": {}})

    async def stats(self, request: web.Request) -> web.Response:
        chain, model = self.chain, self.chain.model
        return web.json_response({
            "block": chain.head.number, "uptime_s": round(time.monotonic() - self.started_s, 1),
            "rpc_calls": dict(chain.rpc_calls), "unknown": dict(chain.unknown),
            "txs_received": chain.stats["txs_received"], "txs_refused": chain.stats["txs_refused"],
            "txs_mined": chain.stats["txs_mined"], "txs_failed": sum(chain.failed.values()),
            "failed_by_reason": dict(chain.failed), "tasks_created": chain.stats["tasks_created"],
            "tasks_succeeded": model.num_succeeded, "rounds_paid": model.num_paid,
            "rounds_slashed": model.num_slashed, "rounds_cancelled": model.num_cancelled,
            "relay": dict(self.relay), "mined_by_method": {
                k[6:]: v for k, v in chain.stats.items() if k.startswith("mined:")
            },
            "addresses": ADDRESSES,
        })  # fmt: skip


async def serve(port: int, accounts: list[str], block_time_s: float, task_timeout_s: int,
                response_window_s: int) -> None:  # fmt: skip
    model = TaskModel(accounts, task_timeout_s=task_timeout_s, response_window_s=response_window_s)
    chain = FakeChain(model, block_time_s=block_time_s)
    runner = web.AppRunner(FakeNetwork(chain).app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"fake network on port {port}, {len(accounts)} accounts", flush=True)
    await chain.run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--accounts", type=Path, required=True, help="a JSON list of the farm's node addresses"
    )
    parser.add_argument("--block-time", type=float, default=1.0)
    parser.add_argument("--task-timeout", type=int, default=900, help="Task.taskTimeout, s (the contract's)")
    parser.add_argument("--response-window", type=int, default=120, help="Task.responseWindow, s")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(message)s")
    accounts = json.loads(options.accounts.read_text())
    asyncio.run(
        serve(options.port, accounts, options.block_time, options.task_timeout, options.response_window)
    )


if __name__ == "__main__":
    main()
