"""What the cluster overhead benchmark puts around a real coordinator so that its control plane is measured.

- ``InstantTextEngine``: a text engine behind the real ``TextEngine`` interface that answers at once: the
  real response model and result bytes, no model. Deterministic, so three nodes agree.
- ``SimulatedPool``: the pool's interface (``JobRunner``) running that engine in the coordinator's
  process: the stand-in for GPU workers where a thousand Ray actors do not fit this machine.
- ``join_directly``: nodes funded with ``anvil_setBalance`` and joined with transactions signed here and
  sent at once: a set-up that does not depend on the coordinator's own bring-up (for earlier versions).

Only interfaces that every version since the coordinator's reshape has: the benchmark measures an
earlier version of ``cluster`` with it (``HELIUM_BENCH_CODE``). The application under load is
``benchmarks/load_app.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from web3 import Web3

from cluster.chain.accounts import OperatorKeys
from cluster.chain.deploy import Deployment
from cluster.protocol.cards import CardModel
from cluster.protocol.gpt import GPTTaskArgs, GPTTaskResponse, ResponseChoice, ResponseMessage, Usage
from cluster.protocol.task import parse_task_args
from cluster.workers.engines.base import TextEngine, TextResult
from cluster.workers.messages import JobReply, JobRequest

try:  # versions before the one job shape: the request carried JSON, the pool returned a JobResult
    from cluster.coordinator.scheduling.runner import JobResult  # type: ignore[attr-defined]
except ImportError:
    JobResult = None

BENCH_CARD = CardModel("Benchmark Virtual Card", 80, "instant-benchmark")


class InstantTextEngine(TextEngine):
    name = "instant"

    def run(self, args: GPTTaskArgs) -> TextResult:
        text = f"instant answer to seed {args.seed}"
        choice = ResponseChoice(finish_reason="stop", message=ResponseMessage(content=text), index=0)
        return TextResult(
            GPTTaskResponse(
                model=args.model,
                choices=[choice],
                usage=Usage(
                    prompt_tokens=len(args.messages), completion_tokens=5, total_tokens=len(args.messages) + 5
                ),
            )
        )

    def runtime_tag(self) -> str:
        return BENCH_CARD.runtime


class SimulatedPool:
    """The worker pool's interface with the instant engine in-process: every job answers at once."""

    def __init__(self) -> None:
        self.engine = InstantTextEngine()
        self.num_jobs = 0

    async def run_job(self, card: CardModel, request: JobRequest, **_earlier_keywords: Any) -> JobReply:
        self.num_jobs += 1
        if JobResult is not None:  # an earlier version's request: parsed here
            args = parse_task_args(request.task_type, request.args_json)  # type: ignore[attr-defined]
        else:
            args = request.args
        assert isinstance(args, GPTTaskArgs)
        outcome = self.engine.run(args)
        if JobResult is not None:
            return JobResult(tuple(outcome.files), outcome.result, None, f"sim-{card.short_id}", 1)
        return JobReply(f"sim-{card.short_id}", tuple(outcome.files), outcome.result)


def join_directly(w3: Web3, deployment: Deployment, keys: OperatorKeys, cards: Sequence[CardModel]) -> None:
    """Fund node i with anvil_setBalance and join it with card ``cards[i]``, all at once."""
    node = deployment.bind(w3).contract("Node")
    stake = node.functions.nodeStake().call()
    fees = {"maxFeePerGas": 10 * w3.eth.gas_price + 10**9, "maxPriorityFeePerGas": 10**9}
    hashes = []
    for i, card in enumerate(cards):
        account = keys.node(i)
        w3.provider.make_request("anvil_setBalance", [account.address, hex(stake + 10**18)])
        tx = node.functions.join(*card.join_args).build_transaction(
            {
                "from": account.address,
                "value": stake,
                "nonce": 0,
                "gas": 600_000,
                "chainId": w3.eth.chain_id,
                **fees,
            }
        )
        hashes.append(w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction))
    for tx_hash in hashes:
        assert w3.eth.wait_for_transaction_receipt(tx_hash)["status"] == 1
