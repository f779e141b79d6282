"""The bridge's configuration: the chain and relay it uses, its models, its API keys and its limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cluster.chain.contracts import Validation
from cluster.protocol.task import TaskType, TaskTypeName
from network.connection_limits import ConnectionLimits

# The validation a task is bought with (issue 28; docs/application.md, "Validation"): three nodes, or one
# audited 1 time in the chain's audit rate, its result served early or after the decision.
ValidationName = Literal["full", "sampled", "sampled_result_after_audit"]
VALIDATIONS: dict[str, Validation] = {
    "full": Validation.FULL,
    "sampled": Validation.SAMPLED,
    "sampled_result_after_audit": Validation.SAMPLED_RESULT_AFTER_AUDIT,
}


class ModelSpec(BaseModel):
    """One model the bridge offers: its public id, the model the nodes load, its task type and fee."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    path: str = Field(min_length=1)  # an HF hub id or a path the nodes can load
    task_type: TaskTypeName  # "gpt" or "sd" in the config file
    fee_wei: int | None = Field(default=None, gt=0)  # a fixed fee per task; None: the chain-priced default
    vram_limit: int = Field(default=0, ge=0)
    defaults: dict[str, Any] = Field(default_factory=dict)  # GPT generation_config / SD task_config defaults
    # GPT: the model's context in tokens (max_position_embeddings); a prompt that cannot fit is a 400
    context_tokens: int | None = Field(default=None, ge=1)
    validation: ValidationName | None = None  # None: the bridge's ``validation``


class ApiKey(BaseModel):
    """A bearer key and its token bucket: ``burst`` requests at once, refilled at ``rate_per_s``."""

    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=8)
    name: str = "default"  # also the key's account in the spending ledger: one name per key
    rate_per_s: float = Field(default=1.0, gt=0)
    burst: int = Field(default=10, ge=1)
    # spending limits in wei (None: none), checked with the spend in one step: fees of the key's tasks,
    # refunds deducted
    max_fee_wei: int | None = Field(default=None, gt=0)  # per task
    max_wei_per_day: int | None = Field(default=None, gt=0)  # UTC day
    max_wei_total: int | None = Field(default=None, gt=0)


class BridgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rpc_url: str
    relay_url: str
    deployment_file: Path
    data_dir: Path = Path(".bridge")
    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    models: list[ModelSpec] = Field(min_length=1)
    api_keys: list[ApiKey] = Field(min_length=1)
    task_timeout_s: float = Field(default=20 * 60.0, gt=0)  # past it the sweep cancels the task (refund)
    sweep_interval_s: float = Field(default=5.0, gt=0)
    gas_reserve_wei: int = Field(default=10**16, ge=0)  # kept for cancel/create gas: the 402 threshold
    # the most one task may cost, whoever asks (a native task's caller-chosen fee, a chat's max_tokens)
    max_fee_wei: int = Field(default=10 * 10**18, gt=0)
    # the validation of a task whose request and model name none; "full" is what the network always did
    validation: ValidationName = "full"
    poll_interval_s: float = Field(default=1.0, gt=0)
    # slow requests are closed and each client address holds a bounded number of connections
    connection_limits: ConnectionLimits = Field(default_factory=ConnectionLimits)

    @model_validator(mode="after")
    def _unique(self) -> BridgeConfig:
        ids = [m.id for m in self.models]
        if len(set(ids)) != len(ids):
            raise ValueError(f"model ids must be unique: {ids}")
        names = [k.name for k in self.api_keys]
        if len(set(names)) != len(names):
            raise ValueError(f"API key names must be unique (they name the spending accounts): {names}")
        return self

    def model(self, model_id: str) -> ModelSpec | None:
        return next((m for m in self.models if m.id == model_id), None)

    def first_model(self, task_type: TaskType) -> ModelSpec | None:
        return next((m for m in self.models if m.task_type == task_type), None)
