"""``GET /v1/network``: read-only network statistics, from the tables the follower keeps.

The follower counts Node and Task events the way the NetworkStats contract counts its reports, so these
answers equal the contract's views as of the block the relay has read up to (``as_of_block``: the counts
include every event up to it, and may include a few newer ones), without a call to the chain per
request. They are counted from the relay's start block: a relay started at the deployment's block
(``--deployment`` does) counts the whole network.

These endpoints carry no signature: everything they show is public on chain.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Query

from cluster.chain.contracts import NodeStatus
from network.relay.errors import envelope
from network.relay.follower import CURSOR_NAME
from network.relay.schema import Counter
from network.relay.store import RelayStore

MAX_PAGE = 100


class NetworkStats:
    def __init__(self, store: RelayStore):
        self.store = store

    async def counters(self) -> dict[str, Any]:
        # The cursor first: a page applied between the two reads then makes the counts newer than
        # as_of_block, never older (read the other way round, a follower catching up after a takeover
        # answered old counts with a new as_of_block).
        as_of_block = await self._as_of_block()
        values = await self.store.counters_async()
        return {
            "nodes": {
                "total": values[Counter.NODES_TOTAL],
                "available": values[Counter.NODES_AVAILABLE],
                "busy": values[Counter.NODES_BUSY],
                "paused": values[Counter.NODES_PAUSED],
            },
            "tasks": {
                "total": values[Counter.TASKS_TOTAL],
                "queued": values[Counter.TASKS_QUEUED],
                "running": values[Counter.TASKS_RUNNING],
                "succeeded": values[Counter.TASKS_SUCCEEDED],
                "aborted": values[Counter.TASKS_ABORTED],
            },
            "as_of_block": as_of_block,
        }

    async def nodes(self, offset: int, limit: int) -> dict[str, Any]:
        as_of_block = await self._as_of_block()  # before the page, as in counters()
        total, page = await self.store.nodes_page_async(offset, limit)
        return {
            "total": total,
            "offset": offset,
            "nodes": [
                {
                    "address": row.address,
                    "gpu_name": row.gpu_name,
                    "gpu_vram_gb": row.gpu_vram_gb,
                    "runtime": row.runtime,
                    "status": NodeStatus(row.status).name.lower(),
                }
                for row in page
            ],
            "as_of_block": as_of_block,
        }

    async def _as_of_block(self) -> int | None:
        """The newest block the counts include (None before the follower read any)."""
        next_block = await self.store.get_cursor_async(CURSOR_NAME)
        return None if next_block is None else next_block - 1

    def install(self, app: FastAPI) -> None:
        @app.get("/v1/network")
        async def network_counters() -> dict[str, Any]:
            return envelope("ok", await self.counters())  # small reads, as the downloads

        @app.get("/v1/network/nodes")
        async def network_nodes(
            offset: Annotated[int, Query(ge=0, lt=2**63)] = 0,
            limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        ) -> dict[str, Any]:
            return envelope("ok", await self.nodes(offset, limit))
