"""Contract fixtures (the session chain and deployment are in tests/conftest.py).

``net`` checks the books after every test that used it: conservation of the native currency to the wei
and each contract's balance against its own accounting (see tests/contracts/net.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from web3 import Web3

from cluster.chain.deploy import Deployment
from tests.contracts.net import Net


@pytest.fixture
def net(w3: Web3, deployment: Deployment) -> Iterator[Net]:
    harness = Net(w3, deployment)
    yield harness
    harness.assert_books()
