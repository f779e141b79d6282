"""A test harness over a deployed network: transactions with decoded reverts, events, a money ledger.

Every transaction goes through ``Net.tx`` so the ledger knows each account's gas costs; the ledger then
checks, to the wei, that no native currency appeared or vanished: over all dev accounts and the five
contracts, balance changes + gas paid sum to zero, and each contract's balance equals what its books say
it holds (Node: stakes of nodes that have not quit + deferred credits; Task: fees of live tasks + credits +
the audit pool).
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_hash.auto import keccak
from eth_utils import to_checksum_address
from web3 import Web3
from web3.exceptions import ContractLogicError

from cluster.chain.artifacts import NETWORK_CONTRACTS, all_abis
from cluster.chain.contracts import NodeStatus, TaskStatus, TaskType
from cluster.chain.deploy import Deployment
from cluster.chain.revert import ContractRevert, RevertDecoder, abi_type
from cluster.protocol.hashes import commitment

GPU_A = ("NVIDIA GeForce RTX 4090", 24, "vllm-0.8.5")
GPU_B = ("NVIDIA GeForce RTX 3090", 24, "vllm-0.8.5")
GPU_C = ("NVIDIA H100 80GB HBM3", 80, "vllm-0.8.5")
GPU_SMALL = ("NVIDIA GeForce RTX 3060", 12, "vllm-0.8.5")
ETHER = 10**18
GAS_MARGIN = 1.3
# An estimate does not bound the mined gas: anvil estimates with the latest block's prevrandao and mines
# with a new one, so the mined block draws other nodes (a real chain too: the block is not known when the
# transaction is sent). A draw that takes its card model below three available nodes moves the model's
# other two between pools: among 9-12 nodes of three models, one createTask's cheapest and dearest draws
# were 118,000 gas apart for a sampled task (1.48 times), 230,000 for a full SD task (1.58 times). A
# call draws at most nine nodes (its own task's three, two queued tasks' three each): 130,000 a draw.
DRAW_ALLOWANCE = 9 * 130_000


def gas_limit(estimate: int) -> int:
    """The gas a transaction is sent with: its estimate can be another draw's (DRAW_ALLOWANCE)."""
    return int(estimate * GAS_MARGIN) + DRAW_ALLOWANCE


@dataclass(frozen=True, slots=True)
class Event:
    contract: str
    name: str
    args: dict[str, Any]


class Ledger:
    """Balances of every tracked account at the start, and the gas each one paid since."""

    def __init__(self, w3: Web3, addresses: Sequence[str]):
        self.w3 = w3
        self.addresses = list(addresses)
        self.start = {a: w3.eth.get_balance(a) for a in self.addresses}
        self.gas_paid: dict[str, int] = defaultdict(int)

    def track(self, address: str) -> None:
        """Adds an account created during the test (e.g. a contract) to the books."""
        self.addresses.append(address)
        self.start[address] = self.w3.eth.get_balance(address)

    def record_gas(self, sender: str, receipt: Any) -> None:
        self.gas_paid[sender] += receipt["gasUsed"] * receipt["effectiveGasPrice"]

    def received(self, address: str, balance: int | None = None) -> int:
        """Net value that reached ``address`` since the start (payments in - value sent), gas excluded."""
        balance = self.w3.eth.get_balance(address) if balance is None else balance
        return balance - self.start[address] + self.gas_paid[address]

    def assert_conserved(self) -> None:
        with self.w3.batch_requests() as batch:  # one request for every balance: checked after every step
            for address in self.addresses:
                batch.add(self.w3.eth.get_balance(address))
            balances = batch.execute()
        moved = {a: self.received(a, b) for a, b in zip(self.addresses, balances, strict=True)}
        assert sum(moved.values()) == 0, f"native currency not conserved: {moved}"


class Net:
    def __init__(self, w3: Web3, deployment: Deployment, *, num_tracked_accounts: int | None = None):
        self.w3 = w3
        self.deployment = deployment.bind(w3)
        self.node = self.deployment.contract("Node")
        self.task = self.deployment.contract("Task")
        self.queue = self.deployment.contract("TaskQueue")
        self.qos = self.deployment.contract("QoS")
        self.stats = self.deployment.contract("NetworkStats")
        self.accounts = list(w3.eth.accounts)
        self.owner = deployment.owner
        self.decoder = RevertDecoder(all_abis().values())
        self._secrets: dict[tuple[int, int], tuple[bytes, bytes]] = {}
        self._ended_ids: set[int] = set()
        self._views: dict[tuple[str, str], tuple[bytes, list[str], list[str]]] = {}
        outputs = self.task.functions.getTask(0).abi["outputs"][0]["components"]
        self._task_fields = [o["name"] for o in outputs]
        self._node_fields = [
            o["name"] for o in self.node.functions.nodeInfo(self.owner).abi["outputs"][0]["components"]
        ]
        self._event_abis: dict[tuple[str, bytes], tuple[str, Any]] = {}
        for name in NETWORK_CONTRACTS:
            contract = self.deployment.contract(name)
            for item in contract.abi:
                if item["type"] == "event":
                    signature = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
                    key = (contract.address, keccak(signature.encode()))
                    self._event_abis[key] = (name, contract.events[item["name"]]())
        tracked = self.accounts[:num_tracked_accounts] + [
            self.deployment.address(n) for n in NETWORK_CONTRACTS
        ]
        self.ledger = Ledger(w3, tracked)

    # -- reads ------------------------------------------------------------------------------------------

    def view(self, contract: Any, name: str, *args: Any) -> Any:
        """A view call through a raw eth_call: web3's per-call ABI resolution costs ~3 ms, this ~0.5 ms.

        Returns the single output, or a tuple of the outputs.
        """
        (value,) = self.views(contract, name, [args])
        return value

    def views(self, contract: Any, name: str, arg_lists: Sequence[Sequence[Any]]) -> list[Any]:
        """``view`` for each argument list, in one JSON-RPC batch (the books are checked after every step)."""
        key = (contract.address, name)
        if key not in self._views:
            (item,) = [i for i in contract.abi if i.get("type") == "function" and i["name"] == name]
            in_types = [abi_type(p) for p in item["inputs"]]
            selector = keccak(f"{name}({','.join(in_types)})".encode())[:4]
            self._views[key] = (selector, in_types, [abi_type(p) for p in item["outputs"]])
        selector, in_types, out_types = self._views[key]
        if not arg_lists:
            return []
        data = ["0x" + (selector + abi_encode(in_types, list(a))).hex() for a in arg_lists]
        calls = [("eth_call", [{"to": contract.address, "data": d}, "latest"]) for d in data]
        responses = self.w3.provider.make_batch_request(calls)
        assert isinstance(responses, list), responses  # a single response is an error of the whole batch
        out = []
        for response in sorted(responses, key=lambda r: r["id"]):
            assert "result" in response, response
            values = abi_decode(out_types, bytes.fromhex(response["result"][2:]))
            out.append(values[0] if len(values) == 1 else values)
        return out

    # -- transactions -----------------------------------------------------------------------------------

    def tx(self, call: Any, sender: str, value: int = 0) -> Any:
        params = {"from": sender, "value": value}
        try:
            gas = call.estimate_gas(params)
        except ContractLogicError as exc:
            raise self.decoder.decode(RevertDecoder.revert_data(exc.data) or b"") from None
        limit = gas_limit(gas)
        tx_hash = call.transact({**params, "gas": limit})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        self.ledger.record_gas(sender, receipt)
        if receipt["status"] != 1:
            block = self.w3.eth.get_block(receipt["blockNumber"])
            raise AssertionError(
                f"transaction reverted on chain: {call.fn_name} from {sender}, mined in block"
                f" {block['number']} at {block['timestamp']} (estimated {gas} gas, limit {limit}, used"
                f" {receipt['gasUsed']}): {self.mined_failure(tx_hash)}"
            )
        return receipt

    def mined_failure(self, tx_hash: bytes) -> str:
        """Why a mined transaction failed, from anvil's call trace: each failed call, outermost first, with
        its error and decoded revert (an inner "out of gas" reaches the caller as an empty revert)."""
        trace = self.w3.provider.make_request(
            "debug_traceTransaction", ["0x" + tx_hash.hex().removeprefix("0x"), {"tracer": "callTracer"}]
        ).get("result", {})
        names = {a.lower(): n for n, a in self.deployment.addresses.items()}
        failures = []
        frames = [trace]
        while frames:
            frame = frames.pop()
            if frame.get("error"):
                output = frame.get("output") or "0x"
                shown = f" {self.decoder.decode(output)}" if output != "0x" else ""
                to = names.get(str(frame.get("to")).lower(), frame.get("to"))
                failures.append(f"{frame.get('type')} to {to}: {frame['error']}{shown}")
            frames += reversed(frame.get("calls", []))
        return "; ".join(failures) or "no failed call in the trace"

    def reverts(self, call: Any, sender: str, value: int = 0) -> ContractRevert:
        """The decoded revert of a call that must fail (nothing is mined)."""
        try:
            self.tx(call, sender, value)
        except ContractRevert as exc:
            return exc
        raise AssertionError("the call did not revert")

    def events(self, receipt: Any, name: str | None = None) -> list[Event]:
        found = []
        for log in receipt["logs"]:
            known = self._event_abis.get((log["address"], bytes(log["topics"][0])))
            if known is None:
                continue
            contract_name, event = known
            decoded = event.process_log(log)
            if name is None or decoded["event"] == name:
                found.append(Event(contract_name, decoded["event"], dict(decoded["args"])))
        return found

    def event_args(self, receipt: Any, name: str) -> list[dict[str, Any]]:
        return [e.args for e in self.events(receipt, name)]

    def mine_after(self, seconds: int) -> None:
        self.w3.provider.make_request("evm_increaseTime", [seconds])
        self.w3.provider.make_request("evm_mine", [])

    # -- nodes ------------------------------------------------------------------------------------------

    def join(self, account: str, card: tuple[str, int, str] = GPU_A, stake: int | None = None) -> Any:
        stake = self.node_stake() if stake is None else stake
        return self.tx(self.node.functions.join(*card), account, stake)

    def join_all(self, accounts: Sequence[str], card: tuple[str, int, str] = GPU_A) -> None:
        for account in accounts:
            self.join(account, card)

    def join_paused(self, accounts: Sequence[str], card: tuple[str, int, str] = GPU_A) -> None:
        """Joined but paused: the network could run tasks of this card (none is refused as unrunnable),
        and none starts until the nodes resume."""
        for account in accounts:
            self.join(account, card)
            self.tx(self.node.functions.pause(), account)

    def resume(self, account: str) -> Any:
        return self.tx(self.node.functions.resume(), account)

    def node_stake(self) -> int:
        return self.node.functions.nodeStake().call()

    def status(self, account: str) -> NodeStatus:
        return NodeStatus(self.view(self.node, "nodeStatus", account))

    def node_info(self, account: str) -> dict[str, Any]:
        return dict(zip(self._node_fields, self.view(self.node, "nodeInfo", account), strict=True))

    def card_key(self, account: str) -> bytes:
        return self.node_info(account)["cardModelKey"]

    # -- tasks ------------------------------------------------------------------------------------------

    def create_task(
        self,
        creator: str,
        task_type: TaskType = TaskType.GPT,
        fee: int = ETHER,
        *,
        vram_limit: int = 0,
        cap: int = 1,
        task_hash: bytes | None = None,
    ) -> tuple[int, Any]:
        task_hash = task_hash or secrets.token_bytes(32)
        call = self.task.functions.createTask(int(task_type), task_hash, b"\0" * 32, vram_limit, cap)
        receipt = self.tx(call, creator, fee)
        (pending,) = self.event_args(receipt, "TaskPending")
        return pending["taskId"], receipt

    def create_task_with_validation(
        self,
        creator: str,
        validation: int,
        task_type: TaskType = TaskType.GPT,
        fee: int = ETHER,
        *,
        vram_limit: int = 0,
        cap: int = 1,
    ) -> tuple[int, Any]:
        """createTaskWithValidation: 0 Full, 1 Sampled, 2 Sampled with the result after the audit."""
        call = self.task.functions.createTaskWithValidation(
            int(task_type), secrets.token_bytes(32), b"\0" * 32, vram_limit, cap, int(validation)
        )
        receipt = self.tx(call, creator, fee)
        (pending,) = self.event_args(receipt, "TaskPending")
        return pending["taskId"], receipt

    def set_audit_rate(self, rate: int, *, pool: int = 0) -> None:
        """The audit rate N for tasks created afterwards, and `pool` funded into the audit pool."""
        self.tx(self.task.functions.setAuditRate(rate), self.owner)
        if pool:
            self.tx(self.task.functions.fundAuditPool(), self.owner, pool)

    def audit_draw(self, task_id: int) -> tuple[bool, bool]:
        """(whether the draw can be read yet, whether it audits the task)."""
        return self.view(self.task, "auditDraw", task_id)

    def get_task(self, task_id: int) -> dict[str, Any]:
        return self._task_dict(self.view(self.task, "getTask", task_id))

    def _task_dict(self, values: Sequence[Any]) -> dict[str, Any]:
        task = dict(zip(self._task_fields, values, strict=True))
        task["creator"] = to_checksum_address(task["creator"])
        task["rounds"] = [(to_checksum_address(r[0]), *r[1:]) for r in task["rounds"]]
        return task

    def task_hash(self, task_id: int) -> bytes:
        """The task's taskHash, from its TaskPending event (storage keeps it only while the task queues)."""
        pending = self.task.events.TaskPending().get_logs(from_block=0, argument_filters={"taskId": task_id})
        (log,) = pending
        return bytes(log["args"]["taskHash"])

    def task_status(self, task_id: int) -> TaskStatus:
        return TaskStatus(self.get_task(task_id)["status"])

    def selected(self, task_id: int) -> list[str]:
        """The nodes of rounds 0, 1, 2."""
        return [r[0] for r in self.get_task(task_id)["rounds"]]

    def commit(self, task_id: int, round_: int, result: bytes, *, nonce: bytes | None = None) -> Any:
        node = self.selected(task_id)[round_]
        nonce = nonce or secrets.token_bytes(32)
        self._secrets[(task_id, round_)] = (result, nonce)
        call = self.task.functions.submitTaskResultCommitment(
            task_id, round_, commitment(result, nonce, node)
        )
        return self.tx(call, node)

    def report_error(self, task_id: int, round_: int) -> Any:
        node = self.selected(task_id)[round_]
        return self.tx(self.task.functions.reportTaskError(task_id, round_), node)

    def disclose(self, task_id: int, round_: int, node: str | None = None) -> Any:
        node = node or self.selected(task_id)[round_]
        result, nonce = self._secrets[(task_id, round_)]
        return self.tx(self.task.functions.discloseTaskResult(task_id, round_, result, nonce), node)

    def upload(self, task_id: int, round_: int, node: str) -> Any:
        return self.tx(self.task.functions.reportResultsUploaded(task_id, round_), node)

    def cancel(self, task_id: int, sender: str) -> Any:
        return self.tx(self.task.functions.cancelTask(task_id), sender)

    def run(
        self, task_id: int, results: Sequence[bytes | None], order: Sequence[int] = (0, 1, 2)
    ) -> list[Any]:
        """Commits (``None``: reports an error) then discloses, both in ``order``; returns the receipts."""
        receipts = []
        for r in order:
            if results[r] is None:
                receipts.append(self.report_error(task_id, r))
            else:
                receipts.append(self.commit(task_id, r, results[r]))
        for r in order:
            if results[r] is not None:
                receipts.append(self.disclose(task_id, r))
        return receipts

    # -- books ------------------------------------------------------------------------------------------

    def known_nodes(self) -> list[str]:
        count = self.view(self.stats, "numKnownNodes")
        page = 500  # one eth_call walks a page: a whole crowd would exceed the call's gas
        return [
            to_checksum_address(n[0])
            for offset in range(0, count, page)
            for n in self.view(self.stats, "getNodes", offset, page)
        ]

    def live_tasks(self) -> dict[int, dict[str, Any]]:
        """Tasks whose storage still exists (an id never comes back once its task is deleted)."""
        live = {}
        ids = [i for i in range(1, self.view(self.task, "nextTaskId")) if i not in self._ended_ids]
        for task_id, values in zip(ids, self.views(self.task, "getTask", [[i] for i in ids]), strict=True):
            task = self._task_dict(values)
            if task["status"] == TaskStatus.NONE:
                self._ended_ids.add(task_id)
            else:
                live[task_id] = task
        return live

    def assert_books(self) -> dict[str, NodeStatus]:
        """Conservation to the wei, each contract's balance = what it owes, NetworkStats = the statuses.

        Returns the status of every node that ever joined, read from Node.
        """
        self.ledger.assert_conserved()
        known = self.known_nodes()
        infos = {
            n: dict(zip(self._node_fields, info, strict=True))
            for n, info in zip(known, self.views(self.node, "nodeInfo", [[n] for n in known]), strict=True)
        }
        statuses = {n: NodeStatus(info["status"]) for n, info in infos.items()}
        node_staked = self.view(self.node, "totalStaked")
        assert node_staked == sum(info["stake"] for info in infos.values())
        node_balance = self.w3.eth.get_balance(self.node.address)
        assert node_balance == node_staked + self.view(self.node, "totalCredits")
        live = self.live_tasks()
        escrow = sum(task["balance"] for task in live.values())
        assert self.view(self.task, "totalEscrowed") == escrow
        task_balance = self.w3.eth.get_balance(self.task.address)
        task_owes = self.view(self.task, "totalCredits") + self.view(self.task, "auditPool")
        assert task_balance == escrow + task_owes
        self._assert_stats(list(statuses.values()), list(live.values()))
        return statuses

    def _assert_stats(self, statuses: list[NodeStatus], live: list[dict[str, Any]]) -> None:
        total, available, busy, paused = self.view(self.stats, "nodeCounters")
        assert total == sum(s != NodeStatus.QUIT for s in statuses)
        assert available == statuses.count(NodeStatus.AVAILABLE)
        assert busy == sum(s.holds_task for s in statuses)
        assert paused == statuses.count(NodeStatus.PAUSED)
        assert available == self.view(self.node, "numAvailableNodes")
        tasks_total, queued, running, succeeded, aborted = self.view(self.stats, "taskCounters")
        assert tasks_total == self.view(self.task, "nextTaskId") - 1
        assert tasks_total == queued + running + succeeded + aborted
        assert queued == self.view(self.queue, "size") == self.view(self.task, "numQueued")
        running_now = (TaskStatus.STARTED, TaskStatus.COMMITMENTS_READY)
        assert running == sum(t["status"] in running_now and not t["isEnded"] for t in live)

    def task_counters(self) -> dict[str, int]:
        names = ("total", "queued", "running", "succeeded", "aborted")
        return dict(zip(names, self.stats.functions.taskCounters().call(), strict=True))
