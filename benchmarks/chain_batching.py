"""What batching a farm's transactions could save on chain: each of its transactions in a GPT task taken
apart on anvil, with the real contracts (issue 27, item 3; benchmarks/results/cluster_overhead.md,
"The chain side of a big farm").

    python benchmarks/chain_batching.py [--tasks 4] [--nodes 15]   (prints tables; nothing is written)

The network is the gas benchmark's steady state (benchmarks/chain_scaling.py: one card model, nodes
with a long QoS history, a deterministic chain). ``--tasks`` GPT tasks run after warm-up; each of the
farm's transactions (3 commitments, 3 disclosures, the upload report) is traced opcode by opcode and
split into: the fixed 21,000 every transaction pays, its calldata (16 gas a non-zero byte, 4 a zero
byte), the premiums of its cold accesses (EIP-2929: the first touch in a transaction of an account,
2,500 more than a warm one, and of a storage slot, 2,000 more; 2,100 for a slot first written), and the
rest (the contracts' work). A batch (several calls in one transaction) pays the 21,000 once and each
account or slot cold once; its calldata and the contracts' work stay. The saving of a batch is
computed from the traces of its calls sent apart (its calls' state changes are the same either way).
Not counted: the batch's own dispatch (an entry point calling each step: assumed about 2-3k gas a call,
not measured here) and any authorisation check it would need, against the cheaper second write of a
slot an earlier call of the batch wrote (EIP-2200), also left out: the figures are an estimate, not a
transaction that was sent. None of these batches can be sent today: each call must come from its own
node account (the contracts check the sender), and one account's steps are never ready together.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from eth_hash.auto import keccak

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks.* and tests.* (run as a script)

from benchmarks.chain_scaling import LAYOUTS, WARM_UP, ScaleBench
from cluster.chain.contracts import TaskType
from cluster.protocol.hashes import commitment
from tests.contracts.fixed_chain import deterministic_anvil

TX_BASE_GAS = 21_000
COLD_ACCOUNT_PREMIUM = 2_500  # 2,600 cold against 100 warm
COLD_SLOAD_PREMIUM = 2_000  # 2,100 cold against 100 warm
COLD_SSTORE_PREMIUM = 2_100  # added to the write's own price when the slot was not touched before
CALLS = {"CALL", "STATICCALL", "DELEGATECALL", "CALLCODE"}
ACCOUNT_OPS = CALLS | {"BALANCE", "EXTCODESIZE", "EXTCODECOPY", "EXTCODEHASH"}
PRECOMPILES = {f"0x{i:040x}" for i in range(1, 0x12)}


def calldata_gas(data: bytes) -> int:
    return sum(4 if b == 0 else 16 for b in data)


def cold_touches(rpc: Any, tx_hash: str, sender: str, to: str) -> Counter[tuple[str, ...]]:
    """The accounts and storage slots a transaction touched, each with the premium its first (cold)
    touch paid: ('account', address) or ('slot', address, key)."""
    trace = rpc.call("debug_traceTransaction", [tx_hash, {"disableMemory": True, "disableStorage": True}])
    warm_accounts = {sender.lower(), to.lower(), *PRECOMPILES}  # warm from the start (EIP-2929)
    touched: Counter[tuple[str, ...]] = Counter()
    storage = [to.lower()]  # whose storage each depth reads and writes (a DELEGATECALL keeps the caller's)
    for step in trace["structLogs"]:
        depth, op, stack = step["depth"], step["op"], step.get("stack") or []
        del storage[depth:]
        owner = storage[depth - 1]
        if op in ("SLOAD", "SSTORE"):
            key = ("slot", owner, stack[-1])
            if key not in touched:
                touched[key] = COLD_SLOAD_PREMIUM if op == "SLOAD" else COLD_SSTORE_PREMIUM
        elif op in ACCOUNT_OPS:
            index = -2 if op in CALLS else -1
            target = "0x" + stack[index][2:].rjust(40, "0")[-40:]
            if target not in warm_accounts and ("account", target) not in touched:
                touched[("account", target)] = COLD_ACCOUNT_PREMIUM
            if op in CALLS:
                storage.append(owner if op in ("DELEGATECALL", "CALLCODE") else target)
    return touched


class Tx:
    def __init__(self, label: str, task: int, receipt: dict[str, Any], data: bytes, touches: Counter):
        self.label, self.task, self.data, self.touches = label, task, data, touches
        self.gas_used = int(receipt["gasUsed"], 16)
        self.calldata_gas = calldata_gas(data)
        self.cold_gas = sum(touches.values())


def batch_saving(txs: list[Tx]) -> int:
    """Gas a batch of these calls saves against sending them apart: the 21,000 of all but one, and the
    premium of every cold touch another call of the batch made first."""
    seen: set[tuple[str, ...]] = set()
    saved = TX_BASE_GAS * (len(txs) - 1)
    for tx in txs:
        saved += sum(premium for key, premium in tx.touches.items() if key in seen)
        seen |= set(tx.touches)
    return saved


def run(num_tasks: int, num_nodes: int) -> tuple[list[Tx], int]:
    with deterministic_anvil(num_accounts=4, extra_args=("--steps-tracing",)) as anvil:
        bench = ScaleBench(anvil, LAYOUTS[0])
        bench.grow_to(num_nodes)
        for _ in range(WARM_UP):
            bench.gpt_lifecycle()
        # The tasks' steps interleaved as a farm sends them: every task created, then every commitment...
        tasks = {}
        create_gas = 0
        for _ in range(num_tasks):
            task_id, gas = bench.create(TaskType.GPT)
            create_gas += gas
            tasks[task_id] = (bench.rounds(task_id), [bench.fixed_bytes("nonce") for _ in range(3)])
        result = keccak(b"the answer")
        steps: list[tuple[str, int, str, tuple[Any, ...]]] = []
        for task_id, (nodes, nonces) in tasks.items():
            for r, node in enumerate(nodes):
                call = ("submitTaskResultCommitment", task_id, r, commitment(result, nonces[r], node))
                steps.append((f"commit {r}", task_id, node, call))
        for task_id, (nodes, nonces) in tasks.items():
            for r, node in enumerate(nodes):
                steps.append(
                    (f"disclose {r}", task_id, node, ("discloseTaskResult", task_id, r, result, nonces[r]))
                )
        for task_id, (nodes, _) in tasks.items():
            steps.append(("upload", task_id, nodes[0], ("reportResultsUploaded", task_id, 0)))
        txs = []
        for label, task_id, node, call in steps:
            receipt = bench.send(node, bench.task, *call)
            data = bytes.fromhex(bench.task.encode_abi(call[0], call[1:])[2:])
            touches = cold_touches(bench.rpc, receipt["transactionHash"], node, bench.task.address)
            txs.append(Tx(label, task_id, receipt, data, touches))
        return txs, create_gas // num_tasks


def report(txs: list[Tx], create_gas: int) -> None:
    tasks = sorted({tx.task for tx in txs})
    per_task = len(txs) / len(tasks)
    print(
        f"{len(tasks)} GPT tasks, the farm's {len(txs)} transactions ({per_task:.0f} a task); createTask "
        f"(the application's) {create_gas:,} gas a task\n"
    )
    print(
        "| the farm's transaction | gas used | fixed 21,000 | calldata (bytes, gas) | cold-access premiums "
        "| the contracts' work |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for label in dict.fromkeys(tx.label for tx in txs):
        group = [tx for tx in txs if tx.label == label]
        n = len(group)
        used = sum(t.gas_used for t in group) / n
        cd = sum(t.calldata_gas for t in group) / n
        cold = sum(t.cold_gas for t in group) / n
        size = sum(len(t.data) for t in group) / n
        work = used - TX_BASE_GAS - cd - cold
        print(f"| {label} | {used:,.0f} | 21,000 | {size:.0f} B, {cd:,.0f} | {cold:,.0f} | {work:,.0f} |")
    total = sum(t.gas_used for t in txs) / len(tasks)
    base = TX_BASE_GAS * per_task
    cd = sum(t.calldata_gas for t in txs) / len(tasks)
    cold = sum(t.cold_gas for t in txs) / len(tasks)
    print(
        f"| a task's {per_task:.0f} | {total:,.0f} | {base:,.0f} ({100 * base / total:.1f}%) | "
        f"{cd:,.0f} ({100 * cd / total:.1f}%) | {cold:,.0f} ({100 * cold / total:.1f}%) | "
        f"{total - base - cd - cold:,.0f} |\n"
    )

    def row(title: str, batches: list[list[Tx]]) -> None:
        calls = sum(len(b) for b in batches)
        gas = sum(t.gas_used for b in batches for t in b)
        saved = sum(batch_saving(b) for b in batches)
        print(f"| {title} | {len(batches[0])} | {saved / calls:,.0f} | {100 * saved / gas:.1f}% |")

    print("| batch (calls in one transaction) | calls | saved a call | of their gas |")
    print("|---|---:|---:|---:|")
    by_task_step = {}
    for tx in txs:
        by_task_step.setdefault((tx.task, tx.label.split()[0]), []).append(tx)
    row("one task's 3 commitments (3 accounts)", [b for (_, s), b in by_task_step.items() if s == "commit"])
    row("one task's 3 disclosures (3 accounts)", [b for (_, s), b in by_task_step.items() if s == "disclose"])
    row(
        "one task's 7 transactions (if they could wait for each other)",
        [[t for t in txs if t.task == task] for task in tasks],
    )
    for step in ("commit", "disclose", "upload"):
        across = [t for t in txs if t.label.startswith(step)]
        per_round = [
            [t for t in across if t.label == label] for label in dict.fromkeys(t.label for t in across)
        ]
        row(f"the same step ({step} round r) of {len(tasks)} different tasks", per_round)
    row(f"all {len(txs)} transactions of {len(tasks)} tasks", [txs])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--nodes", type=int, default=15)
    options = parser.parse_args()
    report(*run(options.tasks, options.nodes))


if __name__ == "__main__":
    main()
