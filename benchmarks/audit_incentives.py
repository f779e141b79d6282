"""Sampled audits (issue 28): what nodes earn, what a garbage node loses, GPU runs and gas per task.

The model of the design in docs/protocol-decisions.md, "Sampled audits". Plain Python, seeded, no chain:

- A task's fee at the three-node price is ``3 p``; ``p = RATE x T`` pays one GPU run of T seconds. A
  sampled task costs ``p (1 + premium)`` with ``premium = 2 (1 + margin) / N``: its node is paid ``p``,
  the premium goes to the audit pool, which pays each of an audit's two nodes ``p``.
- N = 1 is today's protocol: three nodes per task, shares 40 / 36 / 24 % by position.
- Each task's first node is drawn uniformly among all nodes (the contracts draw by QoS weight; here
  every node always has the same weight and is always available: a simplification), the audit's two
  nodes uniformly among the others. A task is audited with probability 1/N (the seeded generator stands
  in for ``keccak256(blockhash(commitBlock + 1), taskId)``).
- One node returns garbage: it spends no GPU time, commits first, and is slashed (its whole stake) when a
  comparison shows its result odd; it then joins again with a new stake. Sampled, it returns garbage only
  as a task's first node: an audit's node knows its round, and garbage there would be caught for sure, so
  it runs audits honestly (paid, its GPU time not counted against it). Honest nodes always agree.
- Gas per task comes from the per-path estimates below, built from the measured steps of
  benchmarks/results/chain_gas.md.

Run: python benchmarks/audit_incentives.py  (writes benchmarks/results/audit_incentives.md)
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results" / "audit_incentives.md"

STAKE_CNX = 400.0  # Node.nodeStake's default
RATE_CNX_PER_S = 0.005  # what one GPU run is paid per second of its GPU time (p = RATE x T)
MARGIN = 0.10  # the premium's margin over the audits' expected cost: the pool's drift
SAFETY = 2  # the stake bound's factor: a cheater may escape up to half of the audits drawn on it
SHARES = (0.40, 0.36, 0.24)  # N = 1: position shares of the fee (awards 10/9/6, twice, over 50)

# Gas per step of today's three-node lifecycle in a network of many nodes: `python benchmarks/gas_profile.py`
# (10 nodes of one card model, long QoS histories, its deterministic chain; benchmarks/results/chain_gas.md's
# scaling table shows createTask, the settling disclosure and the lifecycle flat from 10 to 10,000 nodes:
# 358,113, 172,908 and 991-994k). Three-node networks cost more (chain_gas.md's first tables: 1.03M), since
# a group falling below and rising back to three available nodes moves them between pools at every task.
# SD: createTask from the scaling table (100-10,000 nodes); the other steps are GPT's plus the difference SD
# makes in chain_gas.md's three-node tables (the disclosures compare image hashes, the upload no matter).
MEASURED = {
    "gpt": {
        "create3": 358_113,
        "commit": 43_083,
        "commit_last": 46_856,
        "disclose1": 43_997,
        "disclose2": 170_108,
        "disclose3": 153_422,
        "upload": 132_889,
        "upload_executed": 140_357,  # its refund (the task's six slots deleted) exceeds its 21,000
    },
    "sd": {
        "create3": 389_594,
        "commit": 43_083,
        "commit_last": 46_856,
        "disclose1": 43_997 + 2_461,
        "disclose2": 170_108 + 8_556,
        "disclose3": 153_422 + 6_034,
        "upload": 132_889 - 2_053,
        "upload_executed": 140_357 - 2_053,
    },
}
# Estimated from the createTask profile: what one more selected node adds (its round slot written fresh,
# 20,000; its TaskStarted, ~2,900; in Node its draw and status change, about 8 cold reads and 6 writes,
# ~45,000 of the 171,600 that Node spends on three). SD's draws each walk a VRAM tree (its createTask
# costs 31,000 more for the same three nodes).
EXTRA_NODE = {"gpt": 68_000, "sd": 91_000}
TX_BASE = 21_000
COLD_TASK_READS = 10_000  # the task's slots and the wiring read again by another transaction
DRAW = 1_000  # BLOCKHASH, one keccak256 over two words, a modulo, the commit block (warm)
POOL_CREDIT = 5_000  # the premium moved to the pool's balance (one slot, cold read and write)
SEAL_COPY = 22_000  # the first node's commitment copied to a slot of the task's (fresh, then deleted)
# A node's release at its round's end: Node's share of a settling disclosure in the profile (26,100 of
# writes, 25,200 of cold reads, compute, event, the call). An audit moves the first node's release from
# its settlement to startAudit.
RELEASE = 60_000
CLEAR_REFUND = 4_800  # EIP-3529: a slot set to zero
CLEAR = 2_900  # writing it


def path_gas(task_type: str) -> dict[str, dict[str, int]]:
    """Gas of each step of each path, for "gpt" or "sd": full (today's three nodes), unaudited, audited."""
    m = MEASURED[task_type]
    extra = EXTRA_NODE[task_type]
    create1 = m["create3"] - 2 * extra
    # the lone disclosure draws, credits the pool and ends the task: the upload report's work without its
    # transaction and its repeated cold reads (the files reached the relay before the disclosure); it
    # deletes four slots of the task's, not six, and gets four slots' refund
    settle = (
        m["disclose1"]
        + DRAW
        + POOL_CREDIT
        + m["upload_executed"]
        - COLD_TASK_READS
        - 2 * CLEAR
        - 4 * CLEAR_REFUND
    )
    start_audit = TX_BASE + COLD_TASK_READS + DRAW + POOL_CREDIT + 2 * extra + SEAL_COPY + RELEASE
    full = {
        "createTask (3 nodes)": m["create3"],
        "3 commitments": 2 * m["commit"] + m["commit_last"],
        "3 disclosures": m["disclose1"] + m["disclose2"] + m["disclose3"],
        "reportResultsUploaded": m["upload"],
    }
    unaudited = {
        "createTask (1 node)": create1,
        "commitment (the last: deadline, commit block)": m["commit_last"],
        "disclosure (draw, pool, pays, ends the task)": settle,
    }
    audited = {
        "createTask (1 node)": create1,
        "commitment (the last: deadline, commit block)": m["commit_last"],
        "startAudit (draw, pool, 2 nodes, seal copy, release)": start_audit,
        "2 audit commitments": m["commit"] + m["commit_last"],
        "3 disclosures (one release fewer: the first node's was at startAudit)": m["disclose1"]
        + m["disclose2"]
        + m["disclose3"]
        - RELEASE,
        "reportResultsUploaded": m["upload"],
    }
    return {"full": full, "unaudited": unaudited, "audited": audited}


def gas_of(task_type: str, path: str) -> int:
    return sum(path_gas(task_type)[path].values())


def mean_gas(task_type: str, n: int, full_share: float = 0.0) -> float:
    """Expected gas per task at audit rate 1 in n, when a share of tasks asks for full validation."""
    if n == 1:
        return gas_of(task_type, "full")
    sampled = (1 - 1 / n) * gas_of(task_type, "unaudited") + gas_of(task_type, "audited") / n
    return full_share * gas_of(task_type, "full") + (1 - full_share) * sampled


def mean_runs(n: int, full_share: float = 0.0) -> float:
    if n == 1:
        return 3.0
    return full_share * 3 + (1 - full_share) * (1 + 2 / n)


def premium(n: int, margin: float = MARGIN) -> float:
    """A sampled task's premium over one run's pay, as a fraction of it (0 at N = 1: no sampling)."""
    return 0.0 if n == 1 else 2 * (1 + margin) / n


def sampled_fee(run_pay: float, n: int, margin: float = MARGIN) -> float:
    return run_pay * (1 + premium(n, margin))


def min_stake(n: int, gain: float, safety: float = 1.0) -> float:
    """The least stake at which garbage does not pay: caught once in n tasks on average, a node must
    lose more than the n tasks' savings (``gain`` CNX a task: at most the run's pay)."""
    return safety * n * gain


def cheat_edge(n: int, run_pay: float, gpu_cost: float, stake: float) -> float:
    """Expected CNX a task that garbage earns over honest work: honest earns pay - cost; garbage earns
    the pay unless audited (1/n), and then loses the stake instead."""
    honest = run_pay - gpu_cost
    garbage = (1 - 1 / n) * run_pay - stake / n
    return garbage - honest


@dataclass
class Result:
    n: int
    tasks: int
    audited: int = 0
    runs: int = 0
    gas: float = 0.0
    stake: float = STAKE_CNX
    caught: int = 0
    garbage_seats: int = 0  # the tasks where the garbage node returned garbage (N = 1: any seat)
    garbage_balance: float = 0.0  # pay received less stakes lost (its GPU costs nothing)
    garbage_expected: float = 0.0  # the same, in expectation over the draws, given the tasks it took
    garbage_path: list[float] = field(default_factory=list)
    honest_pay: dict[int, float] = field(default_factory=dict)
    honest_gpu_s: dict[int, float] = field(default_factory=dict)
    pool: float = 0.0
    pool_low: float = 0.0
    refunded: float = 0.0  # to applications whose first result was garbage (fee back, from the slash)

    def honest_rate(self) -> float:
        return sum(self.honest_pay.values()) / sum(self.honest_gpu_s.values())

    def honest_rate_min(self) -> float:
        return min(self.honest_pay[i] / s for i, s in self.honest_gpu_s.items() if s > 0)


def task_stream(tasks: int, seed: int) -> list[tuple[str, float]]:
    """The tasks (type, GPU seconds), the same for every N: half GPT 5-60 s, half SD 20-200 s."""
    rng = random.Random(seed)
    out = []
    for _ in range(tasks):
        if rng.random() < 0.5:
            out.append(("gpt", rng.uniform(5, 60)))
        else:
            out.append(("sd", rng.uniform(20, 200)))
    return out


def simulate(
    n: int,
    tasks: int = 2_000,
    honest: int = 20,
    seed: int = 1,
    stake: float = STAKE_CNX,
    margin: float = MARGIN,
) -> Result:
    """Run ``tasks`` tasks at audit rate 1 in ``n`` among ``honest`` honest nodes and one garbage node."""
    rng = random.Random(seed * 1_000_003 + n)
    garbage = honest  # the node ids are 0..honest; the last one returns garbage
    nodes = list(range(honest + 1))
    r = Result(n=n, tasks=tasks, stake=stake)
    r.honest_pay = dict.fromkeys(range(honest), 0.0)
    r.honest_gpu_s = dict.fromkeys(range(honest), 0.0)

    def run(node: int, seconds: float) -> None:
        if node != garbage:
            r.honest_gpu_s[node] += seconds

    def pay(node: int, amount: float) -> None:
        if node == garbage:
            r.garbage_balance += amount
        else:
            r.honest_pay[node] += amount

    def slash() -> None:
        r.caught += 1
        r.garbage_balance -= stake  # the stake is lost; the node joins again with a new one

    for task_type, seconds in task_stream(tasks, seed):
        p = RATE_CNX_PER_S * seconds
        if n == 1:  # today's protocol: three nodes, the garbage node (fastest) takes the first position
            three = rng.sample(nodes, 3)
            r.garbage_seats += garbage in three
            r.garbage_expected -= stake * (garbage in three)
            r.runs += 3
            r.gas += gas_of(task_type, "full")
            order = sorted(three, key=lambda x: (x != garbage, rng.random()))
            for pos, node in enumerate(order):
                run(node, seconds)
                if node == garbage:
                    slash()  # odd one out; its share goes back to the application
                else:
                    pay(node, 3 * p * SHARES[pos])
            r.garbage_path.append(r.garbage_balance)
            continue
        first = rng.choice(nodes)
        r.garbage_seats += first == garbage
        if first == garbage:
            r.garbage_expected += (1 - 1 / n) * p - stake / n
        run(first, seconds)
        r.runs += 1
        r.pool += p * premium(n, margin)  # moved to the pool at the draw
        if rng.random() >= 1 / n:  # not audited: the node is paid at its disclosure
            r.gas += gas_of(task_type, "unaudited")
            pay(first, p)
        else:
            r.audited += 1
            r.gas += gas_of(task_type, "audited")
            r.runs += 2
            auditors = rng.sample([x for x in nodes if x != first], 2)
            for a in auditors:
                run(a, seconds)
            if first == garbage:  # the odd one: slashed; the application gets its fee back from the
                slash()  # slash, and the pool is refilled with the audit's cost
                r.refunded += sampled_fee(p, n, margin)
                r.pool += 2 * p
            else:
                pay(first, p)  # from the task's fee
            for a in auditors:  # the garbage node, knowing its round, runs an audit honestly
                pay(a, p)
                r.pool -= p  # the auditors are paid from the pool
        r.pool_low = min(r.pool_low, r.pool)
        r.garbage_path.append(r.garbage_balance)
    return r


def render(rows: list[Result], tasks: int, seed: int, honest: int) -> str:
    base = next(x for x in rows if x.n == 1)
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    lines = [
        "# Sampled audits: incentives, GPU runs and gas per task",
        "",
        f"Generated by `python benchmarks/audit_incentives.py --tasks {tasks} --seed {seed}` on {today}.",
        'The model of docs/protocol-decisions.md, "Sampled audits" (benchmarks/audit_incentives.py\'s '
        "docstring): "
        f"{honest} honest nodes and one that returns garbage, {tasks} tasks (half GPT 5-60 GPU-s, half SD "
        f"20-200 GPU-s), one run paid {RATE_CNX_PER_S} CNX per GPU-second, stake {STAKE_CNX:.0f} CNX, "
        f"premium 2 x (1 + {MARGIN:.2f}) / N. Selection is uniform (the contracts draw by QoS weight: a "
        "simplification; every node here has the same weight). Gas per task from the per-path estimates "
        "(below), mean of GPT and SD as drawn.",
        "",
        "| N | stake (CNX) | audited | GPU runs / task | gas / task | honest CNX / GPU-s | vs N = 1 | "
        "lowest honest node vs N = 1 | garbage tasks | caught | garbage balance (CNX) | "
        "expected (CNX) | pool's lowest (CNX) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in rows:
        lines.append(
            f"| {x.n} | {x.stake:g} | {x.audited} | {x.runs / x.tasks:.3f} | {x.gas / x.tasks / 1e6:.3f}M | "
            f"{x.honest_rate():.5f} | {x.honest_rate() / base.honest_rate():.4f} | "
            f"{x.honest_rate_min() / base.honest_rate():.4f} | {x.garbage_seats} | {x.caught} | "
            f"{x.garbage_balance:+.2f} | {x.garbage_expected:+.2f} | {x.pool_low:.2f} |"
        )
    lines += [
        "",
        "- At N = 1 every task runs on three nodes and the garbage node is slashed at each task it is "
        "drawn for (the odd one of three); its balance is -400 CNX a task it takes. The honest nodes' rate "
        "there is below the paid 0.005 CNX/GPU-s because a task with the garbage node in it pays the two "
        "honest ones the 2nd and 3rd positions' shares (the garbage node, which computes nothing, is the "
        "fastest).",
        "- Sampled (N > 1), every honest run is paid its run's price, first or audit, so the honest rate is "
        "exactly 0.005 CNX per GPU-second, at least N = 1's. The garbage node returns garbage only as a "
        "task's first node (an audit's node knows its round, and garbage there is always the odd one), is "
        "caught about once in N such tasks, and its balance falls with each catch; it stays negative "
        "while the stake is at least N x the pay a garbage task saves (the last two rows: the proposed "
        "minimum, 2 N x the largest run pay, and 1 CNX, below N x the mean run pay, where garbage pays).",
        "- \"pool's lowest\": the audit pool's lowest balance, starting from 0: the reserve the owner "
        "seeds it with so that it never owes an auditor (it drifts up by the margin).",
        "",
        "## Gas per path (estimated)",
        "",
        "Today's steps in a network of many nodes, profiled by `python benchmarks/gas_profile.py` (issue "
        "25's contracts; chain_gas.md's scaling table shows them flat from 10 to 10,000 nodes); the new "
        "steps estimated from that profile as benchmarks/audit_incentives.py states (`EXTRA_NODE`, `DRAW`, "
        "`POOL_CREDIT`, `SEAL_COPY`, `RELEASE`): within perhaps 20k a path.",
        "",
    ]
    for task_type in ("gpt", "sd"):
        paths = path_gas(task_type)
        lines += [f"### {task_type.upper()}", "", "| path | step | gas |", "|---|---|---:|"]
        for path, steps in paths.items():
            for step, gas in steps.items():
                lines.append(f"| {path} | {step} | {gas:,} |")
            lines.append(f"| **{path}** | **total** | **{sum(steps.values()):,}** |")
        lines += ["", "| N | GPU runs / task | mean gas / task |", "|---:|---:|---:|"]
        for n in (1, 10, 100):
            lines.append(f"| {n} | {mean_runs(n):.2f} | {mean_gas(task_type, n):,.0f} |")
        lines.append("")
    lines += [
        "Target at N = 10: at most 0.45M gas and 1.25 GPU runs per task. The runs are met (1.20); the gas "
        f"is not: {mean_gas('gpt', 10) / 1e6:.3f}M (GPT). The one-node lifecycle "
        f"({gas_of('gpt', 'unaudited') / 1e6:.3f}M) leaves 26k a task for the audits, which cost "
        f"{(gas_of('gpt', 'audited') - gas_of('gpt', 'unaudited')) / 10 / 1e3:.0f}k a task at N = 10; "
        "createTask (the task's fresh slots and one selection) is its largest step. At N = 100 the mean is "
        f"{mean_gas('gpt', 100) / 1e6:.3f}M.",
        "",
        "## Minimum stake",
        "",
        "Garbage saves at most a run's pay a task (a node that spends more than it is paid does not run "
        "tasks); caught once in N tasks, it must lose more than N tasks' savings: stake >= N x gain. With "
        f"a safety factor of {SAFETY} (a cheater that escapes up to half of its audits, e.g. with a block "
        "producer's help), the largest run pay a stake allows is stake / (2 N).",
        "",
        "| N | run pay (CNX) | min stake (x1) | min stake (x2) | garbage's edge at 400 CNX, GPU cost = pay |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n in (1, 10, 100):
        for p in (0.1, 1.0, 10.0):
            lines.append(
                f"| {n} | {p:g} | {min_stake(n, p):g} | {min_stake(n, p, SAFETY):g} | "
                f"{cheat_edge(n, p, p, STAKE_CNX):+.3f} |"
            )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--honest", type=int, default=20)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rows = [simulate(n, args.tasks, args.honest, args.seed) for n in (1, 10, 100)]
    # the bound at work: the proposed minimum (2 N x the largest run pay, 1 CNX here) and a stake below
    # N x the mean run pay (0.36 CNX), where garbage pays
    largest_pay = RATE_CNX_PER_S * 200
    rows += [
        simulate(10, args.tasks, args.honest, args.seed, stake=min_stake(10, largest_pay, SAFETY)),
        simulate(10, args.tasks, args.honest, args.seed, stake=1.0),
    ]
    text = render(rows, args.tasks, args.seed, args.honest)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
