"""An application under load, in its own process: it keeps a number of GPT tasks in flight.

    python benchmarks/load_app.py --rpc-url URL --deployment FILE --relay-url URL --in-flight N --seconds S

Lean, so that its own cost does not hide the farm's: createTask signed here and sent raw (from four of
anvil's dev accounts), receipts one request per block, task ends from one filtered log query a poll.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, when run as a script

from eth_account import Account

from cluster.chain.abi_calls import CallEncoder
from cluster.chain.anvil import DEV_MNEMONIC
from cluster.chain.artifacts import load_artifact
from cluster.chain.deploy import Deployment
from cluster.chain.events import EventDecoder, LogPager, event_topic
from cluster.chain.receipts import ReceiptWatcher
from cluster.chain.rpc import RpcClient, connect, hex_int
from cluster.chain.task_events import TaskPending, task_events
from cluster.protocol.hashes import task_hash
from cluster.protocol.task import TaskType
from cluster.relay import RelayClient

Account.enable_unaudited_hdwallet_features()
TASK_FEE_WEI = 10**16
CREATE_TASK_GAS = 4_000_000  # a selection among 1,000 nodes of one card model costs about 2.4M


def task_args(i: int) -> str:
    return json.dumps({
        "model": "benchmark/instant", "messages": [{"role": "user", "content": f"task {i}"}], "seed": i,
        "generation_config": {"max_new_tokens": 6},
    })  # fmt: skip


class Application:
    """The application: creates tasks, uploads their arguments, forgets the tasks that ended."""

    def __init__(
        self,
        rpc_url: str,
        deployment: Deployment,
        relay_url: str,
        first_app: int,
        make_args: Callable[[int], str] | None = None,
    ):
        self.make_args = make_args or task_args
        self.created_at: dict[int, float] = {}  # task id -> when its createTask receipt came back
        self.w3 = connect(rpc_url)
        self.rpc = RpcClient(self.w3)
        self.receipts = ReceiptWatcher(self.rpc, poll_interval_s=0.1)
        self.deployment = deployment
        self.decoder = EventDecoder({"Task": (deployment.address("Task"), load_artifact("Task").abi)})
        self.pager = LogPager(self.rpc, self.decoder)
        self.encoder = CallEncoder(deployment.address("Task"), load_artifact("Task").abi, ["createTask"])
        path = "m/44'/60'/0'/0/{}"
        self.apps = [
            Account.from_mnemonic(DEV_MNEMONIC, account_path=path.format(first_app + i)) for i in range(4)
        ]
        self.relays = [RelayClient(relay_url, app, backoff_s=0.1) for app in self.apps]
        self.nonces: list[int] = []
        self.open_tasks: set[int] = set()
        self.num_created = 0

    async def start(self) -> None:
        counts = [self.rpc.call("eth_getTransactionCount", [app.address, "pending"]) for app in self.apps]
        self.nonces = [hex_int(n) for n in await asyncio.gather(*counts)]
        self.chain_id = hex_int(await self.rpc.call("eth_chainId", []))
        self.next_block = hex_int(await self.rpc.call("eth_blockNumber", []))

    async def create(self, i: int) -> None:
        app, args = i % len(self.apps), self.make_args(i)
        data = self.encoder.encode("createTask", (int(TaskType.GPT), task_hash(args), b"\0" * 32, 0, 6))
        nonce, self.nonces[app] = self.nonces[app], self.nonces[app] + 1
        # Selection's gas depends on which nodes are free when the call is mined: the limit covers the
        # dearest path rather than an estimate of today's.
        tx = {
            "to": self.deployment.address("Task"),
            "data": data,
            "value": TASK_FEE_WEI,
            "gas": CREATE_TASK_GAS,
            "nonce": nonce,
            "chainId": self.chain_id,
            "maxFeePerGas": 10**11,
            "maxPriorityFeePerGas": 10**9,
        }
        signed = self.apps[app].sign_transaction(tx)
        tx_hash = await self.rpc.call("eth_sendRawTransaction", ["0x" + bytes(signed.raw_transaction).hex()])
        receipt = await self.receipts.wait([tx_hash], timeout_s=120)
        assert receipt is not None and hex_int(receipt["status"]) == 1, f"createTask failed: {receipt}"
        events = task_events([e for raw in receipt["logs"] if (e := self.decoder.decode(raw)) is not None])
        (pending,) = [e for e in events if isinstance(e, TaskPending)]
        self.created_at[pending.task_id] = time.time()
        self.open_tasks.add(pending.task_id)
        self.num_created += 1
        await self.relays[app].upload_args(pending.task_id, args, wait_s=120)

    async def forget_ended(self) -> None:
        head = hex_int(await self.rpc.call("eth_blockNumber", []))
        if head < self.next_block:
            return
        topics = [
            [
                f"0x{event_topic(item).hex()}"
                for item in self.decoder.contracts["Task"][1]
                if item.get("type") == "event" and item["name"] in ("TaskResultUploaded", "TaskAborted")
            ]
        ]
        for event in await self.pager.all(self.next_block, head, topics=topics):
            self.open_tasks.discard(event.args["taskId"])
        self.next_block = head + 1

    async def close(self) -> None:
        for relay in self.relays:
            await relay.aclose()
        await self.w3.provider.disconnect()


async def keep_in_flight(
    rpc_url: str, deployment: Deployment, relay_url: str, in_flight: int, seconds: float, first_app: int
) -> int:
    """Keep ``in_flight`` GPT tasks alive for ``seconds``; returns how many tasks were created."""
    app = Application(rpc_url, deployment, relay_url, first_app)
    await app.start()
    creating: set[asyncio.Task[None]] = set()
    deadline, i = time.monotonic() + seconds, 0
    try:
        while time.monotonic() < deadline:
            await app.forget_ended()
            for _ in range(in_flight - len(app.open_tasks) - len(creating)):
                task = asyncio.create_task(app.create(i))
                creating.add(task)
                task.add_done_callback(creating.discard)
                i += 1
            await asyncio.sleep(0.2)
    finally:
        for task in creating:
            task.cancel()
        await asyncio.gather(*creating, return_exceptions=True)
        await app.close()
    return app.num_created


def main(argv: list[str] | None = None) -> None:
    # web3's process_receipt decodes every log of a receipt with one event's ABI and warns for the others
    warnings.filterwarnings("ignore", message="The log with transaction hash")
    parser = argparse.ArgumentParser(prog="load_app.py", description="an application under load")
    parser.add_argument("--rpc-url", required=True)
    parser.add_argument("--deployment", type=Path, required=True)
    parser.add_argument("--relay-url", required=True)
    parser.add_argument("--in-flight", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--first-app", type=int, default=20, help="the first of 4 dev accounts to pay from")
    options = parser.parse_args(argv)
    deployment = Deployment.load(options.deployment)
    created = asyncio.run(keep_in_flight(
        options.rpc_url, deployment, options.relay_url, options.in_flight, options.seconds, options.first_app
    ))  # fmt: skip
    print(json.dumps({"created": created}))


if __name__ == "__main__":
    main()
