"""What the money's parts share: a journaled transaction named again, and today's fee per gas."""

from __future__ import annotations

from eth_account.signers.local import LocalAccount

from cluster.chain.sender import TxRequest
from cluster.chain.tx_journal import JournalEntry
from cluster.coordinator.chain_ops import ChainOps


def request_of(entry: JournalEntry) -> TxRequest:
    """The transaction a journal entry was signed for: what a send must name to settle the same key."""
    fields = entry.tx_fields
    return TxRequest(fields["to"], fields["data"], int(fields["value"]), gas=int(fields["gas"]))


async def settle_signed(ops: ChainOps, account: LocalAccount, prefixes: list[str]) -> None:
    """Transactions of ``account`` under these key prefixes that a killed process left signed: the same
    bytes sent again or their receipt found (the sender's journal), before anything new is decided."""
    for prefix in prefixes:
        for entry in ops.sender.journal.with_prefix(prefix):
            if entry.status == "signed" and entry.account == account.address:
                await ops.sender.send(account, request_of(entry), key=entry.key)


async def max_fee_per_gas_wei(ops: ChainOps) -> int:
    """What one gas may cost a transaction signed now (the sender's own quote, shared and cached)."""
    fees = await ops.sender.chain.fees()
    return int(fees.get("maxFeePerGas", fees.get("gasPrice", 0)))
