"""The coordinator tests' world: settings on the session's chain and contracts with a relay and three
slots of one card model, an application that creates GPT tasks, and a coordinator to run until done."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from eth_account import Account

from cluster.chain.accounts import OperatorKeys
from cluster.chain.anvil import DEV_MNEMONIC
from cluster.chain.contracts import TaskType, Validation
from cluster.chain.deploy import Deployment
from cluster.chain.sender import SenderConfig
from cluster.config import ChainEndpoints
from cluster.coordinator.coordinator import Coordinator, CoordinatorSettings
from cluster.coordinator.round_state import Outcome, Step
from cluster.coordinator.scheduling.runner import JobRunner
from cluster.protocol.cards import CardModel
from cluster.protocol.hashes import task_hash
from cluster.protocol.task import parse_task_args, task_cap
from cluster.relay import RelayClient

CARD = CardModel("Devnet Virtual Card A", 8, "transformers-test")
FAST = SenderConfig(poll_interval_s=0.05, receipt_timeout_s=20.0)


def endpoints(
    rpc_url: str, deployment: Deployment, relay_url: str, *, confirmations: int = 0
) -> ChainEndpoints:
    return ChainEndpoints(
        rpc_url=rpc_url, relay_url=relay_url, addresses=dict(deployment.addresses),
        start_block=deployment.block_number, confirmations=confirmations,
    )  # fmt: skip


def coordinator_settings(
    rpc_url: str,
    deployment: Deployment,
    relay_url: str,
    state_dir: Path,
    *,
    cards: Sequence[CardModel] = (CARD,) * 3,
    confirmations: int = 0,
    **kwargs: Any,
) -> CoordinatorSettings:
    return CoordinatorSettings(
        endpoints=endpoints(rpc_url, deployment, relay_url, confirmations=confirmations),
        state_dir=state_dir, cards=cards, poll_interval_s=0.05, sender=FAST, **kwargs,
    )  # fmt: skip


Account.enable_unaudited_hdwallet_features()
APP = Account.from_mnemonic(DEV_MNEMONIC, account_path="m/44'/60'/0'/0/12")
FUNDER = Account.from_mnemonic(DEV_MNEMONIC, account_path="m/44'/60'/0'/0/13")


def gpt_args(model: Path, seed: int = 1, **config) -> str:
    generation = {"max_new_tokens": 6, "do_sample": True, "temperature": 0.8, **config}
    messages = [{"role": "user", "content": f"hello {seed}"}]
    return json.dumps(
        {"model": str(model), "messages": messages, "seed": seed, "generation_config": generation}
    )


def settings(
    anvil: Any, deployment: Deployment, relay: Any, state_dir: Path, **kwargs: Any
) -> CoordinatorSettings:
    return coordinator_settings(anvil.rpc_url, deployment, relay.url, state_dir, **kwargs)


def create_task(w3, deployment, args: str, fee: int = 10**18, cap: int | None = None) -> int:
    task = deployment.bind(w3).contract("Task")
    if cap is None:  # what the arguments ask for, as an application declares it
        cap = task_cap(parse_task_args(TaskType.GPT, args))
    tx = task.functions.createTask(int(TaskType.GPT), task_hash(args), b"\0" * 32, 0, cap).transact(
        {"from": APP.address, "value": fee}
    )
    receipt = w3.eth.wait_for_transaction_receipt(tx)
    (pending,) = task.events.TaskPending().process_receipt(receipt)
    return pending["args"]["taskId"]


SAMPLED_FEE = 10**17  # a run pay of 0.082 CNX at N = 10: below the stake bound (400 CNX / 2N)


def create_sampled(w3, deployment, args: str, validation: Validation = Validation.SAMPLED) -> int:
    """A sampled GPT task (the deployment's audit rate set above 1): one node, audited as drawn."""
    task = deployment.bind(w3).contract("Task")
    cap = task_cap(parse_task_args(TaskType.GPT, args))
    tx = task.functions.createTaskWithValidation(
        int(TaskType.GPT), task_hash(args), b"\0" * 32, 0, cap, int(validation)
    ).transact({"from": APP.address, "value": SAMPLED_FEE})
    (pending,) = task.events.TaskPending().process_receipt(w3.eth.wait_for_transaction_receipt(tx))
    return pending["args"]["taskId"]


def mine(w3, blocks: int) -> None:
    w3.provider.make_request("anvil_mine", [hex(blocks)])


async def upload(relay, task_id: int, args: str) -> None:
    async with RelayClient(relay.url, APP, backoff_s=0.05) as client:
        await client.upload_args(task_id, args, wait_s=20)


def pass_the_deadline(w3: Any) -> None:
    """Move the chain's clock past any running task's deadline (15 minutes) and mine a block there."""
    w3.provider.make_request("evm_increaseTime", [16 * 60])
    w3.provider.make_request("evm_mine", [])


def rounds_end(coordinator: Coordinator, task_id: int, outcome: Outcome | None = None) -> Callable[[], bool]:
    """True once the farm's three rounds of the task are done (each with ``outcome``, when given)."""

    def ended() -> bool:
        rows = coordinator.store.of_task(task_id)
        return len(rows) == 3 and all(r.step is Step.DONE and outcome in (None, r.outcome) for r in rows)

    return ended


async def run_until(coordinator: Coordinator, done: Callable[[], bool], timeout_s: float = 90.0) -> None:
    stop = asyncio.Event()
    loop = asyncio.create_task(coordinator.run(stop))
    deadline = time.monotonic() + timeout_s
    try:
        while not done():
            assert time.monotonic() < deadline, f"not done in time: {coordinator.status()}"
            assert not loop.done(), loop.exception()
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await loop


@asynccontextmanager
async def running_coordinator(
    config: CoordinatorSettings, operator: OperatorKeys, runner: JobRunner, *, join: bool = True
) -> AsyncIterator[Coordinator]:
    """A started coordinator (its nodes joined unless ``join`` is False), closed afterwards."""
    coordinator = Coordinator(config, operator, runner)
    await coordinator.start()
    try:
        if join:
            await coordinator.join_nodes()
        yield coordinator
    finally:
        await coordinator.close()


class CoordinatorThread:
    """The coordinator on its own event loop in a thread, as the farm runs it beside the bridge."""

    def __init__(self, settings: CoordinatorSettings, keys: OperatorKeys, runner: JobRunner):
        self.coordinator = Coordinator(settings, keys, runner)
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await self.coordinator.start()
            try:
                await self.coordinator.join_nodes()
                self.ready.set()
                await self.coordinator.run(self._stop)
            finally:
                await self.coordinator.close()

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    def __enter__(self) -> CoordinatorThread:
        self._thread.start()
        assert self.ready.wait(120), "the coordinator did not start"
        if self.error:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=60)
