"""Selection frequencies match the protocol's weights over thousands of draws.

Each draw is ``Node.selectNodes`` run as an ``eth_call`` from the Task contract's address: the chain's
state is never changed, so every draw starts from the same snapshot of the network (as a transaction
reverted after it would), and only the task hash differs. The nodes' QoS weights differ (a task run
first leaves scores 20, 18 and 12), and the groups differ in size and VRAM. The observed counts are then
tested against the expected ones with a chi-square test at p = 1e-4: correct code fails one run in ten
thousand, a wrong weighting (uniform, or a group drawn by its size) fails every time at these counts.
"""

from __future__ import annotations

import math
from collections import Counter

from eth_abi import decode as abi_decode
from eth_hash.auto import keccak
from eth_utils import to_checksum_address

from cluster.chain.contracts import TaskType
from tests.contracts.crowd import Rpc
from tests.contracts.net import ETHER, GPU_A, GPU_B, GPU_SMALL, Net

NUM_DRAWS = 2_400
BATCH = 400
P_VALUE = 1e-4


def chi2_sf(x: float, dof: int) -> float:
    """P(X >= x) for X ~ chi-square(dof): 1 - the regularized lower incomplete gamma, by its series."""
    if x <= 0:
        return 1.0  # every count exactly as expected (the series' log(z) is undefined at 0)
    a, z = dof / 2, x / 2
    term = total = 1 / a
    for n in range(1, 1_000):
        term *= z / (a + n)
        total += term
        if term < total * 1e-15:
            break
    return max(0.0, 1 - math.exp(a * math.log(z) - z - math.lgamma(a)) * total)


def test_chi2_sf_at_zero_and_against_the_closed_form():
    assert chi2_sf(0.0, 3) == 1.0  # a draw whose counts are exactly the expected ones
    for x in (0.5, 3.0, 20.0):  # 2 degrees of freedom: P(X >= x) = exp(-x / 2)
        assert math.isclose(chi2_sf(x, 2), math.exp(-x / 2), rel_tol=1e-9)


def assert_fits(observed: Counter, weights: dict[str, float]) -> None:
    total_weight = sum(weights.values())
    n = sum(observed.values())
    assert set(observed) <= set(weights), set(observed) - set(weights)
    stat = sum((observed[k] - n * w / total_weight) ** 2 / (n * w / total_weight) for k, w in weights.items())
    p = chi2_sf(stat, len(weights) - 1)
    assert p > P_VALUE, f"chi2={stat:.1f}, p={p:.2e}: observed {dict(observed)}, weights {weights}"


def draw(net: Net, task_type: TaskType, vram_limit: int, count: int) -> list[list[str]]:
    rpc = Rpc(net.w3.provider.endpoint_uri)
    draws = []
    for start in range(0, count, BATCH):
        calls = []
        for i in range(start, min(start + BATCH, count)):
            data = net.node.encode_abi(
                "selectNodes", [i + 1, int(task_type), vram_limit, keccak(b"draw %d" % i)]
            )
            calls.append(
                ("eth_call", [{"from": net.task.address, "to": net.node.address, "data": data}, "latest"])
            )
        for result in rpc.batch(calls):
            (selected,) = abi_decode(["address[3]"], bytes.fromhex(result[2:]))
            draws.append([to_checksum_address(a) for a in selected])
    return draws


def test_draws_follow_group_and_node_weights(net: Net):
    a_nodes, b_nodes, small_nodes = net.accounts[3:6], net.accounts[6:9], net.accounts[9:11]
    net.join_all(a_nodes, GPU_A)
    task_id, _ = net.create_task(net.accounts[1], TaskType.GPT, ETHER)
    order = net.selected(task_id)
    net.run(task_id, [b"r" * 32] * 3)  # commits and disclosures in round order: scores 20, 18, 12
    net.upload(task_id, 0, order[0])
    net.join_all(b_nodes, GPU_B)  # new nodes: 20 each
    net.join_all(small_nodes, GPU_SMALL)  # 12 GB, a group of two: SD only
    weight = {n: net.view(net.qos, "weight", n) for n in [*a_nodes, *b_nodes, *small_nodes]}
    assert sorted(weight[n] for n in a_nodes) == [12, 18, 20]
    card_of = {n: "A" for n in a_nodes} | {n: "B" for n in b_nodes} | {n: "small" for n in small_nodes}

    # GPT: a group of >= 3 by its summed weight (A 50, B 60), then its members by weight.
    gpt = draw(net, TaskType.GPT, 0, NUM_DRAWS)
    assert all(len({card_of[n] for n in d}) == 1 and len(set(d)) == 3 for d in gpt)
    assert_fits(Counter(card_of[d[0]] for d in gpt), {"A": 50, "B": 60})
    assert_fits(Counter(d[0] for d in gpt), {n: weight[n] for n in [*a_nodes, *b_nodes]})
    # The second member of group A: the first one's weight is out of the draw (without replacement).
    seconds = Counter((d[0], d[1]) for d in gpt if card_of[d[0]] == "A")
    for first in a_nodes:
        rest = {n: weight[n] for n in a_nodes if n != first}
        assert_fits(Counter({n: seconds[(first, n)] for n in rest}), rest)

    # SD: every available node by weight, across groups; a VRAM limit leaves the small cards out.
    sd = draw(net, TaskType.SD, 0, NUM_DRAWS)
    assert all(len(set(d)) == 3 for d in sd)
    assert_fits(Counter(d[0] for d in sd), weight)
    sd_big = draw(net, TaskType.SD, 16, NUM_DRAWS)
    assert_fits(Counter(d[0] for d in sd_big), {n: w for n, w in weight.items() if card_of[n] != "small"})


def test_the_chi_square_check_rejects_a_uniform_draw_of_weighted_nodes():
    weights = {"x": 20, "y": 12, "z": 1}
    uniform = Counter({"x": 800, "y": 800, "z": 800})
    try:
        assert_fits(uniform, weights)
    except AssertionError:
        return
    raise AssertionError("a uniform draw passed as weighted")
