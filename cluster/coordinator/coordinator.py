"""The coordinator's loop: follow the chain for the farm's nodes and drive every round to its end.

The coordinator keeps the operator's identity (the key, the node accounts, bring-up and capacity), the
operator's money, the job queue and the card guard, and reads the chain once. The rounds are driven by a
``RoundShard`` on this loop (``round_drivers: 0``, a farm of few places) or by N round-driver actors, each
owning its share of the accounts' nonces, journal and rows (``drivers/fleet.py``). Nothing stops the loop.
Everything the loop knows is in the state directory, so a new process (or a restarted Ray actor) picks up
where the last one stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from web3 import AsyncWeb3

from cluster.chain.accounts import MNEMONIC_ENV, OperatorKeys
from cluster.chain.artifacts import load_artifact
from cluster.chain.contracts import NodeStatus
from cluster.chain.crypto_backend import log_signing_backend
from cluster.chain.events import ChainEvent, CursorStore, EventDecoder, EventReader
from cluster.chain.rpc import connect
from cluster.chain.sender import SenderConfig, TxSender
from cluster.chain.tx_journal import TxJournal
from cluster.config import ChainEndpoints
from cluster.coordinator.capacity import CapacityPlan, plan_capacity
from cluster.coordinator.chain_ops import ChainOps, abis
from cluster.coordinator.chain_watch import ChainWatch
from cluster.coordinator.clock import ChainClock
from cluster.coordinator.drivers.fleet import DriverFleet, Rounds, check_driver_count
from cluster.coordinator.drivers.guard import CardGuard, store_siblings
from cluster.coordinator.drivers.shard import RoundShard
from cluster.coordinator.funds.funds import Funds
from cluster.coordinator.funds.settings import FundsSettings
from cluster.coordinator.nodes import NodeAccount, NodeSet, bring_up, pause_all, quit_all
from cluster.coordinator.rounds import Guard, RoundDriver, relay_session
from cluster.coordinator.scheduling.runner import JobRunner
from cluster.coordinator.store import RoundStore
from cluster.coordinator.timeline import RoundTimeline
from cluster.failpoints import NO_FAILPOINTS, Failpoints
from cluster.failures import (
    log_retried_failure,
)
from cluster.ledger.follow import open_ledger
from cluster.protocol.cards import CardModel
from cluster.status.model import CoordinatorStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoordinatorSettings:
    endpoints: ChainEndpoints
    state_dir: Path
    cards: Sequence[CardModel]  # one per node account, in derivation order
    poll_interval_s: float = 0.5
    guard_own_results: bool = True
    sender: SenderConfig = field(default_factory=SenderConfig)
    funds: FundsSettings = field(default_factory=FundsSettings)  # gas reserve, payout address, sweeps
    failpoints: Failpoints = NO_FAILPOINTS
    round_drivers: int = 0  # 0: the rounds run on this loop; N: on N round-driver actors (drivers/)
    mnemonic_env: str = MNEMONIC_ENV  # where round drivers read the operator's mnemonic (never sent to them)


class Coordinator:
    def __init__(self, settings: CoordinatorSettings, keys: OperatorKeys, pool: JobRunner):
        self.settings = settings
        self.keys = keys
        self.pool = pool
        self.nodes = NodeSet(keys, settings.cards)
        self.clock = ChainClock()
        self.timeline = RoundTimeline()
        self._poll_failure: str | None = None  # why following the chain failed last, until it works again
        self._spare: set[str] = set()  # accounts paused for want of places (capacity.py)
        self._unsettled: set[str] = set()  # accounts whose capacity changed and the chain has not followed
        self._capacity_lock = asyncio.Lock()
        self._started = False

    @property
    def accounts(self) -> list[NodeAccount]:
        return self.nodes.accounts

    # -- life cycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        log_signing_backend(log, "coordinator")
        state, endpoints = self.settings.state_dir, self.settings.endpoints
        state.mkdir(parents=True, exist_ok=True)
        self.w3: AsyncWeb3 = connect(endpoints.rpc_url)
        # A receipt counts once it is as deep as the events the loop acts on: a reorg above that depth
        # drops the transaction, and the sender sends the same signed bytes again.
        sender_config = dataclasses.replace(self.settings.sender, confirmations=endpoints.confirmations)
        self.sender = TxSender(self.w3, TxJournal(state / "transactions.db"), abis(), sender_config)
        self.ops = ChainOps(self.w3, self.sender, endpoints.addresses)
        self.store = RoundStore(state)
        self._load_accounts()
        self.cursors = CursorStore(state / "cursor.db")
        decoder = EventDecoder({"Task": (endpoints.addresses["Task"], load_artifact("Task").abi)})
        self.reader = EventReader(
            self.w3, decoder, self.cursors, name="coordinator", start_block=endpoints.start_block,
            confirmations=endpoints.confirmations,
        )  # fmt: skip
        self.ledger = open_ledger(
            state, self.w3, self.sender.journal, self.cursors, endpoints.addresses,
            start_block=endpoints.start_block, confirmations=endpoints.confirmations,
        )  # fmt: skip
        self.ledger.note_accounts({n.address: n.card for n in self.accounts}, self.keys.operator.address)
        self.timers = await self.ops.task_timers()  # then followed through their events by the watch
        self._http = relay_session()
        self.clock.observe_block(await self.ops.latest_block_time_s())
        check_driver_count(state, self.settings.round_drivers, self.store)
        if self.settings.round_drivers > 0:
            self.fleet: DriverFleet | None = DriverFleet(self, self.settings.round_drivers)
            await self.fleet.start()
            self.rounds: Rounds = self.fleet
            siblings = self.fleet.siblings
        else:
            self.fleet, siblings = None, store_siblings(self.store)
            self.rounds = self._own_shard()
        self.guard = CardGuard(self.store, self.ops, self.nodes, siblings)
        # The operator's money: balances read once, then kept from receipts and fee events (funds/).
        self.funds = Funds(
            self.settings.funds, self.ops, lambda: self.rounds.busy_nodes(), self.nodes,
            self.keys.operator, state, failpoints=self.settings.failpoints,
        )  # fmt: skip
        if self.fleet is not None:
            self.fleet.follow_journals(self.funds.book, self.ledger)
        await self.funds.start()
        self._started = True

    def _own_shard(self) -> RoundShard:
        """The rounds on this loop: the chain watch over the store, the steps signed by this sender."""
        watch = ChainWatch(self.store, self.nodes.__contains__, self.timers, self.timeline)
        self.driver = RoundDriver(
            self.store, self.ops, self.pool, self.nodes, self.clock, self.timers,
            relay_url=self.settings.endpoints.relay_url, http=self._http, guard=self._guard_hook(),
            failpoints=self.settings.failpoints, timeline=self.timeline,
        )  # fmt: skip
        return RoundShard(self.store, watch, self.driver, poll_interval_s=self.settings.poll_interval_s)

    def _guard_hook(self) -> Guard | None:
        if not self.settings.guard_own_results:
            return None
        return lambda task: self.guard.holds(task)

    def _load_accounts(self) -> None:
        """The accounts as the registry has them; a state directory without one (a new farm, or one from
        before machines could join) is given the accounts of ``settings.cards``, in derivation order."""
        registry = self.store.node_accounts
        if not registry.rows():
            registry.add(enumerate(self.settings.cards))
        rows = registry.rows()
        self.nodes = NodeSet(self.keys)
        added = self.nodes.add((row.index, row.card) for row in rows)
        self._spare = {node.address for node, row in zip(added, rows, strict=True) if row.is_spare}

    async def join_nodes(self, accounts: Sequence[NodeAccount] | None = None) -> dict[str, NodeStatus]:
        """Bring the accounts up (all by default): joined or resumed, or kept paused if their card is or
        they are spare. Retiring accounts are left alone (``retire``)."""
        chosen = [a for a in (self.nodes.accounts if accounts is None else accounts)
                  if not self.funds.is_retiring(a.address)]  # fmt: skip
        paused = self.store.paused_cards()
        return await bring_up(
            self.ops, self.keys.operator, chosen, paused, kept_paused=self._spare,
            failpoints=self.settings.failpoints, gas_reserve_wei=await self.funds.gas.reserve_wei(),
        )  # fmt: skip

    async def follow_capacity(self, places: Mapping[CardModel, int]) -> CapacityPlan:
        """Make each card model's serving accounts as many as its ``places`` (``capacity.py``): spare ones
        paused on chain, spare ones resumed, new ones derived, funded and joined. What changed is stored
        before the chain hears of it. Returns what was done (empty when nothing needed to change)."""
        async with self._capacity_lock:
            await self.rounds.refresh()
            busy_addresses = self.rounds.busy_nodes()
            leaving = {n.index for n in self.nodes.accounts if self.funds.is_retiring(n.address)}
            plan = plan_capacity(
                self.store.node_accounts.rows(), places, leaving=leaving,
                busy={n.index for n in self.nodes.accounts if n.address in busy_addresses},
            )  # fmt: skip
            if plan.is_empty:
                await self._settle_capacity()
                return plan
            registry, by_index = self.store.node_accounts, {n.index: n for n in self.nodes.accounts}
            registry.set_spare(plan.spare, True)
            registry.set_spare(plan.serve, False)
            new = list(enumerate(plan.derive, start=self.nodes.next_index))
            registry.add(new)
            added = self.nodes.add(new)
            spared = [by_index[i] for i in plan.spare]
            served = [by_index[i] for i in plan.serve] + added
            self._spare = (self._spare | {n.address for n in spared}) - {n.address for n in served}
            self._unsettled |= {n.address for n in spared + served}
            if added:
                self.ledger.note_accounts({n.address: n.card for n in added}, self.keys.operator.address)
                if self.fleet is not None:  # the drivers that own them hold their keys before the joins
                    await self.fleet.tell_accounts()
            log.info("[coordinator] capacity: %d account(s) paused, %d resumed, %d new, %d card model(s) "
                     "superseded", len(spared), len(plan.serve), len(added),
                     len(plan.superseded))  # fmt: skip
            await self._settle_capacity()
            for card in plan.superseded:
                await self._retire_superseded(card)
            return plan

    async def _settle_capacity(self) -> None:
        """Bring the chain to what the registry says of the accounts changed: spare ones paused (idle ones
        now, busy ones when their task ends), the others joined or resumed. What failed (the chain did not
        answer, the operator could not fund) stays to settle and is tried at the next call."""
        if not self._unsettled:
            return
        accounts = [self.nodes[address] for address in sorted(self._unsettled)]
        await pause_all(self.ops, [n for n in accounts if n.address in self._spare])
        serving = [n for n in accounts if n.address not in self._spare]
        await self.funds.follow([n.address for n in serving])  # new accounts' balances, once
        statuses = await self.join_nodes(serving) if serving else {}
        # A pause asked while the account was busy cannot be taken back: it becomes Paused when its task
        # ends, and is resumed at a later look (a machine lost and back within one task).
        paused_cards = self.store.paused_cards()
        waiting = {address for address, status in statuses.items() if status is NodeStatus.PENDING_PAUSE
                   and self.nodes[address].card.key not in paused_cards}  # fmt: skip
        self._unsettled -= {n.address for n in accounts} - waiting

    async def driver_pids(self) -> list[int]:
        """The round drivers' process ids (none when the rounds run on this loop)."""
        return [] if self.fleet is None else await self.fleet.current_pids()

    @property
    def is_capacity_settled(self) -> bool:
        """False while accounts whose capacity changed wait for the chain (``follow_capacity`` again)."""
        return not self._unsettled

    async def _retire_superseded(self, card: CardModel) -> None:
        """An upgrade moved the card model's GPUs to another runtime tag: its accounts quit (their stakes
        come back), and with a payout address they are retired (paused, drained, quit, swept)."""
        accounts = [n for n in self.nodes.of_card(card) if not self.funds.is_retiring(n.address)]
        if self.funds.settings.payout_address is not None:
            self.funds.retire(accounts)
            log.warning("[coordinator] card model %s superseded: retiring %d account(s)", card.short_id,
                        len(accounts))  # fmt: skip
            return
        await quit_all(self.ops, accounts)  # a busy one quits when its task ends
        log.warning("[coordinator] card model %s superseded: its accounts quit; their stakes are in the "
                    "accounts until `python -m cluster payout`", card.short_id)  # fmt: skip

    @property
    def spare_accounts(self) -> set[str]:
        """Accounts paused because the farm has fewer places of their card model than accounts."""
        return set(self._spare)

    async def resume_card(self, key_text: str) -> dict[str, NodeStatus]:
        """Lift the guard's pause of a card model (its key or a prefix) and resume its nodes."""
        card = self.nodes.card_named(key_text)
        if self.store.resume_card(card.key):
            log.warning("[coordinator] pause lifted card=%s", card.describe())
        return await self.join_nodes(self.nodes.of_card(card))

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the chain and drive rounds until ``stop`` is set."""
        is_first_poll = True
        while not stop.is_set():
            try:
                await self.poll_once()
                self._poll_failure = None
            except Exception as exc:
                self._poll_failed(exc)
            if is_first_poll:  # what the last process left, once the events since have ended what they end
                self.rounds.resume_unfinished()
                is_first_poll = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.poll_interval_s)

    def _poll_failed(self, exc: Exception) -> None:
        """The chain is followed again at the next poll whatever failed: the moment's failures are a warning;
        anything else (a bug, an event that does not decode) is logged with its traceback once and shown as
        an alert until a poll works again."""
        self._poll_failure = log_retried_failure(log, "[coordinator] poll", exc, self._poll_failure)

    async def poll_once(self) -> None:
        self.clock.observe_block(await self.ops.latest_block_time_s())

        async def apply(events: list[ChainEvent]) -> None:
            await self.rounds.apply(events)  # the rounds' rows, here or at their drivers
            self.funds.observe(events)  # the fees paid to the farm's nodes
            self.ledger.note_block_times(events)  # the receipts' days, without a block read each

        await self.reader.poll(apply)
        await self.rounds.after_poll()
        await self.funds.tick()  # top-ups, the sweep schedule, retirements
        self.ledger.kick()  # in the background: accounting never holds back a round

    async def stop(
        self, *, drain: bool = True, quit: bool = False, timeout_s: float = 60.0, close: bool = True
    ) -> None:
        """Graceful stop: pause the nodes, let running tasks finish, optionally quit for the stakes; then
        ``close`` (unless the caller reads the final status first)."""
        await pause_all(self.ops, self.nodes.accounts)
        if drain:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                await self.rounds.refresh()
                if not self.rounds.summary().counts.num_unfinished:
                    break
                await self.poll_once()
                await asyncio.sleep(self.settings.poll_interval_s)
        if quit:
            await quit_all(self.ops, self.nodes.accounts)
        if close:
            await self.close()

    async def close(self) -> None:
        if self._started:
            await self.rounds.close()
            await self.funds.close()
            await self.sender.aclose()
            await self._http.close()
            await self.ledger.aclose()
            await self.w3.provider.disconnect()
            self.sender.journal.close()
            self.store.close()
            self.cursors.close()
            self._started = False

    # -- at a glance ----------------------------------------------------------------------------------------

    def status(self) -> CoordinatorStatus:
        paused = self.store.paused_cards()
        alerts = list(paused.values())
        rounds = self.rounds.summary()
        if rounds.num_waiting_for_disk:
            alerts.append(
                f"the state disk is full ({self.settings.state_dir}): {rounds.num_waiting_for_disk} round(s) "
                "wait to write their results; free space and they go on by themselves"
            )
        if self._poll_failure is not None:
            alerts.append(f"following the chain fails: {self._poll_failure}")
        funds = self.funds.status(rounds.num_waiting_for_gas)
        alerts += self.funds.alerts(funds)
        if self.fleet is not None:
            alerts += self.fleet.alerts()
        if self.ledger.failure is not None:
            alerts.append(f"the ledger is not kept up: {self.ledger.failure}")
        return CoordinatorStatus(
            nodes=self.nodes.addresses,
            tasks=rounds.counts,
            earned_wei=sum(rounds.earnings_by_node.values()),
            num_running_rounds=rounds.num_running,
            num_rounds_waiting_for_disk=rounds.num_waiting_for_disk,
            paused_cards=[key.hex() for key in paused],
            alerts=alerts,
            funds=funds,
            ledger=self.ledger.totals(),
        )
