"""The real coordinator against benchmarks/fake_network.py (the control-plane benchmark's chain and relay).

A handful of places: every round of the first tasks must reach Step.DONE paid, with no failed transaction,
and every log the fake emitted must decode with the real Task ABI into the coordinator's typed events, in
the order the contract emits them. The fake encodes its logs from the ABI by name, so a changed event
(a field added, renamed or retyped) fails here, as does any step it refuses.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
from eth_account import Account

from benchmarks.control_plane import coordinator_settings, fake_network
from benchmarks.farm_sim import SimulatedPool
from cluster.chain.accounts import OperatorKeys
from cluster.chain.artifacts import load_artifact
from cluster.chain.events import EventDecoder
from cluster.chain.task_events import (
    CommitmentsReady,
    CommitmentSubmitted,
    NodeOutcome,
    ResultDisclosed,
    ResultUploaded,
    TaskNodeSettled,
    TaskPending,
    TaskStarted,
    TaskSuccess,
    task_event,
)
from cluster.coordinator.coordinator import Coordinator
from cluster.coordinator.round_state import Outcome, Step
from cluster.protocol.hashes import task_hash

PLACES = 9  # three tasks at a time
TASKS = (1, 2, 3)


def test_the_coordinator_is_paid_for_every_round_against_the_fake_network(tmp_path: Path) -> None:
    Account.enable_unaudited_hdwallet_features()
    keys = OperatorKeys.from_mnemonic(Account.create_with_mnemonic()[1])
    addresses = [keys.node(i).address for i in range(PLACES)]
    with fake_network(addresses, tmp_path, block_time_s=0.5) as fake:
        coordinator = Coordinator(
            coordinator_settings(fake, tmp_path / "farm", PLACES, 0), keys, SimulatedPool()
        )

        async def scenario() -> list[list[tuple[Step, Outcome, int]]]:
            await coordinator.start()
            statuses = await coordinator.join_nodes()  # Available or already Busy on the fake: nothing sent
            assert set(map(int, statuses.values())) <= {1, 2}
            stop = asyncio.Event()
            loop = asyncio.create_task(coordinator.run(stop))
            deadline = time.monotonic() + 20
            try:
                while time.monotonic() < deadline:
                    rounds = [coordinator.store.of_task(t) for t in TASKS]
                    if all(len(r) == 3 and all(x.step is Step.DONE for x in r) for r in rounds):
                        break
                    await asyncio.sleep(0.2)
            finally:
                stop.set()
                await loop
            rows = [
                [(x.step, x.outcome, x.fee_earned or 0) for x in coordinator.store.of_task(t)] for t in TASKS
            ]
            await coordinator.close()
            return rows

        rows = asyncio.run(scenario())
        stats = fake.stats()
        query = {"fromBlock": "0x0", "toBlock": "latest"}
        request = {"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [query]}
        raw_logs = httpx.post(fake.url, json=request).json()["result"]
        addresses_of = fake.addresses

    for task_rows in rows:
        assert [(step, outcome) for step, outcome, _ in task_rows] == [(Step.DONE, Outcome.PAID)] * 3
        assert all(fee > 0 for _, _, fee in task_rows)
    assert stats["txs_failed"] == 0, stats["failed_by_reason"]
    assert stats["txs_refused"] == 0 and stats["unknown"] == {}
    assert stats["rounds_slashed"] == stats["rounds_cancelled"] == 0

    decoder = EventDecoder({"Task": (addresses_of["Task"], load_artifact("Task").abi)})
    decoded = [decoder.decode(raw) for raw in raw_logs]
    assert raw_logs and None not in decoded, "a log the real ABI does not decode"
    typed = [task_event(event) for event in decoded if event is not None]
    assert None not in typed
    for task_id in TASKS:
        events = [e for e in typed if e is not None and e.task_id == task_id]
        kinds = [type(e) for e in events]
        assert kinds[:4] == [TaskPending, TaskStarted, TaskStarted, TaskStarted]
        assert kinds[4:7] == [CommitmentSubmitted] * 3 and kinds[7] is CommitmentsReady
        assert Counter(kinds[8:]) == Counter(
            {ResultDisclosed: 3, TaskSuccess: 1, TaskNodeSettled: 3, ResultUploaded: 1}
        )
        pending, started = events[0], events[1:4]
        assert isinstance(pending, TaskPending) and pending.cap == 6
        assert {e.node for e in started if isinstance(e, TaskStarted)} <= set(addresses)
        assert [e.round for e in started if isinstance(e, TaskStarted)] == [0, 1, 2]
        assert all(isinstance(e, TaskStarted) and e.task_hash == pending.task_hash for e in started)
        assert pending.task_hash != task_hash("")
        settled = [e for e in events if isinstance(e, TaskNodeSettled)]
        assert {e.outcome for e in settled} == {NodeOutcome.PAID}
        assert sum(e.fee_wei for e in settled) == pending.fee_wei  # the last round takes the remainder
        (success,) = [e for e in events if isinstance(e, TaskSuccess)]
        assert success.result_node in {e.node for e in started if isinstance(e, TaskStarted)}
        assert kinds.index(ResultUploaded) > kinds.index(TaskSuccess)
