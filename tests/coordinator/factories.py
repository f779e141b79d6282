"""Coordinator settings for tests: the session's chain and contracts, a relay, three slots of one card."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cluster.chain.deploy import Deployment
from cluster.chain.sender import SenderConfig
from cluster.config import ChainEndpoints
from cluster.coordinator.coordinator import CoordinatorSettings
from cluster.protocol.cards import CardModel

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
