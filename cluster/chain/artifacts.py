"""The compiled contracts (``cluster/chain/artifacts/<Name>.json``, written by ``contracts/build.mjs``).

Artifacts ship inside the package, so a node host needs neither Node.js nor solc. ``source_hash`` computes
in Python the same digest that build.mjs stores in every artifact, so a test can tell that the Solidity
sources (or the build script) changed after the artifacts were last built.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

NETWORK_CONTRACTS = ("Node", "Task", "TaskQueue", "QoS", "NetworkStats")
REPO_ROOT = Path(__file__).resolve().parents[2]
CONTRACTS_DIR = REPO_ROOT / "contracts"
EIP170_MAX_CODE_BYTES = 24_576


@dataclass(frozen=True, slots=True)
class Artifact:
    contract_name: str
    abi: list[dict[str, Any]]
    bytecode: str  # creation code, 0x-hex
    deployed_bytecode: str  # runtime code, 0x-hex
    source_hash: str
    compiler: str

    @property
    def deployed_size_bytes(self) -> int:
        return (len(self.deployed_bytecode) - 2) // 2


@cache
def load_artifact(name: str) -> Artifact:
    """One network contract's artifact, from the installed package's data."""
    if name not in NETWORK_CONTRACTS:
        raise KeyError(f"unknown contract {name!r}: expected one of {', '.join(NETWORK_CONTRACTS)}")
    path = resources.files("cluster.chain").joinpath("artifacts", f"{name}.json")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"artifact {name}.json missing: run `npm run build` in contracts/ (needs contracts/node_modules)"
        ) from None
    return Artifact(
        contract_name=raw["contractName"],
        abi=raw["abi"],
        bytecode=raw["bytecode"],
        deployed_bytecode=raw["deployedBytecode"],
        source_hash=raw["sourceHash"],
        compiler=raw["compiler"],
    )


def all_abis() -> dict[str, list[dict[str, Any]]]:
    """Every network contract's ABI by name (e.g. for a RevertDecoder over all custom errors)."""
    return {name: load_artifact(name).abi for name in NETWORK_CONTRACTS}


def pinned_solc_version(contracts_dir: Path = CONTRACTS_DIR) -> str:
    """The solc version that contracts/package-lock.json pins (what build.mjs compiles with)."""
    lock = json.loads((contracts_dir / "package-lock.json").read_text(encoding="utf-8"))
    return lock["packages"]["node_modules/solc"]["version"]


def source_hash(contracts_dir: Path = CONTRACTS_DIR) -> str:
    """sha256 over the pinned solc version, src/**/*.sol and build.mjs, exactly as build.mjs computes it.

    Layout: ``"solc <version>\\n"``, then per file sorted by its path relative to contracts/ (POSIX
    separators, byte order): ``"<path>\\n<byte length>\\n"`` followed by the file's bytes.
    """
    files = [*sorted(contracts_dir.joinpath("src").rglob("*.sol")), contracts_dir / "build.mjs"]
    keys = sorted(path.relative_to(contracts_dir).as_posix() for path in files)
    digest = hashlib.sha256(f"solc {pinned_solc_version(contracts_dir)}\n".encode())
    for key in keys:
        content = (contracts_dir / key).read_bytes()
        digest.update(f"{key}\n{len(content)}\n".encode())
        digest.update(content)
    return digest.hexdigest()
