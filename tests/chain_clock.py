"""The session chain's clock, kept up with the host's."""

from __future__ import annotations

import time

from web3 import Web3


def catch_up_chain_time(web3: Web3) -> None:
    """Bring the chain's clock up to the host's when it lags. A reverted snapshot takes the chain's time
    back with it, so over a session the chain falls behind the host by the length of the tests before;
    the coordinator reckons deadlines by the later of the two clocks (``ChainClock``), so past a task's
    timeout of lag every task it is given looks late."""
    if web3.eth.get_block("latest")["timestamp"] < int(time.time()):
        web3.provider.make_request("evm_setNextBlockTimestamp", [int(time.time())])
        web3.provider.make_request("evm_mine", [])
