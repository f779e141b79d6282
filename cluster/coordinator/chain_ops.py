"""Every transaction the coordinator sends, each under an idempotency key naming the state change.

Keys are what make restarts safe (cluster.chain.sender): the same key never produces a second state
change, so any step may be replayed after a crash. A key names the change, not the attempt:
``commit:task=12:round=1`` is sent once whatever happens to the process in between.
"""

from __future__ import annotations

from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import AsyncWeb3

from cluster.chain.artifacts import load_artifact
from cluster.chain.contracts import NodeStatus
from cluster.chain.rpc import hex_int
from cluster.chain.sender import SentTx, TxRequest, TxSender
from cluster.protocol.cards import CardModel
from cluster.protocol.hashes import commitment


class ChainOps:
    def __init__(self, w3: AsyncWeb3, sender: TxSender, addresses: dict[str, str]):
        self.w3 = w3
        self.sender = sender
        self.task = w3.eth.contract(address=addresses["Task"], abi=load_artifact("Task").abi)
        self.node = w3.eth.contract(address=addresses["Node"], abi=load_artifact("Node").abi)
        self.qos = w3.eth.contract(address=addresses["QoS"], abi=load_artifact("QoS").abi)

    # -- reads --------------------------------------------------------------------------------------------

    async def node_status(self, address: str) -> NodeStatus:
        return NodeStatus(await self.node.functions.nodeStatus(address).call())

    async def qos_score(self, address: str) -> int:
        return await self.qos.functions.score(address).call()

    async def node_stake_wei(self) -> int:
        return await self.node.functions.nodeStake().call()

    async def task_deadline_chain_s(self, task_id: int) -> int | None:
        """The task's deadline (a block timestamp), or None once the task ended (its storage is deleted)."""
        info = await self.task.functions.getTask(task_id).call()
        names = [c["name"] for c in self.task.functions.getTask(task_id).abi["outputs"][0]["components"]]
        task = dict(zip(names, info, strict=True))
        return int(task["deadline"]) or None

    async def latest_block_time_s(self) -> int:
        block = await self.sender.rpc.call("eth_getBlockByNumber", ["latest", False])
        return hex_int(block["timestamp"])

    async def balance(self, address: str) -> int:
        return await self.w3.eth.get_balance(address)

    # -- node lifecycle -----------------------------------------------------------------------------------

    async def fund(self, operator: LocalAccount, node: str, amount_wei: int, generation: int) -> SentTx:
        return await self._send(
            operator, TxRequest(to=node, value_wei=amount_wei), f"fund:{node}:{generation}"
        )

    async def join(self, account: LocalAccount, card: CardModel, stake_wei: int, generation: int) -> SentTx:
        request = TxRequest.call(self.node, "join", *card.join_args, value_wei=stake_wei)
        return await self._send(account, request, f"join:{account.address}:{generation}")

    async def resume(self, account: LocalAccount, generation: int) -> SentTx:
        return await self._send(
            account, TxRequest.call(self.node, "resume"), f"resume:{account.address}:{generation}"
        )

    async def pause(self, account: LocalAccount, generation: int) -> SentTx:
        return await self._send(
            account, TxRequest.call(self.node, "pause"), f"pause:{account.address}:{generation}"
        )

    async def quit(self, account: LocalAccount, generation: int) -> SentTx:
        return await self._send(
            account, TxRequest.call(self.node, "quit"), f"quit:{account.address}:{generation}"
        )

    # -- task steps ---------------------------------------------------------------------------------------

    async def commit(
        self, account: LocalAccount, task_id: int, round_: int, result: bytes, nonce: bytes
    ) -> SentTx:
        value = commitment(result, nonce, account.address)
        request = TxRequest.call(self.task, "submitTaskResultCommitment", task_id, round_, value)
        return await self._send(account, request, f"commit:task={task_id}:round={round_}")

    async def report_error(self, account: LocalAccount, task_id: int, round_: int) -> SentTx:
        request = TxRequest.call(self.task, "reportTaskError", task_id, round_)
        return await self._send(account, request, f"error:task={task_id}:round={round_}")

    async def disclose(
        self, account: LocalAccount, task_id: int, round_: int, result: bytes, nonce: bytes
    ) -> SentTx:
        request = TxRequest.call(self.task, "discloseTaskResult", task_id, round_, result, nonce)
        return await self._send(account, request, f"disclose:task={task_id}:round={round_}")

    async def report_uploaded(self, account: LocalAccount, task_id: int, round_: int) -> SentTx:
        request = TxRequest.call(self.task, "reportResultsUploaded", task_id, round_)
        return await self._send(account, request, f"uploaded:task={task_id}:round={round_}")

    async def cancel(self, account: LocalAccount, task_id: int) -> SentTx:
        request = TxRequest.call(self.task, "cancelTask", task_id)
        return await self._send(account, request, f"cancel:task={task_id}:by={account.address}")

    async def _send(self, account: LocalAccount, request: TxRequest, key: str) -> SentTx:
        return await self.sender.send(account, request, key=key)


def abis() -> list[Any]:
    """Every contract ABI, so the sender decodes any custom error a call can revert with."""
    from cluster.chain.artifacts import all_abis

    return list(all_abis().values())
