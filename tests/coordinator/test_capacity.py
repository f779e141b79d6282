"""The farm's accounts follow its task places (cluster/coordinator/capacity.py), on the local chain.

Places fall when a machine is lost or drained, rise when one joins or comes back. The coordinator is
real, the chain is the session's anvil, jobs run in this process (the Ray side of machines has its own
tests in tests/farm).
"""

from __future__ import annotations

import asyncio

from cluster.chain.contracts import NodeStatus
from cluster.coordinator.capacity import plan_capacity
from cluster.coordinator.round_state import Outcome
from cluster.coordinator.store import AccountRow
from cluster.protocol.cards import CardModel
from tests.coordinator.factories import (
    CARD,
    create_task,
    gpt_args,
    rounds_end,
    run_until,
    running_coordinator,
    settings,
    upload,
)
from tests.coordinator.local_runner import LocalJobRunner

CARD_B = CardModel("Devnet Virtual Card B", 16, "transformers-test")
UPGRADED = CardModel(CARD.gpu_name, CARD.vram_gb, "transformers-test-2")  # the same GPU, a new runtime


def rows(*specs: tuple[int, CardModel, bool]) -> list[AccountRow]:
    return [AccountRow(*spec) for spec in specs]


def test_fewer_places_spare_idle_accounts_first_and_more_resume_spares_before_deriving():
    accounts = rows((0, CARD, False), (1, CARD, False), (2, CARD, False), (3, CARD, True), (4, CARD_B, False))
    shrink = plan_capacity(accounts, {CARD: 1, CARD_B: 1}, busy={1, 2})
    assert shrink.spare == [0, 2]  # idle 0 first, then the newest busy one; 1 keeps serving
    grow = plan_capacity(accounts, {CARD: 5, CARD_B: 3})
    assert grow.serve == [3] and grow.derive == [CARD] + [CARD_B] * 2 and grow.spare == []
    assert plan_capacity(accounts, {CARD: 3, CARD_B: 1}).is_empty
    # accounts leaving (retiring) count for nothing, and their card model gets no new ones
    assert plan_capacity(accounts, {CARD: 4, CARD_B: 1}, leaving={0}).derive == []
    # an upgrade: the same GPU served under a new runtime tag, none under the old one
    upgrade = plan_capacity(accounts, {UPGRADED: 3, CARD_B: 1})
    assert upgrade.superseded == [CARD] and upgrade.derive == [UPGRADED] * 3
    assert sorted(upgrade.spare) == [0, 1, 2]
    assert plan_capacity(accounts, {CARD_B: 1}).superseded == []  # a card model lost is not an upgrade


def test_accounts_follow_places_down_and_up_and_a_new_card_model_joins_without_a_restart(
    w3, anvil, deployment, relay, operator, tiny_lm_dir, tmp_path
):
    farm = settings(anvil, deployment, relay, tmp_path / "farm" / "coordinator", cards=(CARD,) * 4)
    runner = LocalJobRunner(tmp_path)
    args = gpt_args(tiny_lm_dir, seed=5)

    async def statuses(coordinator) -> dict[str, NodeStatus]:
        ops = coordinator.ops
        return {n.address: await ops.node_status(n.address) for n in coordinator.accounts}

    async def scenario():
        async with running_coordinator(farm, operator, runner) as coordinator:
            runner.gate.clear()  # the task's jobs hold: its three nodes stay busy
            task_id = create_task(w3, deployment, args)
            await upload(relay, task_id, args)
            await run_until(coordinator, lambda: len(coordinator.store.of_task(task_id)) == 3)
            busy = {row.node for row in coordinator.store.of_task(task_id)}
            shrink = await coordinator.follow_capacity({CARD: 2})  # two places lost
            during = await statuses(coordinator)
            runner.gate.set()
            await run_until(coordinator, rounds_end(coordinator, task_id, Outcome.PAID))
            after_task = await statuses(coordinator)
            grow = await coordinator.follow_capacity({CARD: 4, CARD_B: 3})  # back, and a new card model
            grown = await statuses(coordinator)
            cards = {n.address: n.card for n in coordinator.accounts}
            await coordinator.follow_capacity({CARD: 3, CARD_B: 3})  # one place lost again
            spare = coordinator.spare_accounts
        async with running_coordinator(farm, operator, runner) as restarted:  # join_nodes, as every start
            restarted_statuses = await statuses(restarted)
            restarted_spare = restarted.spare_accounts
            restarted_cards = {n.address: n.card for n in restarted.accounts}
        return (busy, shrink, during, after_task, grow, grown, cards, spare, restarted_statuses,
                restarted_spare, restarted_cards)  # fmt: skip

    (busy, shrink, during, after_task, grow, grown, cards, spare, restarted_statuses, restarted_spare,
     restarted_cards) = asyncio.run(scenario())  # fmt: skip
    spared = [address for address, status in during.items() if status in (NodeStatus.PAUSED,
              NodeStatus.PENDING_PAUSE)]  # fmt: skip
    assert len(shrink.spare) == 2 and len(spared) == 2
    (idle,) = set(during) - busy
    assert during[idle] is NodeStatus.PAUSED  # the idle account first, paused at once
    assert sum(during[a] is NodeStatus.PENDING_PAUSE for a in busy) == 1  # a busy one when its task ends
    # the task was paid to all three (nobody slashed), and the busy account's pause took effect after it
    assert sorted(after_task.values()) == sorted([NodeStatus.AVAILABLE] * 2 + [NodeStatus.PAUSED] * 2)
    assert len(grow.serve) == 2 and grow.derive == [CARD_B] * 3
    assert set(grown.values()) == {NodeStatus.AVAILABLE} and len(grown) == 7
    assert sorted(c.gpu_name for c in cards.values()).count(CARD_B.gpu_name) == 3
    assert len(spare) == 1 and cards[next(iter(spare))] == CARD
    # a restart keeps every account under its card model and the spare one paused
    assert restarted_cards == cards and restarted_spare == spare
    assert restarted_statuses[next(iter(spare))] is NodeStatus.PAUSED
    assert sum(s is NodeStatus.AVAILABLE for s in restarted_statuses.values()) == 6


def test_an_upgraded_card_model_takes_the_places_and_the_old_accounts_quit_with_their_stakes(
    w3, anvil, deployment, relay, operator, tmp_path
):
    farm = settings(anvil, deployment, relay, tmp_path / "farm" / "coordinator", cards=(CARD,) * 3)

    async def scenario():
        async with running_coordinator(farm, operator, LocalJobRunner(tmp_path)) as coordinator:
            old = [n.address for n in coordinator.accounts]
            stakes = {a: await coordinator.ops.balance(a) for a in old}
            plan = await coordinator.follow_capacity({UPGRADED: 3})  # every machine rolled to the new runtime
            ops = coordinator.ops
            old_after = {a: (await ops.node_status(a), await ops.balance(a)) for a in old}
            new = {n.address: await ops.node_status(n.address) for n in coordinator.nodes.of_card(UPGRADED)}
        return stakes, plan, old_after, new

    before, plan, old_after, new = asyncio.run(scenario())
    assert plan.superseded == [CARD] and len(new) == 3 and set(new.values()) == {NodeStatus.AVAILABLE}
    assert {status for status, _ in old_after.values()} == {NodeStatus.QUIT}
    stake = int(deployment.bind(w3).contract("Node").functions.nodeStake().call())
    for address, (_, balance) in old_after.items():  # the stake came back, less the gas of pause and quit
        assert balance > before[address] + stake * 9 // 10


def test_accounts_the_chain_did_not_take_are_settled_at_the_next_call(w3, anvil, deployment, relay, tmp_path):
    """The operator cannot fund a new card model's account: the registry has it, the chain does not; once
    the operator is funded, the next call (same places) joins it."""
    from eth_account import Account

    from cluster.chain.accounts import OperatorKeys
    from tests.coordinator.factories import FUNDER

    _, mnemonic = Account.create_with_mnemonic()
    poor = OperatorKeys.from_mnemonic(mnemonic)
    stake = int(deployment.bind(w3).contract("Node").functions.nodeStake().call())
    w3.eth.send_transaction(
        {"from": FUNDER.address, "to": poor.operator.address, "value": 3 * stake + 10**18}
    )
    farm = settings(anvil, deployment, relay, tmp_path / "farm" / "coordinator", cards=(CARD,) * 2)

    async def scenario():
        async with running_coordinator(farm, poor, LocalJobRunner(tmp_path)) as coordinator:
            failure = None
            try:
                await coordinator.follow_capacity({CARD: 2, CARD_B: 2})  # two more stakes: more than it has
            except Exception as exc:
                failure = exc
            unsettled = not coordinator.is_capacity_settled
            w3.eth.send_transaction({"from": FUNDER.address, "to": poor.operator.address, "value": 5 * stake})
            await coordinator.follow_capacity({CARD: 2, CARD_B: 2})
            ops = coordinator.ops
            return (
                failure,
                unsettled,
                coordinator.is_capacity_settled,
                [await ops.node_status(n.address) for n in coordinator.nodes.of_card(CARD_B)],
            )

    failure, unsettled, settled, statuses_b = asyncio.run(scenario())
    assert failure is not None and unsettled
    assert settled and statuses_b == [NodeStatus.AVAILABLE] * 2


def test_a_place_back_while_its_account_s_pause_waits_for_a_task_resumes_it_once_the_task_ends(
    w3, anvil, deployment, relay, operator, tiny_lm_dir, tmp_path
):
    """A machine lost and back within one task: the busy account's pause (PendingPause) cannot be taken
    back on chain; it stays to settle and is resumed at the next look after its task ends."""
    farm = settings(anvil, deployment, relay, tmp_path / "farm" / "coordinator", cards=(CARD,) * 3)
    runner = LocalJobRunner(tmp_path)
    args = gpt_args(tiny_lm_dir, seed=9)

    async def scenario():
        async with running_coordinator(farm, operator, runner) as coordinator:
            runner.gate.clear()
            task_id = create_task(w3, deployment, args)
            await upload(relay, task_id, args)
            await run_until(coordinator, lambda: len(coordinator.store.of_task(task_id)) == 3)
            (spared,) = (await coordinator.follow_capacity({CARD: 2})).spare  # every account is busy
            address = coordinator.nodes.accounts[spared].address
            await coordinator.follow_capacity({CARD: 3})  # back before the task ended
            during = await coordinator.ops.node_status(address), coordinator.is_capacity_settled
            runner.gate.set()
            await run_until(coordinator, rounds_end(coordinator, task_id, Outcome.PAID))
            after_task = await coordinator.ops.node_status(address)
            await coordinator.follow_capacity({CARD: 3})  # the next look
            return (
                during,
                after_task,
                await coordinator.ops.node_status(address),
                coordinator.is_capacity_settled,
            )

    (during, settled_during), after_task, resumed, settled = asyncio.run(scenario())
    assert during is NodeStatus.PENDING_PAUSE and not settled_during
    assert after_task is NodeStatus.PAUSED
    assert resumed is NodeStatus.AVAILABLE and settled
