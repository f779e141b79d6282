"""The card model (PROTOCOL.md, Nodes): the full GPU product name, the VRAM in GB and the runtime tag.

Only nodes of one card model share a GPT task, so every part that handles one (the chain's join, the
coordinator's node accounts, the worker pool's groups, the Ray resources that place workers) uses this one
type, never a tuple or raw key bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cluster.protocol.hashes import card_model_key

CARD_RESOURCE_PREFIX = "card:"


@dataclass(frozen=True, slots=True)
class CardModel:
    gpu_name: str  # the driver's full product name, e.g. "NVIDIA H100 80GB HBM3"
    vram_gb: int  # ceil(MiB / 1024)
    runtime: str  # the software that determines GPT numerics, e.g. "transformers-5.1.0-torch-2.13.0"
    # Computed once: the scheduler names workers by it on every decision (a keccak and an ABI encoding).
    _key: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", card_model_key(self.gpu_name, self.vram_gb, self.runtime))

    @property
    def key(self) -> bytes:
        """The on-chain card model key: keccak256(abi.encode(gpuName, gpuVramGB, runtime))."""
        return self._key

    @property
    def short_id(self) -> str:
        """Eight hex digits of the key: enough to tell a farm's card models apart in names and logs."""
        return self.key.hex()[:8]

    @property
    def join_args(self) -> tuple[str, int, str]:
        """The arguments of ``Node.join(gpuName, gpuVramGB, runtime)``."""
        return self.gpu_name, self.vram_gb, self.runtime

    @property
    def resource_name(self) -> str:
        """The custom Ray resource that places this card model's workers (Ray's own accelerator type
        merges SKUs such as H100 SXM and PCIe).

        NOTE: Ray resource names must be plain strings; the product name has spaces and the runtime tag
        dots, so the resource is named by the key instead (64 bits: no collision within one farm).
        """
        return CARD_RESOURCE_PREFIX + self.key.hex()[:16]

    def of_worker(self, num_gpus: int = 1, parallel_tag: str = "tp", num_replicas: int = 1) -> CardModel:
        """The card model a worker joins with when it owns ``num_gpus`` of these GPUs, or shares one with
        ``num_replicas - 1`` other workers.

        A ``k``-GPU worker is a card model of its own: ``"2x <name>"``, the VRAM summed, and the runtime
        tag naming the parallelism (``-tp2``), so only identical layouts share a GPT task (their numerics
        differ from one GPU's). A replica keeps the name and runtime (it runs each task alone, as one GPU
        does) and declares its share of the VRAM, so tasks it cannot hold are never selected onto it.
        """
        if num_gpus < 1 or num_replicas < 1 or (num_gpus > 1 and num_replicas > 1):
            raise ValueError(f"{num_gpus=} and {num_replicas=}: a worker either owns GPUs or shares one")
        if num_gpus == 1:
            return CardModel(self.gpu_name, max(1, self.vram_gb // num_replicas), self.runtime)
        return CardModel(
            f"{num_gpus}x {self.gpu_name}",
            self.vram_gb * num_gpus,
            f"{self.runtime}-{parallel_tag}{num_gpus}",
        )

    def describe(self) -> str:
        return f"{self.short_id} ({self.gpu_name}, {self.vram_gb} GB, {self.runtime})"

    def matches(self, key_text: str) -> bool:
        """True when ``key_text`` is this card's key or a prefix of it (see ``key_matches``)."""
        return key_matches(self.key, key_text)


def key_matches(key: bytes, key_text: str) -> bool:
    """True when ``key_text`` (hex, with or without 0x, at least 4 digits) is ``key`` or a prefix of it."""
    text = key_text.lower().removeprefix("0x")
    return len(text) >= 4 and key.hex().startswith(text)
