"""The relay: the network's data service for task arguments and result files, checked against the chain."""
