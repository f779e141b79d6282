"""Where the gas of one GPT task goes: each transaction of a steady-state lifecycle, traced opcode by
opcode on anvil and summed by contract and by kind of work (storage writes by price, reads, calls,
events, the rest).

Run: python benchmarks/gas_profile.py [--nodes 10] [--audit-rate 10]  (prints a table; nothing is written)

With --audit-rate N > 1: the one-node lifecycle of a sampled task that its draw does not audit
(createTaskWithValidation, the commitment, the disclosure that draws, pays and ends the task).

A tool for whoever works on the contracts' gas: the benchmark (chain_gas.py) says how much, this says
where. The network is the scaling benchmark's "one card model" layout, nodes with a long QoS history, on
its deterministic chain: the same contracts give the same trace on every run.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from eth_hash.auto import keccak

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks.* and tests.* (run as a script)

from benchmarks.chain_scaling import LAYOUTS, WARM_UP, ScaleBench
from cluster.chain.artifacts import NETWORK_CONTRACTS
from cluster.chain.contracts import TaskType
from cluster.protocol.hashes import commitment
from tests.contracts.fixed_chain import deterministic_anvil

CALLS = {"CALL", "STATICCALL", "DELEGATECALL", "CALLCODE", "CREATE", "CREATE2"}


def _kind(op: str, cost: int) -> str:
    if op == "SSTORE":
        return f"SSTORE {cost:,}"
    if op == "SLOAD":
        return "SLOAD cold" if cost >= 2100 else "SLOAD warm"
    if op in CALLS:
        return "call overhead"
    if op.startswith("LOG"):
        return "events"
    if op == "KECCAK256":
        return "keccak"
    return "compute"


def profile_transaction(
    rpc: Any, tx_hash: str, names: dict[str, str], first: str
) -> dict[tuple[str, str], int]:
    """(contract, kind) -> gas, exclusive of the frames a call opens."""
    trace = rpc.call("debug_traceTransaction", [tx_hash, {"disableMemory": True, "disableStorage": True}])
    steps = trace["structLogs"]
    costs = [s["gasCost"] for s in steps]
    # The contract each step runs in: a call op's target (stack[-2]) for the frame it opens.
    where = [""] * len(steps)
    frames = [names.get(first.lower(), first)]
    for i, s in enumerate(steps):
        depth = s["depth"]
        del frames[depth:]
        where[i] = frames[depth - 1]
        if s["op"] in CALLS and s["op"] not in {"CREATE", "CREATE2"}:
            target = "0x" + s["stack"][-2][2:].rjust(40, "0")[-40:]
            frames.append(names.get(target.lower(), target))
    # A call op's own cost: the gas its frame lost across the call, less what the callee spent.
    order = sorted((i for i, s in enumerate(steps) if s["op"] in CALLS), key=lambda i: -steps[i]["depth"])
    for i in order:
        depth = steps[i]["depth"]
        j = i + 1
        while j < len(steps) and steps[j]["depth"] > depth:
            j += 1
        if j < len(steps):
            costs[i] = steps[i]["gas"] - steps[j]["gas"] - sum(costs[i + 1 : j])
    out: dict[tuple[str, str], int] = defaultdict(int)
    for i, s in enumerate(steps):
        out[(where[i], _kind(s["op"], costs[i]))] += costs[i]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--audit-rate", type=int, default=1, help="> 1: a sampled task's one-node lifecycle")
    args = parser.parse_args()
    rate = args.audit_rate
    with deterministic_anvil(num_accounts=4, extra_args=("--steps-tracing",)) as anvil:
        bench = ScaleBench(anvil, LAYOUTS[0])
        bench.grow_to(args.nodes)
        for _ in range(WARM_UP):
            bench.gpt_lifecycle()
        names = {bench.deployment.address(n).lower(): n for n in NETWORK_CONTRACTS}
        names[bench.task.functions.audits().call().lower()] = "TaskAudits"
        if rate > 1:
            _print_profile(bench, names, sampled_lifecycle(bench, rate))
            return
        receipts: list[tuple[str, dict[str, Any]]] = []
        args = (int(TaskType.GPT), bench.fixed_bytes("task"), b"\0" * 32, 0, 1)
        receipt = bench.send(bench.creator, bench.task, "createTask", *args, value=10**18)
        receipts.append(("createTask", receipt))
        task_id = int(receipt["logs"][0]["topics"][1], 16)
        nodes = bench.rounds(task_id)
        result = keccak(b"the answer")
        nonces = [bench.fixed_bytes("nonce") for _ in nodes]
        for r, node in enumerate(nodes):
            call = ("submitTaskResultCommitment", task_id, r, commitment(result, nonces[r], node))
            receipts.append((f"commit {r}", bench.send(node, bench.task, *call)))
        for r, node in enumerate(nodes):
            call = ("discloseTaskResult", task_id, r, result, nonces[r])
            receipts.append((f"disclose {r}", bench.send(node, bench.task, *call)))
        receipts.append(("upload", bench.send(nodes[0], bench.task, "reportResultsUploaded", task_id, 0)))
        _print_profile(bench, names, receipts)


def sampled_lifecycle(bench: Any, rate: int) -> list[tuple[str, dict[str, Any]]]:
    """A sampled GPT task at audit rate `rate` that its draw does not audit (drawn ones are run again)."""
    bench.send(bench.owner, bench.task, "setAuditRate", rate)
    bench.send(bench.owner, bench.task, "fundAuditPool", value=100 * 10**18)
    result = keccak(b"the answer")
    while True:
        args = (int(TaskType.GPT), bench.fixed_bytes("task"), b"\0" * 32, 0, 1, 1)
        created = bench.send(bench.creator, bench.task, "createTaskWithValidation", *args, value=10**18)
        task_id = int(created["logs"][0]["topics"][1], 16)
        node = bench.rounds(task_id)[0]
        nonce = bench.fixed_bytes("nonce")
        call = ("submitTaskResultCommitment", task_id, 0, commitment(result, nonce, node))
        committed = bench.send(node, bench.task, *call)
        bench.rpc.call("anvil_mine", ["0x2"])  # the draw needs the block after the commitment's
        if not bench.task.functions.auditDraw(task_id).call()[1]:
            disclosed = bench.send(node, bench.task, "discloseTaskResult", task_id, 0, result, nonce)
            return [("createTaskWithValidation", created), ("commit", committed), ("disclose", disclosed)]
        bench.send(bench.creator, bench.task, "startAudit", task_id)  # audited: run it, draw again
        for r, auditor in list(enumerate(bench.rounds(task_id)))[1:]:
            bench.send(
                auditor,
                bench.task,
                "submitTaskResultCommitment",
                task_id,
                r,
                commitment(result, nonce, auditor),
            )
        for r, n in enumerate(bench.rounds(task_id)):
            bench.send(n, bench.task, "discloseTaskResult", task_id, r, result, nonce)
        winner = bench.rounds(task_id)[0]
        bench.send(winner, bench.task, "reportResultsUploaded", task_id, 0)


def _print_profile(bench: Any, names: dict[str, str], receipts: list[tuple[str, dict[str, Any]]]) -> None:
    total = 0
    for label, receipt in receipts:
        used = int(receipt["gasUsed"], 16)
        total += used
        parts = profile_transaction(bench.rpc, receipt["transactionHash"], names, receipt["to"])
        executed = sum(parts.values())
        rest = used - executed
        print(f"\n== {label}: {used:,} gas (executed {executed:,}; intrinsic and refund: {rest:+,})")
        for (contract, kind), gas in sorted(parts.items(), key=lambda kv: -kv[1]):
            if gas >= 1_000:
                print(f"   {contract:<13} {kind:<16} {gas:>9,}")
    print(f"\nGPT lifecycle: {total:,} gas")


if __name__ == "__main__":
    main()
