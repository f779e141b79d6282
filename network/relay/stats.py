"""``GET /v1/network``: read-only statistics, read from the NetworkStats contract at request time.

These endpoints carry no signature: everything they show is public on chain. A chain that does not
answer is a 503, never a 500.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Query
from web3 import Web3
from web3.exceptions import Web3Exception

from cluster.chain.artifacts import load_artifact
from cluster.chain.contracts import NodeStatus
from network.relay.errors import RelayError, envelope

MAX_PAGE = 100


class NetworkStatsReader:
    def __init__(self, rpc_url: str, address: str, *, timeout_s: float = 10.0):
        w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout_s}))
        self.contract = w3.eth.contract(
            address=Web3.to_checksum_address(address), abi=load_artifact("NetworkStats").abi
        )

    def counters(self) -> dict[str, Any]:
        total, available, busy, paused = self._call("nodeCounters")
        tasks = self._call("taskCounters")
        names = ("total", "queued", "running", "succeeded", "aborted")
        return {
            "nodes": {"total": total, "available": available, "busy": busy, "paused": paused},
            "tasks": dict(zip(names, tasks, strict=True)),
        }

    def nodes(self, offset: int, limit: int) -> dict[str, Any]:
        page = self._call("getNodes", offset, limit)
        return {
            "total": self._call("numKnownNodes"),
            "offset": offset,
            "nodes": [
                {
                    "address": account,
                    "gpu_name": gpu_name,
                    "gpu_vram_gb": vram,
                    "runtime": runtime,
                    "status": NodeStatus(status).name.lower(),
                }
                for account, gpu_name, vram, runtime, status in page
            ],
        }

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return self.contract.functions[name](*args).call()
        except (Web3Exception, OSError, ValueError) as exc:
            raise RelayError(503, f"the chain did not answer ({type(exc).__name__}); try again") from None

    def install(self, app: FastAPI) -> None:
        @app.get("/v1/network")
        def network_counters() -> dict[str, Any]:
            return envelope("ok", self.counters())

        @app.get("/v1/network/nodes")
        def network_nodes(
            offset: Annotated[int, Query(ge=0, lt=2**63)] = 0,
            limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        ) -> dict[str, Any]:
            return envelope("ok", self.nodes(offset, limit))
