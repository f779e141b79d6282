"""The typed configuration tree. Hydra composes YAML; these models validate it once, at start-up.

A mistake in a rig file or an override fails here with the option's full name, not later in a worker.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VirtualGpus(_Section):
    card_name: str = Field(min_length=1)
    vram_gb: int = Field(ge=1)
    count: int = Field(ge=1)
    # The runtime tag of these GPUs' card model; None: the engine's (runtime_tag_of). Another tag stands for
    # machines on another software version (a rolling upgrade, simulated on one host).
    runtime_tag: str | None = None


class WorkerLayout(_Section):
    """How the GPUs of one card model on a Ray node are split into workers: ``[4, 4]`` is two workers of
    four GPUs each (a ``4x`` card model), ``[1, 1, 2]`` two of one GPU and one of two."""

    card_name: str = Field(min_length=1)  # the product name as NVML reports it (or a virtual card's name)
    gpus_per_worker: list[int] = Field(min_length=1)

    @model_validator(mode="after")
    def _positive(self) -> WorkerLayout:
        if any(k < 1 for k in self.gpus_per_worker):
            raise ValueError(
                f"gpus_per_worker of {self.card_name!r} must be >= 1 each: {self.gpus_per_worker}"
            )
        return self


# Options renamed in this release: a rig file that still uses the old name is told the new one.
RENAMED_RIG_OPTIONS = {
    "slots_per_gpu": "places_per_gpu",
    "slot_mode": "gpu_sharing",
    "virtual_slots": "virtual_gpus",
}


class RigConfig(_Section):
    name: str
    device: Literal["cpu", "cuda", "mps"]
    discover_gpus: bool
    # Concurrent task places per GPU; each place is one node account on chain (a node holds one task).
    places_per_gpu: int = Field(ge=1, le=64)
    # How the places of one GPU run: "replicas" are places_per_gpu worker actors sharing the GPU, each with
    # its own engine and 1/places_per_gpu of the VRAM budget; "batched" is one async worker per GPU whose
    # vLLM engine batches the concurrent GPT requests (engine.text=vllm).
    gpu_sharing: Literal["replicas", "batched"] = "replicas"
    # Per card model, GPUs per worker (models larger than one GPU); a card model not listed: one per GPU.
    worker_layouts: list[WorkerLayout] = []
    virtual_gpus: list[VirtualGpus] = []
    model_cache_dir: str
    vram_budget_fraction: float = Field(gt=0.0, le=1.0)
    prefetch_models: list[str] = []
    # Processes that drive the rounds (docs/coordinator.md, "Round drivers"): 0 runs them on the
    # coordinator's own loop; N on N round-driver actors on the coordinator's machine, each owning a share
    # of the node accounts; null follows the places (round_drivers_for).
    round_drivers: int | None = Field(default=None, ge=0, le=64)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        old = sorted(set(data) & set(RENAMED_RIG_OPTIONS)) if isinstance(data, dict) else []
        if old:
            renames = ", ".join(f"rig.{name} is now rig.{RENAMED_RIG_OPTIONS[name]}" for name in old)
            raise ValueError(f"renamed options in the rig: {renames}")
        return data

    @model_validator(mode="after")
    def _gpus_source(self) -> RigConfig:
        if not self.discover_gpus and not self.virtual_gpus:
            raise ValueError(
                "rig.discover_gpus is false, so rig.virtual_gpus must list at least one group of virtual GPUs"
            )
        names = [layout.card_name for layout in self.worker_layouts]
        if len(names) != len(set(names)):
            raise ValueError(f"rig.worker_layouts names a card model twice: {names}")
        return self


class ChainConfig(_Section):
    rpc_url: str | None
    chain_id: int = Field(ge=1)
    contracts: dict[str, str] | None
    deployment_file: str | None = None  # a deployment JSON (addresses and start block) instead of contracts
    confirmations: int = Field(ge=0)


class OperatorConfig(_Section):
    mnemonic_env: str
    keystore_path: str | None
    keystore_password_env: str
    # The farm's money (docs/operations.md, "The operator's money"): where earnings go, what each node
    # account keeps for its gas, when the operator account is low.
    payout_address: str | None = None  # earnings are swept here; null: no sweeps, `payout` refuses
    sweep_threshold_cnx: float = Field(default=1.0, ge=0)  # a scheduled sweep waits for this much
    sweep_every_s: float = Field(default=86_400.0, ge=0)  # the sweep schedule; 0: only on demand
    gas_reserve_cnx: float = Field(default=0.1, ge=0)  # each node account keeps this for its gas, or
    gas_reserve_rounds: int = Field(default=0, ge=0)  # this many rounds' gas at the gas price, if more
    operator_low_cnx: float | None = Field(default=None, ge=0)  # alert below; null: a top-up of each node

    @model_validator(mode="after")
    def _payout_address(self) -> OperatorConfig:
        address = self.payout_address
        if address is not None and not re.fullmatch(r"0x[0-9a-fA-F]{40}", address):
            raise ValueError(
                f"network.operator.payout_address={address!r} is not a 0x-prefixed 20-byte address"
            )
        return self


class NetworkConfig(_Section):
    name: str
    chain: ChainConfig
    relay_url: str | None
    operator: OperatorConfig
    node_stake_cnx: int = Field(ge=0)


class EngineConfig(_Section):
    text: Literal["transformers", "vllm"]
    image: Literal["diffusers"]
    deterministic: bool
    runtime_tag: str | None
    reference_model: str | None = None  # every worker of a card model runs it, and must agree, before joining


class ClusterConfig(_Section):
    rig: RigConfig
    network: NetworkConfig
    engine: EngineConfig
    state_dir: str
    quit_on_stop: bool = False  # on a graceful stop, quit the nodes too (stakes come back)
    guard_own_results: bool = True  # pause a card model whose own rounds disagree on one task
    metrics_port: int = Field(default=9400, ge=0, le=65535)
    # Ray resources the coordinator actor needs, e.g. {"helium-coordinator": 1} to keep it on a CPU pod
    # that declares that resource (off the head pod on KubeRay). Empty: anywhere.
    coordinator_resources: dict[str, float] = {}
    # How often the coordinator looks at Ray's nodes (machines joining or lost); a lost one is seen after
    # Ray's own health check (about 15 s by default) plus this.
    machines_poll_s: float = Field(default=2.0, gt=0)


PLACES_PER_ROUND_DRIVER = (
    1_000  # one driver process feeds about 100 rounds/s (benchmarks/cluster_overhead.md)
)


def round_drivers_for(places: int, setting: int | None) -> int:
    """The rig's setting, or by default none below 1,000 places (the coordinator's own loop keeps up) and
    one per 1,000 places from there (4 at the 4,000 places of a 1,000-GPU batched farm)."""
    if setting is not None:
        return setting
    return 0 if places < PLACES_PER_ROUND_DRIVER else -(-places // PLACES_PER_ROUND_DRIVER)


class ChainEndpoints(_Section):
    """Where the farm's chain and relay are: what the coordinator actor is started with."""

    rpc_url: str
    relay_url: str
    addresses: dict[str, str]  # contract name -> address (Node, Task, TaskQueue, QoS, NetworkStats)
    start_block: int = Field(default=0, ge=0)  # the deployment's block: events are read from here
    confirmations: int = Field(default=0, ge=0)  # act only on events (and receipts) this many blocks deep

    @classmethod
    def of(cls, network: NetworkConfig) -> ChainEndpoints:
        """From the network config; a clear ``ConfigError`` names what is missing."""
        chain = network.chain
        if chain.rpc_url is None or network.relay_url is None:
            raise ConfigError(
                "network.chain.rpc_url and network.relay_url must be set to serve a network "
                "(scripts/devnet.sh starts a local one and sets them)"
            )
        start_block = 0
        if chain.deployment_file is not None:
            from cluster.chain.deploy import Deployment  # web3: only where a deployment is read

            try:
                deployment = Deployment.load(chain.deployment_file)
            except (OSError, ValueError, KeyError) as exc:
                raise ConfigError(
                    f"network.chain.deployment_file={chain.deployment_file!r} cannot be read: {exc}"
                ) from None
            addresses, start_block = dict(deployment.addresses), deployment.block_number
        elif chain.contracts is not None:
            addresses = dict(chain.contracts)
        else:
            raise ConfigError(
                "set network.chain.deployment_file or network.chain.contracts (the five addresses)"
            )
        return cls(
            rpc_url=chain.rpc_url, relay_url=network.relay_url, addresses=addresses,
            start_block=start_block, confirmations=chain.confirmations,
        )  # fmt: skip


class ConfigError(ValueError):
    """A configuration that does not validate; the message names every offending option."""


def load_config(cfg: DictConfig | dict[str, Any]) -> ClusterConfig:
    try:
        data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    except OmegaConfBaseException as exc:  # e.g. ${oc.env:HELIUM_RPC_URL} with the variable unset
        raise ConfigError(f"invalid configuration: {exc}".splitlines()[0]) from None
    assert isinstance(data, dict)
    data = {k: v for k, v in data.items() if k != "hydra"}
    try:
        return ClusterConfig.model_validate(data)
    except ValidationError as exc:
        problems = "\n".join(
            f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise ConfigError(f"invalid configuration:\n{problems}") from None
