"""Gas of the protocol's calls against the size of the network: 10 to 10,000 nodes, in one card model or
each node its own card model, with an empty and with a full queue.

Used by chain_gas.py (``--scaling``). Nodes join through anvil's impersonation in batches
(tests/contracts/crowd.py); every measured call then runs under the real 30M block gas limit. Each
measurement is the steady state: a first task on the same nodes runs before the measured one.

Both benchmarks run on a deterministic chain (tests/contracts/fixed_chain.py): the same contracts measure
the same gas on every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median_low as median
from typing import Any

from eth_hash.auto import keccak
from web3 import Web3
from web3.logs import DISCARD

from cluster.chain.anvil import Anvil
from cluster.chain.contracts import TaskType
from cluster.chain.deploy import Deployment, deploy_network
from cluster.protocol.hashes import commitment
from tests.contracts.crowd import Card, Rpc, crowd_addresses, impersonating, join_crowd, own_card_models
from tests.contracts.fixed_chain import FixedBytes, deterministic_anvil, pass_deadline

GPU_A: Card = ("NVIDIA GeForce RTX 4090", 24, "vllm-0.8.5")
GPU_BIG: Card = ("NVIDIA H200", 141, "vllm-0.8.5")  # joined and paused: queued tasks could run one day
ETHER = 10**18
TIMEOUT_S = 15 * 60
QUEUE_SIZE = 50
# SD tasks above the trio's 24 GB: in "own card models" the three nodes are then always three card models
# and three VRAM leaves, at 10 nodes as at 10,000 (below it, a small network often draws the trio).
SD_VRAM_LIMIT = 25
WARM_UP = 3
MEASURED = 5
LAYOUTS = ("one card model", "own card models")
OPERATIONS = (
    "createTask (GPT, starts)",
    "discloseTaskResult #2 (settles, pays 2)",
    "GPT lifecycle total",
    "createTask (SD, starts)",
    "cancelTask (timed out, 3 nodes)",
    "Node.join (new card model)",
    "Node.join (existing card model)",
    "createTask (queued, full queue: evicts)",
    "discloseTaskResult #2 (settles, full queue)",
    "cancelTask (timed out, full queue)",
)


def season(rpc: Rpc, deployment: Deployment, addresses: list[str]) -> None:
    """Gives the nodes a long QoS history (1,000 tasks averaging 19.5: weight 19, which no 26 more tasks
    can change, whatever their scores), as nodes of a network in its steady state have. Call it before
    the nodes join (their weight is read then). Without it a task in a large network lands on nodes that
    never ran one: it pays 20,000 gas for each first history write, and each node's new weight class
    grows a list into slots never written, where a small network's warm-up tasks already wrote them.
    Among three nodes of short histories, each node's lifetime average moves with every task, and the
    three often stand in different weight classes for dozens of tasks: a node alone in its class leaves
    its list without moving another, and the same task costs 25,000-45,000 gas less than among three in
    one class. Both are differences of a node's first tasks, not of the network's size or the contracts.
    """
    history = 19_500 | (1_000 << 64) | (3 << 128) | (0x141414 << 136)  # total, tasks, 3 recent of 20
    qos, slot = deployment.address("QoS"), _histories_slot(rpc, deployment)
    value = "0x" + history.to_bytes(32, "big").hex()
    for start in range(0, len(addresses), 500):
        keys = [
            "0x" + keccak(bytes.fromhex(a[2:].rjust(64, "0")) + slot).hex()
            for a in addresses[start : start + 500]
        ]
        rpc.batch([("anvil_setStorageAt", [qos, key, value]) for key in keys])


def _histories_slot(rpc: Rpc, deployment: Deployment) -> bytes:
    """The storage slot of QoS.histories, found by writing a probe and reading it through the getter."""
    qos = deployment.contract("QoS")
    probe = crowd_addresses(1, "probe")[0]
    for index in range(16):
        slot = index.to_bytes(32, "big")
        key = "0x" + keccak(bytes.fromhex(probe[2:].rjust(64, "0")) + slot).hex()
        rpc.call("anvil_setStorageAt", [qos.address, key, "0x" + (7).to_bytes(32, "big").hex()])
        found = qos.functions.histories(probe).call()[0] == 7
        rpc.call("anvil_setStorageAt", [qos.address, key, "0x" + bytes(32).hex()])
        if found:
            return slot
    raise RuntimeError("QoS.histories not found in the first 16 storage slots")


@dataclass
class ScalingTable:
    sizes: list[int]
    # layout -> operation -> size -> gas
    gas: dict[str, dict[str, dict[int, int]]] = field(default_factory=dict)

    def spread(self, layout: str, operation: str) -> float:
        """(max - min) / min over the sizes: 0.1 means flat within 10%."""
        values = list(self.gas[layout][operation].values())
        return (max(values) - min(values)) / min(values)


class ScaleBench:
    """One network, grown step by step; each measurement runs in a snapshot that is reverted after."""

    def __init__(self, anvil: Anvil, layout: str):
        self.anvil = anvil
        self.layout = layout
        self.w3: Web3 = anvil.web3()
        owner = self.w3.eth.accounts[0]
        self.deployment: Deployment = deploy_network(self.w3, owner).bind(self.w3)
        self.node = self.deployment.contract("Node")
        self.task = self.deployment.contract("Task")
        self.queue = self.deployment.contract("TaskQueue")
        self.owner = owner
        self.creator = self.w3.eth.accounts[1]
        self.rpc = Rpc(anvil.rpc_url)
        self.size = 0
        self._secrets: dict[tuple[int, int], tuple[bytes, bytes]] = {}
        self.fixed_bytes = FixedBytes()
        # Three paused H200 nodes: GPT tasks up to 141 GB could run one day, so they queue rather than
        # being refused; one trio of the measured card model so GPT tasks start.
        self._grow([GPU_BIG] * 3, "big")
        for address in crowd_addresses(3, "big"):
            self.send(address, self.node, "pause")
        self._grow([GPU_A] * 3, "trio")

    # -- growing ------------------------------------------------------------------------------------------

    def grow_to(self, size: int) -> None:
        """Adds nodes until ``size`` are available (the trio counts)."""
        count = size - 3 - self.size
        if count <= 0:
            return
        salt = f"crowd{self.size}"
        cards = [GPU_A] * count if self.layout == LAYOUTS[0] else own_card_models(count, salt)
        self._grow(cards, salt)
        self.size += count

    def _grow(self, cards: list[Card], salt: str) -> None:
        season(self.rpc, self.deployment, crowd_addresses(len(cards), salt))  # they join with weight 19
        join_crowd(self.anvil.rpc_url, self.node, cards, salt)

    # -- sending ------------------------------------------------------------------------------------------

    def send(self, sender: str, contract: Any, fn: str, *args: Any, value: int = 0) -> dict[str, Any]:
        tx = {
            "from": sender,
            "to": contract.address,
            "value": hex(value),
            "data": contract.encode_abi(fn, args),
        }
        with impersonating(self.anvil.rpc_url) as rpc:
            gas = int(rpc.call("eth_estimateGas", [tx]), 16)
            tx_hash = rpc.call("eth_sendTransaction", [{**tx, "gas": hex(gas * 13 // 10)}])
            receipt = None
            while receipt is None:  # automine: the block follows the send at once
                receipt = rpc.call("eth_getTransactionReceipt", [tx_hash])
        if int(receipt["status"], 16) != 1:
            raise RuntimeError(f"{fn} failed: {receipt}")
        return receipt

    def gas(self, receipt: dict[str, Any]) -> int:
        return int(receipt["gasUsed"], 16)

    def gas_of(self, sender: str, contract: Any, fn: str, *args: Any, value: int = 0) -> int:
        return self.gas(self.send(sender, contract, fn, *args, value=value))

    def snapshot(self) -> str:
        return self.rpc.call("evm_snapshot", [])

    def revert(self, snapshot: str) -> None:
        self.rpc.call("evm_revert", [snapshot])

    def pass_deadline(self) -> None:
        pass_deadline(self.rpc, TIMEOUT_S + 1)

    # -- tasks --------------------------------------------------------------------------------------------

    def create(
        self, task_type: TaskType, vram_limit: int = 0, fee: int = ETHER, cap: int = 1
    ) -> tuple[int, int]:
        receipt = self.send(
            self.creator, self.task, "createTask", int(task_type), self.fixed_bytes("task"), b"\0" * 32,
            vram_limit, cap, value=fee,
        )  # fmt: skip
        (log,) = self.task.events.TaskPending().process_receipt(_web3_receipt(receipt), errors=DISCARD)
        return log["args"]["taskId"], self.gas(receipt)

    def rounds(self, task_id: int) -> list[str]:
        fields = [c["name"] for c in self.task.functions.getTask(task_id).abi["outputs"][0]["components"]]
        task = dict(zip(fields, self.task.functions.getTask(task_id).call(), strict=True))
        return [Web3.to_checksum_address(r[0]) for r in task["rounds"]]

    def gpt_lifecycle(self) -> dict[str, int]:
        task_id, create_gas = self.create(TaskType.GPT)
        nodes = self.rounds(task_id)
        result = keccak(b"the answer")
        steps = {"create": create_gas}
        for r, node in enumerate(nodes):
            nonce = self.fixed_bytes("nonce")
            self._secrets[(task_id, r)] = (result, nonce)
            call = ("submitTaskResultCommitment", task_id, r, commitment(result, nonce, node))
            steps[f"commit {r}"] = self.gas(self.send(node, self.task, *call))
        for r, node in enumerate(nodes):
            result, nonce = self._secrets[(task_id, r)]
            steps[f"disclose {r}"] = self.gas(
                self.send(node, self.task, "discloseTaskResult", task_id, r, result, nonce)
            )
        steps["upload"] = self.gas(self.send(nodes[0], self.task, "reportResultsUploaded", task_id, 0))
        return steps

    def fill_queue(self) -> None:
        """QUEUE_SIZE GPT tasks no available trio can take (VRAM limits 30..79: one queue group each)."""
        for i in range(QUEUE_SIZE):
            self.create(TaskType.GPT, vram_limit=30 + i, fee=ETHER)

    # -- one size -----------------------------------------------------------------------------------------

    def measure(self) -> dict[str, int]:
        """Each figure is the median of MEASURED runs after WARM_UP ones: a call's gas depends on which
        storage slots it finds written (20,000 gas for a zero slot, 2,900 for a written one), which the
        random draw varies; the median of the steady state is what a network pays per call."""
        out: dict[str, int] = {}
        snap = self.snapshot()
        for _ in range(WARM_UP):
            self.gpt_lifecycle()
        runs = [self.gpt_lifecycle() for _ in range(MEASURED)]
        out["createTask (GPT, starts)"] = median(r["create"] for r in runs)
        out["discloseTaskResult #2 (settles, pays 2)"] = median(r["disclose 1"] for r in runs)
        out["GPT lifecycle total"] = median(sum(r.values()) for r in runs)
        creates, cancels = [], []
        for _ in range(MEASURED):
            sd_limit = SD_VRAM_LIMIT if self.layout == LAYOUTS[1] else 0
            task_id, gas = self.create(TaskType.SD, vram_limit=sd_limit)
            creates.append(gas)
            self.pass_deadline()
            cancels.append(self.gas_of(self.creator, self.task, "cancelTask", task_id))
        out["createTask (SD, starts)"] = median(creates)
        out["cancelTask (timed out, 3 nodes)"] = median(cancels)
        self.revert(snap)

        snap = self.snapshot()
        stake = self.node.functions.nodeStake().call()
        with impersonating(self.anvil.rpc_url) as rpc:
            newcomers = crowd_addresses(2, f"newcomer{self.size}")
            rpc.batch([("anvil_setBalance", [a, hex(stake * 2)]) for a in newcomers])
        card = ("a new card model", GPU_A[1], "vllm-0.8.5")  # the trio's VRAM: its tree entries are written
        out["Node.join (new card model)"] = self.gas(
            self.send(newcomers[0], self.node, "join", *card, value=stake)
        )
        out["Node.join (existing card model)"] = self.gas(
            self.send(newcomers[1], self.node, "join", *GPU_A, value=stake)
        )
        self.revert(snap)

        snap = self.snapshot()
        for _ in range(WARM_UP):
            self.gpt_lifecycle()
        self.fill_queue()
        evicting = []
        for _ in range(MEASURED):  # each outbids the lowest queued task, a little more each time
            evicting.append(self.create(TaskType.GPT, vram_limit=29, fee=(2 + len(evicting)) * ETHER)[1])
        out["createTask (queued, full queue: evicts)"] = median(evicting)
        runs = [self.gpt_lifecycle() for _ in range(MEASURED)]
        out["discloseTaskResult #2 (settles, full queue)"] = median(r["disclose 1"] for r in runs)
        cancels = []
        for _ in range(MEASURED):
            task_id, _ = self.create(TaskType.GPT)
            self.pass_deadline()
            cancels.append(self.gas_of(self.creator, self.task, "cancelTask", task_id))
        out["cancelTask (timed out, full queue)"] = median(cancels)
        self.revert(snap)
        return out


def _web3_receipt(raw: dict[str, Any]) -> dict[str, Any]:
    """web3's log processing wants typed fields: the raw JSON receipt, decoded just enough."""
    logs = [
        {
            **log,
            "topics": [bytes.fromhex(t[2:]) for t in log["topics"]],
            "data": bytes.fromhex(log["data"][2:]),
            "logIndex": int(log["logIndex"], 16),
            "transactionIndex": int(log["transactionIndex"], 16),
            "blockNumber": int(log["blockNumber"], 16),
            "address": Web3.to_checksum_address(log["address"]),
        }
        for log in raw["logs"]
    ]
    return {**raw, "logs": logs}


def measure_scaling(sizes: list[int], seed: int = 0) -> ScalingTable:
    table = ScalingTable(sizes=sizes)
    for layout in LAYOUTS:
        with deterministic_anvil(num_accounts=4, seed=seed) as anvil:
            bench = ScaleBench(anvil, layout)
            rows: dict[str, dict[int, int]] = {op: {} for op in OPERATIONS}
            for size in sizes:
                bench.grow_to(size)
                for op, gas in bench.measure().items():
                    rows[op][size] = gas
                print(f"  {layout}, {size} nodes: done", flush=True)
            table.gas[layout] = rows
    return table


def scaling_markdown(table: ScalingTable) -> list[str]:
    head = "| call | " + " | ".join(f"{n:,} nodes" for n in table.sizes) + " | spread |"
    lines = [
        "## Gas against the size of the network",
        "",
        "Generated by `python benchmarks/chain_gas.py --scaling` (benchmarks/chain_scaling.py). Nodes join",
        "through anvil's impersonation in batches and get a long QoS history (weight 19), as nodes of a",
        "network in its steady state have; every measured call then runs under the 30M block gas limit.",
        "Each figure is the median of 5 runs after 3 warm-up tasks, on the deterministic chain of the",
        'first seed (reproducible to the gas, as above). "Own card models": every node is its own card',
        "model, VRAM spread over 8..4,000 GB, plus the three nodes of one card model that GPT tasks need;",
        "its SD tasks ask for more than their 24 GB, so the three nodes are always three card models.",
        '"Full queue": 50 queued GPT tasks in 50 queue groups (VRAM limits 30..79, which no available trio',
        "has). Spread: (max - min) / min across the sizes. A call's gas still varies by the storage slots",
        "it finds written (20,000 gas for a zero slot, 2,900 for a written one) and by where the drawn",
        "nodes stand in their lists, which the draw picks: that is the spread left, and it does not grow",
        "with the network.",
        "",
        "The first contracts walked every card model: createTask cost 2.41M gas at 1,000 nodes of one",
        "card model and 7.39-9.52M at 3,000, and no task fitted a block past about 4,200 card models.",
        "",
    ]
    for layout, rows in table.gas.items():
        lines += [f"### {layout}", "", head, "|---|" + "---:|" * (len(table.sizes) + 1)]
        for op, by_size in rows.items():
            cells = " | ".join(f"{by_size[n]:,}" for n in table.sizes)
            lines.append(f"| {op} | {cells} | {table.spread(layout, op):.1%} |")
        lines.append("")
    return lines
