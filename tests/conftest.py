"""Fixtures shared by every test that needs a chain: one anvil per session, the network deployed on it once,
and a chain snapshot per test so tests stay independent.

Defined here, once, so that the chain, contract, relay, coordinator and application tests share one anvil.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
from web3 import Web3

from cluster import envs
from cluster.chain.anvil import Anvil
from cluster.chain.anvil_states import stale_states, state_root
from cluster.chain.deploy import Deployment, deploy_network
from network.relay.local_postgres import LocalPostgres, PostgresUnavailable
from tests.chain_clock import catch_up_chain_time

# The tests that start a Ray cluster run on one xdist worker, one after another (`--dist loadgroup`,
# scripts/test.sh): two Ray clusters on two cores starve each other's actors. Each stops only its own
# processes, by PID (`ray stop` would stop every Ray on the machine). Every other test spreads over the
# workers.
RAY_TESTS = (
    "tests/cluster/test_ray_job.py",
    "tests/coordinator/scheduling/",
    "tests/devnet/test_devnet.py",
    "tests/farm/",
    "tests/workers/test_gpu_sharing.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(RAY_TESTS):
            item.add_marker(pytest.mark.xdist_group("ray"))


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    before = set(state_root().glob("anvil-state-*"))
    with Anvil(num_accounts=30) as node:
        yield node
    # Once the session's anvil stopped, no state folder made since is left behind, unless a running anvil
    # may still use it: each used to leave hundreds of MB (cluster/chain/anvil_states.py).
    left = [folder for folder in stale_states() if folder not in before]
    assert left == [], f"anvil state folders left behind: {left}"


@pytest.fixture(scope="session")
def deployment(anvil: Anvil) -> Deployment:
    """Deployed before any test's snapshot is taken, so every test starts from the fresh network."""
    web3 = anvil.web3()
    return deploy_network(web3, web3.eth.accounts[0])


@pytest.fixture
def w3(anvil: Anvil) -> Iterator[Web3]:
    """A Web3 on the session's anvil, its clock caught up with the host's; the chain is reverted to its
    state before the test afterwards."""
    web3 = anvil.web3()
    catch_up_chain_time(web3)
    snapshot = web3.provider.make_request("evm_snapshot", [])["result"]
    try:
        yield web3
    finally:
        web3.provider.make_request("evm_revert", [snapshot])


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """One PostgreSQL server per session (Debian's binaries). Without them the PostgreSQL cases skip,
    unless HELIUM_REQUIRE_POSTGRES=1 (set by scripts/test.sh where it installed them): then they fail."""
    try:
        server = LocalPostgres()
    except PostgresUnavailable as exc:
        if envs.REQUIRE_POSTGRES.get() == "1":
            pytest.fail(f"PostgreSQL is required here: {exc}")
        pytest.skip(str(exc))
    with server:
        yield server


_database_numbers = itertools.count()


@pytest.fixture
def postgres_database(postgres: LocalPostgres) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    return postgres.create_database(f"test_{os.getpid()}_{next(_database_numbers)}")


@pytest.fixture(scope="session")
def chat_model_dir(tmp_path_factory: pytest.TempPathFactory):
    """The devnet's chat model, trained once per session (about 15 s); the bridge and devnet tests use it."""
    from network.devnet.text_model import ensure_text_model

    return ensure_text_model(tmp_path_factory.mktemp("devnet-chat") / "tiny-chat")
