"""The local network in one command: chain, contracts, relay, the node cluster and an application."""
