"""The relay's settings: where the chain is, where data lives, and the limits of a public service."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from cluster.protocol.task import MAX_TASK_ARGS_BYTES


class RelayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rpc_url: str
    task_address: str  # the Task contract: the relay follows its events
    # The key the relay signs its receipts of stored arguments with (hex; its address is the Task
    # contract's relaySigner), and the chain they are for. None: uploads are answered without a receipt.
    receipt_key: SecretStr | None = None
    chain_id: int | None = Field(default=None, ge=1)
    # the Node contract: its events (with Task's) feed GET /v1/network (None: those endpoints answer 404)
    node_address: str | None = None
    data_dir: Path = Path(".relay")
    database_url: str | None = None  # None: SQLite file in data_dir
    host: str = "127.0.0.1"
    port: int = Field(default=8008, ge=0, le=65535)

    start_block: int = Field(default=0, ge=0)
    confirmations: int = Field(default=0, ge=0)
    poll_interval_s: float = Field(default=1.0, gt=0)

    max_args_bytes: int = Field(default=MAX_TASK_ARGS_BYTES, ge=1)
    max_file_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    max_files: int = Field(default=16, ge=1)  # SD tasks have at most 10 images, GPT one file
    max_clock_skew_s: int = Field(default=60, ge=1)
    retention_s: float = Field(default=24 * 3600, gt=0)  # data kept this long after its task ended
    retention_interval_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _receipts_need_the_chain(self) -> RelayConfig:
        if self.receipt_key is not None and self.chain_id is None:
            raise ValueError("receipt_key needs chain_id: a receipt names the chain it is for")
        return self

    @property
    def max_args_request_bytes(self) -> int:
        """An argument upload: the arguments as a JSON string (escaping can double them), plus the fields."""
        return 2 * self.max_args_bytes + 64 * 1024

    @property
    def max_results_request_bytes(self) -> int:
        """A full result upload: every file at its limit, plus the multipart framing."""
        return self.max_files * self.max_file_bytes + 64 * 1024

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL; a plain ``postgresql://`` (or ``postgres://``) gets psycopg, the driver this
        project installs (SQLAlchemy's default for it, psycopg2, is not a dependency)."""
        if self.database_url is None:
            return f"sqlite:///{self.data_dir / 'relay.db'}"
        scheme, sep, rest = self.database_url.partition("://")
        if sep and scheme in ("postgresql", "postgres"):
            return f"postgresql+psycopg://{rest}"
        return self.database_url
