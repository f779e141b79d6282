"""The chain: contract artifacts and bindings, deployment, accounts, transactions, the event reader."""
