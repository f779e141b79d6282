"""Bring-up of a farm's node accounts at once, and a kill in the middle of it: every account funded once
and joined once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from eth_account import Account

from cluster.chain.accounts import OperatorKeys
from cluster.chain.contracts import NodeStatus
from tests.coordinator.crash_runner import CRASH_EXIT_CODE
from tests.coordinator.factories import CARD, FUNDER, endpoints

REPO = Path(__file__).resolve().parents[2]
NUM_SLOTS = 200


def run_farm(config: dict, path: Path) -> subprocess.CompletedProcess[str]:
    path.write_text(json.dumps(config))
    return subprocess.run(
        [sys.executable, "-m", "tests.coordinator.crash_runner", str(path)],
        cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_a_farm_killed_in_the_middle_of_bring_up_funds_and_joins_every_node_once(
    w3, anvil, deployment, relay, tmp_path
):
    _, mnemonic = Account.create_with_mnemonic()
    keys = OperatorKeys.from_mnemonic(mnemonic)
    operator = keys.operator.address
    w3.eth.send_transaction({"from": FUNDER.address, "to": operator, "value": 100_000 * 10**18})
    first_block = w3.eth.block_number + 1
    config = {
        "endpoints": endpoints(anvil.rpc_url, deployment, relay.url).model_dump(),
        "state_dir": str(tmp_path / "state"), "cards": [CARD.join_args] * NUM_SLOTS,
        "mnemonic": mnemonic, "task_ids": [], "timeout_s": 60,
    }  # fmt: skip

    killed = run_farm({**config, "crash_at": "joined", "crash_after": NUM_SLOTS // 2}, tmp_path / "kill.json")
    assert killed.returncode == CRASH_EXIT_CODE, killed.stderr[-2000:]
    node = deployment.bind(w3).contract("Node")
    nodes = [keys.node(i).address for i in range(NUM_SLOTS)]
    joined_before = sum(node.functions.nodeStatus(n).call() != NodeStatus.QUIT for n in nodes)
    # the second process asks for another reserve (as one does when the gas price moved): the fundings the
    # first one signed keep their amounts, and none is sent twice
    again = {**config, "funds": {"gas_reserve_wei": 15 * 10**16}}
    finished = run_farm(again, tmp_path / "again.json")
    assert finished.returncode == 0, finished.stderr[-3000:]

    assert NUM_SLOTS // 2 <= joined_before < NUM_SLOTS  # killed in the middle, not before, not after
    assert {NodeStatus(node.functions.nodeStatus(n).call()) for n in nodes} == {NodeStatus.AVAILABLE}
    fundings, joins, failed = Counter[str](), Counter[str](), []
    for number in range(first_block, w3.eth.block_number + 1):
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
            if tx["from"] == operator and tx["to"] in nodes:
                fundings[tx["to"]] += 1
            elif tx["from"] in nodes:
                joins[tx["from"]] += 1
            if tx["from"] in (operator, *nodes) and w3.eth.get_transaction_receipt(tx["hash"])["status"] != 1:
                failed.append(tx["hash"])
    assert fundings == dict.fromkeys(nodes, 1)  # funded once each, across the kill
    assert joins == dict.fromkeys(nodes, 1)  # one transaction each: its join
    assert failed == []
