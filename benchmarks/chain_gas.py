"""Gas of every contract call and of whole task lifecycles (GPT and SD, 3 nodes), on a local anvil.

Run: python benchmarks/chain_gas.py  (writes benchmarks/results/chain_gas.md and chain_gas.json)

The numbers are a snapshot committed beside the code, so that a change in cost shows in review. Calls
that select nodes (createTask, a join that starts a queued task) vary slightly with the random draw; the
lifecycle totals sum the calls that the creator and the nodes pay.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_hash.auto import keccak
from web3 import Web3

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks.* and tests.* (run as a script)
from web3.logs import DISCARD

from benchmarks.chain_scaling import ScalingTable, measure_scaling, scaling_markdown
from cluster.chain.anvil import Anvil
from cluster.chain.artifacts import NETWORK_CONTRACTS, load_artifact
from cluster.chain.contracts import TaskType
from cluster.chain.deploy import deploy_network
from cluster.protocol.hashes import commitment

RESULTS_DIR = Path(__file__).parent / "results"
GPU_A = ("NVIDIA GeForce RTX 4090", 24, "vllm-0.8.5")
GPU_B = ("NVIDIA GeForce RTX 3090", 24, "vllm-0.8.5")
ETHER = 10**18
TIMEOUT_S = 15 * 60
LIFECYCLE_WARM_UP = 10
LIFECYCLE_RUNS = 5


@dataclass
class GasBook:
    calls: dict[str, int] = field(default_factory=dict)  # label -> gas used
    lifecycles: dict[str, dict[str, int | str]] = field(default_factory=dict)


class Bench:
    def __init__(self, w3: Web3):
        self.w3 = w3
        self.accounts = list(w3.eth.accounts)
        self.deployment = deploy_network(w3, self.accounts[0])
        self.node = self.deployment.contract("Node")
        self.task = self.deployment.contract("Task")
        self.book = GasBook()
        self._secrets: dict[tuple[int, int], tuple[bytes, bytes]] = {}

    def send(self, call: Any, sender: str, value: int = 0, label: str | None = None) -> Any:
        gas = call.estimate_gas({"from": sender, "value": value})
        tx_hash = call.transact({"from": sender, "value": value, "gas": gas * 2})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        assert receipt["status"] == 1
        if label is not None:
            self.book.calls[label] = receipt["gasUsed"]
        return receipt

    def snapshot(self) -> str:
        return self.w3.provider.make_request("evm_snapshot", [])["result"]

    def revert(self, snapshot: str) -> None:
        self.w3.provider.make_request("evm_revert", [snapshot])

    def create(self, creator: str, task_type: TaskType, label: str | None = None, fee: int = ETHER) -> int:
        call = self.task.functions.createTask(int(task_type), secrets.token_bytes(32), b"\0" * 32, 0, 1)
        receipt = self.send(call, creator, fee, label)
        (log,) = self.task.events.TaskPending().process_receipt(receipt, errors=DISCARD)
        return log["args"]["taskId"]

    def rounds(self, task_id: int) -> list[str]:
        """The nodes of rounds 0, 1, 2."""
        fields = [c["name"] for c in self.task.functions.getTask(task_id).abi["outputs"][0]["components"]]
        task = dict(zip(fields, self.task.functions.getTask(task_id).call(), strict=True))
        return [r[0] for r in task["rounds"]]

    def commit(self, task_id: int, r: int, result: bytes, label: str | None = None) -> Any:
        node = self.rounds(task_id)[r]
        nonce = secrets.token_bytes(32)
        self._secrets[(task_id, r)] = (result, nonce)
        call = self.task.functions.submitTaskResultCommitment(task_id, r, commitment(result, nonce, node))
        return self.send(call, node, 0, label)

    def disclose(self, task_id: int, r: int, label: str | None = None) -> Any:
        node = self.rounds(task_id)[r]
        result, nonce = self._secrets[(task_id, r)]
        return self.send(self.task.functions.discloseTaskResult(task_id, r, result, nonce), node, 0, label)

    def lifecycle(self, name: str, task_type: TaskType, result: bytes) -> None:
        """create -> 3 commits -> 3 disclosures -> upload, all three nodes agreeing.

        The first task on a fresh network pays for storage slots that later tasks find already written
        (QoS histories, counters, each node's seal); the next tasks still meet a few slots for the first
        time (a node's weight class it never had, a round position it never held). The steady state is
        the median task of LIFECYCLE_RUNS after LIFECYCLE_WARM_UP, shown step by step, with the range.
        """
        snap = self.snapshot()
        self.join_three(GPU_A)
        first = self._one_task(task_type, result)
        for _ in range(LIFECYCLE_WARM_UP):
            self._one_task(task_type, result)
        runs = [self._one_task(task_type, result) for _ in range(LIFECYCLE_RUNS)]
        runs.sort(key=lambda s: sum(s.values()))
        steps: dict[str, int | str] = dict(runs[len(runs) // 2])
        steps["total"] = sum(runs[len(runs) // 2].values())
        low, high = sum(runs[0].values()), sum(runs[-1].values())
        steps[f"total, range over {LIFECYCLE_RUNS} tasks"] = f"{low:,} - {high:,}"
        steps["total, first task on a fresh network"] = sum(first.values())
        self.book.lifecycles[name] = steps
        self.revert(snap)

    def _one_task(self, task_type: TaskType, result: bytes) -> dict[str, int]:
        steps: dict[str, int] = {}
        call = self.task.functions.createTask(int(task_type), secrets.token_bytes(32), b"\0" * 32, 0, 1)
        receipt = self.send(call, self.accounts[1], ETHER)
        task_id = self.task.events.TaskPending().process_receipt(receipt, errors=DISCARD)[0]["args"]["taskId"]
        steps["createTask (starts, selects 3 nodes)"] = receipt["gasUsed"]
        for r in range(3):
            steps[f"submitTaskResultCommitment #{r + 1}"] = self.commit(task_id, r, result)["gasUsed"]
        steps["discloseTaskResult #1"] = self.disclose(task_id, 0)["gasUsed"]
        steps["discloseTaskResult #2 (TaskSuccess, pays node 2)"] = self.disclose(task_id, 1)["gasUsed"]
        steps["discloseTaskResult #3 (pays node 3)"] = self.disclose(task_id, 2)["gasUsed"]
        node0 = self.rounds(task_id)[0]
        upload = self.send(self.task.functions.reportResultsUploaded(task_id, 0), node0)
        steps["reportResultsUploaded (pays, deletes the task)"] = upload["gasUsed"]
        return steps

    def join_three(self, card: tuple[str, int, str], first: int = 3) -> list[str]:
        nodes = self.accounts[first : first + 3]
        for n in nodes:
            self.send(self.node.functions.join(*card), n, self.node.functions.nodeStake().call())
        return nodes

    def node_calls(self) -> None:
        snap = self.snapshot()
        stake = self.node.functions.nodeStake().call()
        a, b = self.accounts[3:5]
        self.send(self.node.functions.join(*GPU_A), a, stake, "Node.join (new card model)")
        self.send(self.node.functions.join(*GPU_A), b, stake, "Node.join (existing card model)")
        self.send(self.node.functions.pause(), a, 0, "Node.pause (Available -> Paused)")
        self.send(self.node.functions.resume(), a, 0, "Node.resume")
        self.send(self.node.functions.quit(), a, 0, "Node.quit (refunds the stake)")
        self.revert(snap)

    def task_calls(self) -> None:
        snap = self.snapshot()
        creator = self.accounts[1]
        nodes = self.join_three(GPU_A)
        self.send(self.node.functions.pause(), nodes[2], 0)  # a GPT task could run, not now: it queues
        queued = self.create(creator, TaskType.GPT, "Task.createTask (queued)")
        self.send(self.task.functions.cancelTask(queued), creator, 0, "Task.cancelTask (queued, refund)")
        self.create(creator, TaskType.GPT, None)
        self.send(self.node.functions.resume(), nodes[2], 0, "Node.resume (starts a queued task)")
        self.revert(snap)

        snap = self.snapshot()
        self.join_three(GPU_A)
        self.create(creator, TaskType.SD, "Task.createTask (SD, starts at once)")
        self.revert(snap)

        snap = self.snapshot()
        self.join_three(GPU_A)
        task_id = self.create(creator, TaskType.GPT, "Task.createTask (GPT, starts at once)")
        self.send(
            self.task.functions.reportTaskError(task_id, 0),
            self.rounds(task_id)[0],
            0,
            "Task.reportTaskError #1",
        )
        self.send(
            self.task.functions.reportTaskError(task_id, 1), self.rounds(task_id)[1], 0,
            "Task.reportTaskError #2 (aborts, pays 2 nodes)",
        )  # fmt: skip
        self.revert(snap)

        snap = self.snapshot()
        self.join_three(GPU_A)
        task_id = self.create(creator, TaskType.GPT)
        self.w3.provider.make_request("evm_increaseTime", [TIMEOUT_S + 1])
        self.w3.provider.make_request("evm_mine", [])
        self.send(self.task.functions.cancelTask(task_id), creator, 0, "Task.cancelTask (timed out, 3 nodes)")
        self.revert(snap)

        snap = self.snapshot()
        self.join_three(GPU_A)
        task_id = self.create(creator, TaskType.GPT)
        r1, r2 = keccak(b"1"), keccak(b"2")
        for r, result in enumerate((r1, r1, r2)):
            self.commit(task_id, r, result)
        self.disclose(task_id, 0)
        self.disclose(task_id, 1)
        self.disclose(task_id, 2, "Task.discloseTaskResult (mismatch: slashes)")
        self.revert(snap)

        snap = self.snapshot()
        self.join_three(GPU_A)
        task_id = self.create(creator, TaskType.GPT)
        self.create(creator, TaskType.GPT)  # waits for the nodes of the first
        for r in range(3):
            self.commit(task_id, r, r1)
        self.disclose(task_id, 0)
        self.disclose(task_id, 1, "Task.discloseTaskResult #2 (pays, starts a queued task)")
        self.revert(snap)

    @staticmethod
    def code_sizes() -> dict[str, int]:
        return {name: load_artifact(name).deployed_size_bytes for name in NETWORK_CONTRACTS}


def write_results(book: GasBook, sizes: dict[str, int], out_dir: Path, scaling: ScalingTable | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"calls": book.calls, "lifecycles": book.lifecycles, "deployed_bytes": sizes}
    if scaling is not None:
        data["scaling"] = {"sizes": scaling.sizes, "gas": scaling.gas}
    (out_dir / "chain_gas.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    lines = [
        "# Gas of the network's contracts",
        "",
        "Generated by `python benchmarks/chain_gas.py` on a local anvil (solc 0.8.28, optimizer 200 runs,",
        "cancun). Nodes of one card model; the fee is 1 CNX; results agree unless stated. Lifecycle steps",
        f"are the steady state: the median task of {LIFECYCLE_RUNS} after {LIFECYCLE_WARM_UP} warm-up tasks",
        "on the same three nodes, with the range of the totals (a task still meets the odd storage slot",
        "for the first time, 20,000 gas instead of 2,900: a weight class a node never had, a round",
        "position it never held).",
        "Single calls run on a fresh network. `python benchmarks/gas_profile.py` shows where each",
        "transaction's gas goes.",
        "",
        "## Whole task lifecycles (3 nodes)",
        "",
    ]
    for name, steps in book.lifecycles.items():
        lines += [f"### {name}", "", "| step | gas |", "|---|---:|"]
        lines += [
            f"| {step} | {gas:,} |" if isinstance(gas, int) else f"| {step} | {gas} |"
            for step, gas in steps.items()
        ]
        lines.append("")
    lines += ["## Single calls", "", "| call | gas |", "|---|---:|"]
    lines += [f"| {label} | {gas:,} |" for label, gas in book.calls.items()]
    lines += [
        "",
        "## Deployed code size (EIP-170 limit: 24,576 bytes)",
        "",
        "| contract | bytes |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {size:,} |" for name, size in sizes.items()]
    if scaling is not None:
        lines += ["", *scaling_markdown(scaling)]
    (out_dir / "chain_gas.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--scaling",
        default="10,100,1000,10000",
        help="network sizes of the scaling table, comma-separated ('' to skip it)",
    )
    args = parser.parse_args()
    with Anvil(num_accounts=10) as anvil:
        bench = Bench(anvil.web3())
        bench.lifecycle("GPT task, 3 nodes agree", TaskType.GPT, keccak(b"gpt result"))
        bench.lifecycle(
            "SD task (2 images), 3 nodes agree", TaskType.SD, bytes.fromhex("0123456789abcdef" * 2)
        )
        bench.node_calls()
        bench.task_calls()
        sizes = [int(n) for n in args.scaling.split(",") if n]
        scaling = measure_scaling(sizes) if sizes else None
        write_results(bench.book, bench.code_sizes(), args.out, scaling)
    print((args.out / "chain_gas.md").read_text())


if __name__ == "__main__":
    main()
