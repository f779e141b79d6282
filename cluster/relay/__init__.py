"""The cluster's side of the relay: a signed, retrying client."""

from cluster.relay.client import RelayClient, RelayNotReady, RelayRefused

__all__ = ["RelayClient", "RelayNotReady", "RelayRefused"]
