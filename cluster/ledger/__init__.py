"""The farm's ledger: what each node account earned, paid in gas, lost to slashes, received in top-ups and
sent in payouts, per card model and per day (UTC), from the farm's own receipts and the chain's events."""
