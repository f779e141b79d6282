"""The relay's follower classifies a failed poll once (cluster.failures): a page it cannot apply is logged
with its traceback once, shown on GET /v1/relay, tried again from the cursor less and less often, and
followed past as soon as it applies; nothing is skipped."""

from __future__ import annotations

import asyncio
import logging

from cluster.chain.artifacts import load_artifact
from cluster.chain.rpc import connect
from network.relay import follower as follower_module
from network.relay.follower import ChainFollower
from network.relay.lease import FileLease
from network.relay.store import RelayStore


def test_a_page_that_cannot_be_applied_is_retried_from_the_cursor_and_shown(
    w3, anvil, deployment, tmp_path, monkeypatch, caplog
):
    owner = deployment.owner
    task = deployment.bind(w3).contract("Task")
    w3.eth.wait_for_transaction_receipt(task.functions.setTaskTimeout(600).transact({"from": owner}))
    apply_event = follower_module.apply_event
    refusals = {"left": 3}

    def apply_unless_broken(facts, event):  # a bug in applying this block's events, for three polls
        if refusals["left"] > 0:
            refusals["left"] -= 1
            raise KeyError("a bug in applying an event")
        apply_event(facts, event)

    monkeypatch.setattr(follower_module, "apply_event", apply_unless_broken)
    store = RelayStore(f"sqlite:///{tmp_path / 'relay.db'}")

    async def scenario():
        follower = ChainFollower(
            connect(anvil.rpc_url), store, FileLease(tmp_path / "lease"),
            task=(task.address, load_artifact("Task").abi), start_block=deployment.block_number,
        )  # fmt: skip
        stop = asyncio.Event()
        running = asyncio.create_task(follower.run(stop, poll_interval_s=0.01))
        seen_failures = []
        while follower.next_block() <= w3.eth.block_number:  # followed past the page, in the end
            if follower.failure is not None:
                seen_failures.append(follower.failure)
            assert not running.done()
            await asyncio.sleep(0.005)
        stop.set()
        await running
        return seen_failures, follower.failure

    with caplog.at_level(logging.WARNING, logger="network.relay.follower"):
        seen, failure_after = asyncio.run(scenario())
    store.close()
    assert refusals["left"] == 0 and "KeyError" in seen[0] and failure_after is None
    logged = [r for r in caplog.records if "following the chain failed" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None  # once, with its traceback
