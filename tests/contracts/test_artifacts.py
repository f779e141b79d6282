"""The committed artifacts match contracts/src, fit EIP-170, and the Python mirrors match the contracts."""

from __future__ import annotations

import re
import shutil
import subprocess
from enum import IntEnum
from pathlib import Path

import pytest

from cluster.chain.artifacts import (
    CONTRACTS_DIR,
    EIP170_MAX_CODE_BYTES,
    NETWORK_CONTRACTS,
    load_artifact,
    source_hash,
)
from cluster.chain.contracts import Decision, NodeStatus, RoundState, TaskStatus, TaskType, Validation

ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / "cluster/chain/artifacts"
REBUILD_HINT = "artifacts are stale: run `npm run build` in contracts/ and commit cluster/chain/artifacts"


@pytest.mark.parametrize("name", NETWORK_CONTRACTS)
def test_artifact_was_built_from_the_current_sources(name: str):
    assert load_artifact(name).source_hash == source_hash(), REBUILD_HINT


def test_source_hash_changes_with_any_source_byte(tmp_path: Path):
    copy = tmp_path / "contracts"
    shutil.copytree(CONTRACTS_DIR / "src", copy / "src")
    for name in ("build.mjs", "package-lock.json"):
        shutil.copy(CONTRACTS_DIR / name, copy / name)
    assert source_hash(copy) == source_hash()
    node_sol = copy / "src/Node.sol"
    node_sol.write_text(node_sol.read_text() + " ")
    assert source_hash(copy) != source_hash()


@pytest.mark.parametrize("name", NETWORK_CONTRACTS)
def test_deployed_code_fits_the_eip170_limit(name: str):
    assert 0 < load_artifact(name).deployed_size_bytes <= EIP170_MAX_CODE_BYTES


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("node") is None or not (CONTRACTS_DIR / "node_modules/solc").is_dir(),
    reason="needs node and contracts/node_modules (scripts/setup.sh)",
)
def test_recompiling_reproduces_the_committed_artifacts(tmp_path: Path):
    subprocess.run(
        ["node", str(CONTRACTS_DIR / "build.mjs"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    for name in NETWORK_CONTRACTS:
        built = (tmp_path / f"{name}.json").read_text()
        assert built == (ARTIFACTS_DIR / f"{name}.json").read_text(), f"{name}: {REBUILD_HINT}"


def _solidity_enum(source: str, name: str) -> list[str]:
    body = re.search(rf"enum {name} \{{(.*?)\}}", source, re.S).group(1)
    return [m.group(1) for line in body.splitlines() if (m := re.match(r"\s*(\w+)", line))]


def _upper_snake(name: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).upper()


@pytest.mark.parametrize(
    ("source", "enum"),
    [("lib/Types.sol", NodeStatus), ("lib/Types.sol", TaskType), ("interfaces/ITask.sol", TaskStatus),
     ("interfaces/ITask.sol", Decision), ("interfaces/ITask.sol", RoundState),
     ("interfaces/ITask.sol", Validation)],
)  # fmt: skip
def test_python_enums_mirror_the_solidity_enums(source: str, enum: type[IntEnum]):
    names = _solidity_enum((CONTRACTS_DIR / "src" / source).read_text(), enum.__name__)
    assert [_upper_snake(n) for n in names] == [member.name for member in enum]
    assert [member.value for member in enum] == list(range(len(names)))
