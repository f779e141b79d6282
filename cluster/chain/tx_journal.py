"""The sender's durable journal: idempotency key -> the signed transaction(s) that carry that state change.

A row is written (and fsynced) *before* its transaction is broadcast. After a crash the row tells the next
sender exactly which signed bytes may already be in a mempool or a block, so it can look them up and
rebroadcast the same bytes instead of signing a second, different transaction for the same change.

Status: ``signed`` (written; maybe broadcast, maybe mined: unknown until looked up), ``mined``,
``reverted`` (mined with status 0), ``failed`` (the node refused it before it entered a mempool, so the
key may be signed afresh). ``tx_hashes`` lists every signature of the row's nonce (fee bumps re-sign the
same nonce; at most one of them can ever be mined).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cluster.chain.checksums import checksum_address
from cluster.durable_sqlite import open_durable

TxStatus = Literal["signed", "mined", "reverted", "failed"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS tx_receipts (
    tx_hash TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    status TEXT NOT NULL,
    gas_used INTEGER NOT NULL,
    gas_price INTEGER NOT NULL,
    block_number INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tx_journal (
    key TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    nonce INTEGER NOT NULL,
    status TEXT NOT NULL,
    tx_hashes TEXT NOT NULL,
    raw_tx TEXT NOT NULL,
    tx_fields TEXT NOT NULL,
    block_number INTEGER,
    gas_used INTEGER,
    mined_hash TEXT,
    updated_at REAL NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class Receipt:
    tx_hash: str
    block_number: int
    gas_used: int
    gas_price_wei: int  # the effective gas price

    @classmethod
    def of(cls, receipt: dict[str, Any]) -> Receipt:
        return cls(
            receipt["transactionHash"],
            int(receipt["blockNumber"], 16),
            int(receipt["gasUsed"], 16),
            int(receipt.get("effectiveGasPrice") or "0x0", 16),
        )


@dataclass(frozen=True, slots=True)
class PaidReceipt:
    """A receipt the sender met, with its transaction's sender and the value it carried: what the ledger
    counts (cluster/ledger)."""

    row: int  # its rowid: a receipt written later (a reorg's new block too) has a higher one
    tx_hash: str
    key: str
    status: TxStatus
    account: str  # the sender, who paid the gas
    gas_used: int
    gas_price_wei: int  # the effective gas price
    block_number: int
    to: str | None
    value_wei: int


@dataclass(frozen=True, slots=True)
class JournalEntry:
    key: str
    account: str
    nonce: int
    status: TxStatus
    tx_hashes: list[str]
    raw_tx: str  # the latest signature, hex: what a rebroadcast sends
    tx_fields: dict[str, Any] = field(repr=False)  # to/data/value/gas/fees/chainId as signed
    block_number: int | None = None
    gas_used: int | None = None
    mined_hash: str | None = None

    @property
    def is_final(self) -> bool:
        return self.status in ("mined", "reverted")


class TxJournal:
    """SQLite journal, one file per operator. Safe to share between threads; writes are durable on return."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_durable(self.path, SCHEMA)  # a row is on disk before the broadcast that needs it

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get(self, key: str) -> JournalEntry | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM tx_journal WHERE key = ?", (key,)).fetchone()
        return _entry(row) if row else None

    def unfinished(self, account: str) -> list[JournalEntry]:
        """Rows of ``account`` still ``signed``, lowest nonce first: what a restarted sender must settle."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM tx_journal WHERE account = ? AND status = 'signed' ORDER BY nonce", (account,)
            ).fetchall()
        return [_entry(r) for r in rows]

    def record_signed(
        self, key: str, account: str, nonce: int, tx_hash: str, raw_tx: str, tx_fields: dict[str, Any]
    ) -> JournalEntry:
        """A new signature for ``key``: a fee bump (same nonce) appends its hash; a new nonce starts over."""
        old = self.get(key)
        hashes = (
            [*old.tx_hashes, tx_hash] if old and old.nonce == nonce and old.status == "signed" else [tx_hash]
        )
        entry = JournalEntry(key, account, nonce, "signed", hashes, raw_tx, tx_fields)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO tx_journal (key, account, nonce, status, tx_hashes, raw_tx,"
                " tx_fields, updated_at) VALUES (?, ?, ?, 'signed', ?, ?, ?, ?)",
                (key, account, nonce, json.dumps(hashes), raw_tx, json.dumps(tx_fields), time.time()),
            )
        return entry

    def record_outcome(
        self,
        key: str,
        status: TxStatus,
        *,
        mined_hash: str | None = None,
        block_number: int | None = None,
        gas_used: int | None = None,
    ) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE tx_journal SET status = ?, mined_hash = ?, block_number = ?, gas_used = ?,"
                " updated_at = ? WHERE key = ?",
                (status, mined_hash, block_number, gas_used, time.time(), key),
            )

    def record_receipt(self, key: str, status: TxStatus, receipt: Receipt) -> None:
        """The outcome of a mined signature of ``key`` and, kept apart, its receipt: what the account
        paid, failures included (an out-of-gas attempt is re-signed, and its row forgets it)."""
        mined_hash = receipt.tx_hash if status != "failed" else None
        block = receipt.block_number if status != "failed" else None
        gas = receipt.gas_used if status != "failed" else None
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute(
                    "UPDATE tx_journal SET status = ?, mined_hash = ?, block_number = ?, gas_used = ?,"
                    " updated_at = ? WHERE key = ?",
                    (status, mined_hash, block, gas, time.time(), key),
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO tx_receipts"
                    " (tx_hash, key, status, gas_used, gas_price, block_number) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        receipt.tx_hash,
                        key,
                        status,
                        receipt.gas_used,
                        receipt.gas_price_wei,
                        receipt.block_number,
                    ),
                )
                self._db.execute("COMMIT")  # one transaction: one write to the disk
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def receipts(self) -> list[tuple[str, str, int, int]]:
        """(key, status, gas used, gas price in wei) of every receipt the sender met, in block order."""
        with self._lock:
            return self._db.execute(
                "SELECT key, status, gas_used, gas_price FROM tx_receipts ORDER BY block_number"
            ).fetchall()

    def paid_receipts_after(self, row: int, limit: int = 1_000) -> list[PaidReceipt]:
        """The receipts written after rowid ``row``, oldest first, with their key's sender and value.

        Rowids only grow: a receipt replaced (the same transaction in a reorg's new block) is written
        with a rowid above every other, and nothing deletes a receipt."""
        with self._lock:
            rows = self._db.execute(
                "SELECT r.rowid, r.tx_hash, r.key, r.status, j.account, r.gas_used, r.gas_price,"
                " r.block_number, j.tx_fields FROM tx_receipts r JOIN tx_journal j ON j.key = r.key"
                " WHERE r.rowid > ? ORDER BY r.rowid LIMIT ?",
                (row, limit),
            ).fetchall()
        receipts = []
        for rowid, tx_hash, key, status, account, gas_used, gas_price, block, tx_fields in rows:
            fields = json.loads(tx_fields)
            to = fields.get("to")
            receipts.append(
                PaidReceipt(rowid, tx_hash, key, status, account, gas_used, gas_price, block,
                            checksum_address(to) if to else None, int(fields.get("value") or 0))
            )  # fmt: skip
        return receipts

    def with_prefix(self, key_prefix: str) -> list[JournalEntry]:
        """Rows whose key starts with ``key_prefix`` ("sweep:0xab..:"), read as a range of the key's index
        (the journal holds every transaction the farm ever sent: no scan)."""
        upper = key_prefix[:-1] + chr(ord(key_prefix[-1]) + 1)
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM tx_journal WHERE key >= ? AND key < ? ORDER BY key", (key_prefix, upper)
            ).fetchall()
        return [_entry(r) for r in rows]

    def last_receipt_row(self) -> int:
        """The rowid of the last receipt met: given to ``paid_receipts_after``, the receipts met since."""
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(rowid), 0) FROM tx_receipts").fetchone()[0])

    def most_gas_used(self, key_prefix: str) -> int:
        """The most gas a mined transaction whose key starts with ``key_prefix`` used (0: none yet)."""
        with self._lock:
            row = self._db.execute(
                "SELECT MAX(gas_used) FROM tx_receipts WHERE key LIKE ? AND status = 'mined'",
                (key_prefix.replace("%", "").replace("_", "") + "%",),
            ).fetchone()
        return int(row[0] or 0)


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    key, account, nonce, status, hashes, raw_tx, fields, block_number, gas_used, mined_hash, _ = row
    return JournalEntry(
        key,
        account,
        nonce,
        status,
        json.loads(hashes),
        raw_tx,
        json.loads(fields),
        block_number,
        gas_used,
        mined_hash,
    )
