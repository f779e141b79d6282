"""Gas of every contract call and of whole task lifecycles (GPT and SD, 3 nodes), on a local anvil.

Also the sampled audits of issue 28: mean gas and GPU runs per GPT task at audit rates N = 1, 10 and 100,
audits included (``--audit-rates``), on a network of six seasoned nodes of one card model.

Run: python benchmarks/chain_gas.py  (writes benchmarks/results/chain_gas.md and chain_gas.json)

The numbers are a snapshot committed beside the code, so that a change in cost shows in review. The
chain is deterministic (tests/contracts/fixed_chain.py: fixed block timestamps and base fee, fixed task
hashes and nonces), so the same contracts give the same figures on every run. The lifecycle totals sum
the calls that the creator and the nodes pay.

Other contracts, e.g. before a change:
    mkdir /tmp/before && for n in Node Task TaskQueue QoS NetworkStats; do
        git show f88b13f:cluster/chain/artifacts/$n.json > /tmp/before/$n.json; done
    python benchmarks/chain_gas.py --artifacts /tmp/before --contracts-label f88b13f --scaling '' --out /tmp/b
    python benchmarks/chain_gas.py --baseline /tmp/b/chain_gas.json --baseline-label f88b13f
The last run compares its lifecycles and single calls with the baseline's, and exits with status 1 when
a lifecycle total moved by more than --max-change (1%).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, median_low
from typing import Any
from unittest import mock

from eth_hash.auto import keccak
from web3 import Web3

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks.* and tests.* (run as a script)
from web3.logs import DISCARD

from benchmarks.chain_scaling import ScalingTable, measure_scaling, scaling_markdown, season
from cluster.chain import deploy
from cluster.chain.artifacts import NETWORK_CONTRACTS, Artifact, load_artifact
from cluster.chain.contracts import TaskType
from cluster.chain.deploy import deploy_network
from cluster.protocol.hashes import commitment
from tests.contracts.crowd import Rpc
from tests.contracts.fixed_chain import FixedBytes, deterministic_anvil, pass_deadline

RESULTS_DIR = Path(__file__).parent / "results"
GPU_A = ("NVIDIA GeForce RTX 4090", 24, "vllm-0.8.5")
GPU_B = ("NVIDIA GeForce RTX 3090", 24, "vllm-0.8.5")
ETHER = 10**18
TIMEOUT_S = 15 * 60
LIFECYCLE_WARM_UP = 10
LIFECYCLE_RUNS = 30
LIFECYCLE_SEEDS = (0, 1, 2, 3, 4, 5)  # the first is the chain of everything else
MAX_CHANGE = 0.01
AUDIT_RATES = (1, 10, 100)
AUDIT_TASKS = 100  # tasks drawn at each rate (after AUDIT_WARM_UP)
AUDIT_WARM_UP = 10
FORCED_AUDITS = 10  # audited tasks measured apart at each rate > 1 (the draw over a zero block hash)
AUDIT_NODES = 6  # one card model: a sampled task's node from a trio, its audit's two of the same model
AUDIT_POOL = 100 * ETHER
SAMPLED = 1  # ITask.Validation.Sampled
LIFECYCLES = (
    ("GPT task, 3 nodes agree", TaskType.GPT, keccak(b"gpt result")),
    ("SD task (2 images), 3 nodes agree", TaskType.SD, bytes.fromhex("0123456789abcdef" * 2)),
)


@dataclass
class GasBook:
    calls: dict[str, int] = field(default_factory=dict)  # label -> gas used
    lifecycles: dict[str, dict[str, int | str]] = field(default_factory=dict)
    audits: dict[str, dict[str, Any]] = field(default_factory=dict)  # "N = 10" -> its row and paths


class Bench:
    def __init__(self, w3: Web3):
        self.w3 = w3
        self.accounts = list(w3.eth.accounts)
        self.deployment = deploy_network(w3, self.accounts[0])
        self.node = self.deployment.contract("Node")
        self.task = self.deployment.contract("Task")
        self.book = GasBook()
        self._secrets: dict[tuple[int, int], tuple[bytes, bytes]] = {}
        self.fixed_bytes = FixedBytes()
        self.rpc = Rpc(w3.provider.endpoint_uri)

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
        call = self.task.functions.createTask(int(task_type), self.fixed_bytes("task"), b"\0" * 32, 0, 1)
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
        nonce = self.fixed_bytes("nonce")
        self._secrets[(task_id, r)] = (result, nonce)
        call = self.task.functions.submitTaskResultCommitment(task_id, r, commitment(result, nonce, node))
        return self.send(call, node, 0, label)

    def disclose(self, task_id: int, r: int, label: str | None = None) -> Any:
        node = self.rounds(task_id)[r]
        result, nonce = self._secrets[(task_id, r)]
        return self.send(self.task.functions.discloseTaskResult(task_id, r, result, nonce), node, 0, label)

    def lifecycle(self, name: str, task_type: TaskType, result: bytes) -> None:
        """create -> 3 commits -> 3 disclosures -> upload, all three nodes agreeing: the steady state's
        mean task, step by step (``steady_state``), its median and range, and the first task on a fresh
        network (nodes without history)."""
        snap = self.snapshot()
        self.join_three(GPU_A)
        first = self._one_task(task_type, result)
        self.revert(snap)
        runs = self.steady_state(task_type, result)
        totals = sorted(sum(run.values()) for run in runs)
        steps: dict[str, int | str] = {step: round(mean(run[step] for run in runs)) for step in runs[0]}
        steps[f"total, mean of {LIFECYCLE_RUNS} tasks"] = round(mean(totals))
        steps["total, median task"] = median_low(totals)
        steps[f"total, range over {LIFECYCLE_RUNS} tasks"] = f"{totals[0]:,} - {totals[-1]:,}"
        steps["total, first task on a fresh network"] = sum(first.values())
        self.book.lifecycles[name] = steps

    def steady_state(self, task_type: TaskType, result: bytes) -> list[dict[str, int]]:
        """LIFECYCLE_RUNS tasks' steps, after LIFECYCLE_WARM_UP tasks (a network's first tasks write QoS
        counters, a node's first result, the first SD images), on three nodes with a long QoS history
        (chain_scaling.season: weight 19 for all three and every task measured). Three nodes that run every
        task end in one weight class, as a large network's classes hold many nodes; fresh nodes' weights
        still move and often stand apart for dozens of tasks, each alone in its class (see the results'
        text)."""
        snap = self.snapshot()
        self.join_three(GPU_A, seasoned=True)
        for _ in range(LIFECYCLE_WARM_UP):
            self._one_task(task_type, result)
        runs = [self._one_task(task_type, result) for _ in range(LIFECYCLE_RUNS)]
        self.revert(snap)
        return runs

    def _one_task(self, task_type: TaskType, result: bytes) -> dict[str, int]:
        steps: dict[str, int] = {}
        call = self.task.functions.createTask(int(task_type), self.fixed_bytes("task"), b"\0" * 32, 0, 1)
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

    # -- sampled audits (issue 28) ------------------------------------------------------------------------

    def audit_rates(self, rates: list[int], num_tasks: int) -> None:
        """Per rate N: `num_tasks` GPT tasks whose draws decide (createTask at N = 1, Sampled above), the
        mean gas and GPU runs per task; and the two paths' means apart (FORCED_AUDITS audited tasks: a
        draw read more than 256 blocks after the commitment audits), weighted 1 - 1/N and 1/N."""
        for rate in rates:
            snap = self.snapshot()
            nodes = self.accounts[3 : 3 + AUDIT_NODES]
            season(self.rpc, self.deployment, nodes)
            stake = self.node.functions.nodeStake().call()
            for n in nodes:
                self.send(self.node.functions.join(*GPU_A), n, stake)
            self.send(self.task.functions.setAuditRate(rate), self.accounts[0])
            self.send(self.task.functions.fundAuditPool(), self.accounts[0], AUDIT_POOL)
            for _ in range(AUDIT_WARM_UP):
                self._audit_task(rate)
            drawn = [self._audit_task(rate) for _ in range(num_tasks)]
            row: dict[str, Any] = {
                "tasks": num_tasks,
                "audited": sum(runs == 3 for _, runs, _ in drawn) if rate > 1 else 0,
                "gas per task": round(mean(gas for gas, _, _ in drawn)),
                "GPU runs per task": mean(runs for _, runs, _ in drawn),
            }
            if rate > 1:
                alone = [(gas, steps) for gas, runs, steps in drawn if runs == 1]
                audited = [self._audit_task(rate, force_audit=True) for _ in range(FORCED_AUDITS)]
                alone_gas = mean(gas for gas, _ in alone)
                audited_gas = mean(gas for gas, _, _ in audited)
                row["not audited: gas"] = round(alone_gas)
                row["audited: gas"] = round(audited_gas)
                row["expected gas per task"] = round((1 - 1 / rate) * alone_gas + audited_gas / rate)
                row["expected GPU runs per task"] = 1 + 2 / rate
                row["not audited: steps"] = _mean_steps([steps for _, steps in alone])
                row["audited: steps"] = _mean_steps([steps for _, _, steps in audited])
            else:
                row["expected gas per task"] = row["gas per task"]
                row["expected GPU runs per task"] = 3
                row["steps"] = _mean_steps([steps for _, _, steps in drawn])
            self.book.audits[f"N = {rate}"] = row
            self.revert(snap)

    def _audit_task(self, rate: int, force_audit: bool = False) -> tuple[int, int, dict[str, int]]:
        """One GPT task at audit rate `rate` whose results agree: (gas, GPU runs, gas by step)."""
        if rate == 1:
            steps = self._one_task(TaskType.GPT, keccak(b"gpt result"))
            return sum(steps.values()), 3, steps
        result = keccak(b"gpt result")
        creator = self.accounts[1]
        steps: dict[str, int] = {}
        call = self.task.functions.createTaskWithValidation(
            int(TaskType.GPT), self.fixed_bytes("task"), b"\0" * 32, 0, 1, SAMPLED
        )
        receipt = self.send(call, creator, ETHER)
        task_id = self.task.events.TaskPending().process_receipt(receipt, errors=DISCARD)[0]["args"]["taskId"]
        steps["createTaskWithValidation (Sampled: starts, selects 1 node)"] = receipt["gasUsed"]
        steps["submitTaskResultCommitment"] = self.commit(task_id, 0, result)["gasUsed"]
        # The draw reads the hash of the block after the commitment's: time passes (empty blocks; a
        # call runs in the latest block's context, which must be c + 2 for blockhash(c + 1) to exist).
        self.rpc.call("anvil_mine", [hex(260 if force_audit else 2)])
        is_drawn, is_audited = self.task.functions.auditDraw(task_id).call()
        assert is_drawn
        if not is_audited:
            steps["discloseTaskResult (draws, pays, ends the task)"] = self.disclose(task_id, 0)["gasUsed"]
            return sum(steps.values()), 1, steps
        steps["startAudit (selects 2 nodes)"] = self.send(self.task.functions.startAudit(task_id), creator)[
            "gasUsed"
        ]
        for r in (1, 2):
            steps[f"submitTaskResultCommitment (auditor {r})"] = self.commit(task_id, r, result)["gasUsed"]
        steps["discloseTaskResult #1 (first node)"] = self.disclose(task_id, 0)["gasUsed"]
        steps["discloseTaskResult #2 (TaskSuccess, pays)"] = self.disclose(task_id, 1)["gasUsed"]
        steps["discloseTaskResult #3 (pays)"] = self.disclose(task_id, 2)["gasUsed"]
        upload = self.send(self.task.functions.reportResultsUploaded(task_id, 0), self.rounds(task_id)[0])
        steps["reportResultsUploaded (pays, deletes the task)"] = upload["gasUsed"]
        return sum(steps.values()), 3, steps

    def join_three(self, card: tuple[str, int, str], first: int = 3, seasoned: bool = False) -> list[str]:
        """Three nodes of ``card`` join; ``seasoned``: with a long QoS history (chain_scaling.season)."""
        nodes = self.accounts[first : first + 3]
        if seasoned:
            season(self.rpc, self.deployment, nodes)
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
        pass_deadline(self.rpc, TIMEOUT_S + 1)
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


def _mean_steps(runs: list[dict[str, int]]) -> dict[str, int]:
    return {step: round(mean(run[step] for run in runs)) for step in runs[0]} if runs else {}


def read_artifacts(directory: Path) -> dict[str, Artifact]:
    """The network contracts compiled in ``directory`` (``<Name>.json`` each, as in cluster/chain/artifacts),
    e.g. an older commit's. The benchmark calls them through their own ABIs: they need the functions and
    events it uses, as every version since the per-node seals has."""
    artifacts = {}
    for name in NETWORK_CONTRACTS:
        raw = json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))
        artifacts[name] = Artifact(
            contract_name=raw["contractName"],
            abi=raw["abi"],
            bytecode=raw["bytecode"],
            deployed_bytecode=raw["deployedBytecode"],
            source_hash=raw["sourceHash"],
            compiler=raw["compiler"],
        )
    return artifacts


@contextmanager
def deployed_from(artifacts: dict[str, Artifact] | None) -> Iterator[None]:
    """Within it, deploy_network and Deployment.contract (the benchmarks' contract objects, their ABIs
    included) use ``artifacts`` instead of the package's."""
    if artifacts is None:
        yield
        return
    with mock.patch.object(deploy, "load_artifact", artifacts.__getitem__):
        yield


@dataclass
class Run:
    """What a run measured, and how: the contracts and the chain."""

    contracts: str  # where the artifacts came from
    seeds: list[int]
    book: GasBook
    sizes: dict[str, int]
    scaling: ScalingTable | None = None
    baseline: dict[str, Any] | None = None  # a previous run's chain_gas.json, with "label"
    max_change: float = MAX_CHANGE  # of a lifecycle's mean against the baseline's


def over_seeds(book: GasBook, seeds: list[int]) -> None:
    """Adds to each lifecycle of ``book`` (measured on the chain of seeds[0]) the mean of its steady state
    over the chains of all ``seeds``, and the range of the chains' means: one chain's mean still depends
    on its draws, and different contracts draw otherwise on the same chain."""
    key = f"total, mean of {LIFECYCLE_RUNS} tasks"
    means = {name: [book.lifecycles[name][key]] for name, _, _ in LIFECYCLES}
    for seed in seeds[1:]:
        with deterministic_anvil(num_accounts=10, seed=seed) as anvil:
            bench = Bench(anvil.web3())
            for name, task_type, result in LIFECYCLES:
                bench.lifecycle(name, task_type, result)
                means[name].append(bench.book.lifecycles[name][key])
    for name, values in means.items():
        steps = book.lifecycles[name]
        if len(seeds) > 1:
            steps[f"{key}, range over seeds {_seeds(seeds)}"] = f"{min(values):,} - {max(values):,}"
        steps[_all_seeds_key(seeds)] = round(mean(values))


def _seeds(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds))


def _all_seeds_key(seeds: list[int]) -> str:
    return f"total, mean of {len(seeds)} x {LIFECYCLE_RUNS} tasks (seeds {_seeds(seeds)})"


def lifecycle_changes(run: Run) -> dict[str, tuple[int, int]]:
    """Each lifecycle's mean total over all seeds against the baseline's: name -> (baseline, this run)."""
    if run.baseline is None:
        return {}
    key = _all_seeds_key(run.seeds)
    changes = {}
    for name, steps in run.book.lifecycles.items():
        before = run.baseline["lifecycles"].get(name, {})
        if key not in before:
            raise SystemExit(f"the baseline has no {key!r} for {name!r}: run both on the same seeds")
        changes[name] = (before[key], steps[key])
    return changes


def write_results(run: Run, out_dir: Path) -> None:
    book, sizes, scaling = run.book, run.sizes, run.scaling
    out_dir.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "contracts": run.contracts,
        "seeds": run.seeds,
        "calls": book.calls,
        "lifecycles": book.lifecycles,
        "deployed_bytes": sizes,
    }
    if book.audits:
        data["audits"] = book.audits
    if scaling is not None:
        data["scaling"] = {"sizes": scaling.sizes, "gas": scaling.gas}
    if run.baseline is not None:
        data["baseline"] = {
            k: run.baseline[k] for k in ("label", "contracts", "seeds", "lifecycles", "calls")
        }
    (out_dir / "chain_gas.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    intro = (
        "Generated by `python benchmarks/chain_gas.py` on a local anvil (solc 0.8.28, optimizer 200 runs,"
        f" cancun), contracts: {run.contracts}. Nodes of one card model; the fee is 1 CNX; results agree"
        " unless stated. Single calls run on a fresh network. `python benchmarks/gas_profile.py` shows"
        " where each transaction's gas goes."
    )
    method = (
        "Every figure is reproducible to the gas: two runs of the same contracts send the same"
        " transactions in the same blocks (tests/contracts/fixed_chain.py). A task's nodes are drawn from"
        " keccak256(prevrandao, taskHash, counter), and anvil derives prevrandao from the parent block's"
        " hash; with anvil's wall-clock timestamps every run drew other nodes, and the median of 5 GPT"
        " tasks these rows used to show moved by up to 3.4% from run to run (0.976-1.009M, same"
        " contracts). Now the genesis timestamp is fixed (a seed picks it), blocks follow one second apart"
        " with a base fee of 0, and task hashes and nonces are fixed. Different contracts still draw"
        " otherwise on the same chain (a block's hash covers its state and receipts), so a lifecycle is"
        " compared by its mean over many tasks on several chains."
    )
    steady = (
        "The steady state: three nodes with a long QoS history (weight 19 for all three, as in the scaling"
        f" table), {LIFECYCLE_WARM_UP} warm-up tasks, then {LIFECYCLE_RUNS} tasks on the chain of seed"
        f" {run.seeds[0]}: their mean step by step, the median task and the range; then the mean over the"
        " chains of all seeds and the range of the chains' means. Three nodes that run every task end in"
        " one weight class (their lifetime averages meet near 16.7), as a large network's classes hold"
        " many nodes. The rows before this method took fresh nodes' tasks 12-16, whose weights still moved"
        " and often stood apart: a node alone in its class leaves its list without moving another (about"
        " 0.976M a task, against 1.00-1.02M for three in one class). What still varies from task to task"
        " is where the drawn nodes stand in their class's list (swap-and-pop) and whether a slot is"
        " written twice in one transaction (100 gas the second time instead of 2,900). The first task on"
        " a fresh network (nodes without history) is measured apart."
    )
    lines = [
        "# Gas of the network's contracts",
        "",
        *textwrap.wrap(intro, 100),
        "",
        *textwrap.wrap(method, 100),
        "",
        "## Whole task lifecycles (3 nodes)",
        "",
        *textwrap.wrap(steady, 100),
        "",
    ]
    for name, steps in book.lifecycles.items():
        lines += [f"### {name}", "", "| step | gas |", "|---|---:|"]
        lines += [
            f"| {step} | {gas:,} |" if isinstance(gas, int) else f"| {step} | {gas} |"
            for step, gas in steps.items()
        ]
        lines.append("")
    if book.audits:
        lines += _audits_markdown(book.audits)
    if run.baseline is not None:
        lines += _baseline_markdown(run)
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


def _audits_markdown(audits: dict[str, dict[str, Any]]) -> list[str]:
    text = (
        f"GPT tasks on {AUDIT_NODES} seasoned nodes of one card model (a sampled task's node is drawn from"
        " a group of at least three available nodes, its audit's two from the same card model), the audit"
        f" pool funded, {AUDIT_WARM_UP} warm-up tasks, then {AUDIT_TASKS} tasks whose draws decide: N = 1"
        " is createTask (three nodes, today's protocol), N > 1 createTaskWithValidation(Sampled)."
        " Two empty blocks between the commitment and the disclosure let the draw be read (it needs the"
        " hash of the block after the commitment's). Gas per task counts every transaction of the task, the"
        " audits' too (startAudit, the auditors' commitments and disclosures, the upload). The drawn"
        " tasks' audits are few (about 1 in N), so each path is also measured apart: the unaudited tasks"
        f" of the draw, and {FORCED_AUDITS} audited tasks (a draw read over 256 blocks after its"
        " commitment audits); the expected figures weigh them by 1 - 1/N and 1/N."
    )
    lines = [
        "## Sampled audits: gas and GPU runs per GPT task (issue 28)",
        "",
        *textwrap.wrap(text, 100),
        "",
        "| audit rate | tasks drawn | audited | gas per task (drawn) | GPU runs per task (drawn) |"
        " expected gas per task | expected GPU runs per task |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in audits.items():
        lines.append(
            f"| {name} | {row['tasks']} | {row['audited']} | {row['gas per task']:,} |"
            f" {row['GPU runs per task']:.2f} | {row['expected gas per task']:,} |"
            f" {row['expected GPU runs per task']:.2f} |"
        )
    lines.append("")
    for name, row in audits.items():
        for path in ("steps", "not audited: steps", "audited: steps"):
            if row.get(path):
                title = "three nodes" if path == "steps" else path.removesuffix(": steps")
                lines += [f"### {name}, {title}", "", "| step | gas |", "|---|---:|"]
                lines += [f"| {step} | {gas:,} |" for step, gas in row[path].items()]
                lines += [f"| total | {sum(row[path].values()):,} |", ""]
    return lines


def _baseline_markdown(run: Run) -> list[str]:
    base = run.baseline
    assert base is not None
    label = base["label"]
    text = (
        f"The same benchmark and chains (seeds {_seeds(base['seeds'])}) with the contracts of"
        f" {base['contracts']}. A lifecycle's mean over all chains that moves by more than"
        f" {run.max_change:.0%} fails the run. The other totals and the single calls are each measured on"
        " one chain, where different contracts draw otherwise: they differ by the draws as well."
    )
    lines = [
        f"## Against {label}",
        "",
        *textwrap.wrap(text, 100),
        "",
        f"| | {label} | this run | change |",
        "|---|---:|---:|---:|",
    ]

    def row(what: str, before: int, after: int) -> str:
        return f"| {what} | {before:,} | {after:,} | {after - before:+,} ({(after - before) / before:+.3%}) |"

    for name, steps in run.book.lifecycles.items():
        before_steps = base["lifecycles"].get(name, {})
        for step, gas in steps.items():
            if step.startswith("total") and isinstance(gas, int) and isinstance(before_steps.get(step), int):
                lines.append(row(f"{name}: {step}", before_steps[step], gas))
    for label_, gas in run.book.calls.items():
        if label_ in base["calls"]:
            lines.append(row(label_, base["calls"][label_], gas))
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--scaling",
        default="10,100,1000,10000",
        help="network sizes of the scaling table, comma-separated ('' to skip it)",
    )
    parser.add_argument(
        "--seeds",
        default=",".join(map(str, LIFECYCLE_SEEDS)),
        help="chains (fixed sequences of draws) of the lifecycles' means, comma-separated; all else runs on"
        " the first",
    )
    parser.add_argument(
        "--artifacts", type=Path, help="deploy the contracts compiled in this folder (<Name>.json each)"
    )
    parser.add_argument("--contracts-label", help="where the --artifacts come from, for the results")
    parser.add_argument("--baseline", type=Path, help="a previous run's chain_gas.json to compare with")
    parser.add_argument("--baseline-label", default="the baseline", help="what the baseline measured")
    parser.add_argument("--max-change", type=float, default=MAX_CHANGE)
    parser.add_argument(
        "--audit-rates",
        default=",".join(map(str, AUDIT_RATES)),
        help="audit rates N of the sampled-audit rows, comma-separated ('' to skip them)",
    )
    parser.add_argument("--audit-tasks", type=int, default=AUDIT_TASKS, help="tasks drawn at each rate")
    args = parser.parse_args()
    artifacts = read_artifacts(args.artifacts) if args.artifacts else None
    baseline = None
    if args.baseline:
        baseline = {**json.loads(args.baseline.read_text()), "label": args.baseline_label}
    seeds = [int(n) for n in args.seeds.split(",")]
    with deployed_from(artifacts):
        with deterministic_anvil(num_accounts=10, seed=seeds[0]) as anvil:
            bench = Bench(anvil.web3())
            for name, task_type, result in LIFECYCLES:
                bench.lifecycle(name, task_type, result)
            bench.node_calls()
            bench.task_calls()
            rates = [int(n) for n in args.audit_rates.split(",") if n]
            if rates:
                bench.audit_rates(rates, args.audit_tasks)
        over_seeds(bench.book, seeds)
        sizes = [int(n) for n in args.scaling.split(",") if n]
        scaling = measure_scaling(sizes, seed=seeds[0]) if sizes else None
    source = artifacts or {name: load_artifact(name) for name in NETWORK_CONTRACTS}
    run = Run(
        contracts=args.contracts_label
        or (f"the artifacts in {args.artifacts}" if args.artifacts else "cluster/chain/artifacts"),
        seeds=seeds,
        book=bench.book,
        sizes={name: artifact.deployed_size_bytes for name, artifact in source.items()},
        scaling=scaling,
        baseline=baseline,
        max_change=args.max_change,
    )
    write_results(run, args.out)
    print((args.out / "chain_gas.md").read_text())
    moved = {
        name: (before, after)
        for name, (before, after) in lifecycle_changes(run).items()
        if abs(after - before) > run.max_change * before
    }
    if moved:
        raise SystemExit(f"lifecycle totals moved by more than {args.max_change:.1%}: {moved}")


if __name__ == "__main__":
    main()
