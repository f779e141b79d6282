"""The ledger on disk: ``ledger.db`` in the coordinator's state directory (SQLite, durable on return).

``entries`` keeps every entry under its source (its primary key), so an event or a receipt met again, a
page replayed after a crash, adds nothing. Each entry that is new adds its amount to its day's row
(``daily``: account, card, day, kind) and to its card's totals (``totals``) in the same transaction: the
report and the status read those sums instead of every entry. The journal's receipts are read from a
watermark (``progress``) stored in that transaction too. Amounts are decimal text: a stake (400 CNX) is
past SQLite's 64-bit integers.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

from cluster.durable_sqlite import open_durable
from cluster.ledger.entries import Entry
from cluster.ledger.model import OTHER_CARD, LedgerAmounts, LedgerKind, LedgerReport, LedgerRow, LedgerTotals

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    source TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    card TEXT NOT NULL,
    day TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount_wei TEXT NOT NULL,
    block_number INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS daily (
    account TEXT NOT NULL,
    card TEXT NOT NULL,
    day TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount_wei TEXT NOT NULL,
    num_entries INTEGER NOT NULL,
    PRIMARY KEY (day, card, account, kind)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS totals (
    card TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount_wei TEXT NOT NULL,
    PRIMARY KEY (card, kind)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS accounts (
    account TEXT PRIMARY KEY,
    card TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cards (
    short_id TEXT PRIMARY KEY,
    description TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS progress (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""
RECEIPTS_WATERMARK = "receipts_row"


class LedgerStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_durable(self.path, SCHEMA)
        self._cards = self.accounts()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- who is who ----------------------------------------------------------------------------------------

    def note_accounts(self, cards_by_account: Mapping[str, str], descriptions: Mapping[str, str]) -> None:
        """The farm's accounts with their card (short id, or OPERATOR_CARD) and each card's description.
        Kept across restarts, so an account the farm no longer runs still counts under its card."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO accounts (account, card) VALUES (?, ?)", cards_by_account.items()
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO cards (short_id, description) VALUES (?, ?)", descriptions.items()
            )
            self._db.execute("COMMIT")
        self._cards = self.accounts()

    def accounts(self) -> dict[str, str]:
        """Every account the ledger knows, with its card."""
        with self._lock:
            return dict(self._db.execute("SELECT account, card FROM accounts").fetchall())

    def is_known(self, account: str) -> bool:
        return account in self._cards

    def card_descriptions(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT short_id, description FROM cards").fetchall())

    # -- entries -------------------------------------------------------------------------------------------

    def add(self, entries: Iterable[Entry], *, receipts_row: int | None = None, journal: str = "") -> int:
        """Add the entries not added before, in one transaction (with the watermark of ``journal``'s
        receipts, if given: "" the coordinator's, "driver-<i>" a round driver's); how many were new."""
        entries = list(entries)
        if not entries and receipts_row is None:
            return 0  # nothing to write: no transaction (each is a write to the disk)
        num_new = 0
        daily: Counter[tuple[str, str, str, str]] = Counter()  # the new entries' sums, added once a key
        counts: Counter[tuple[str, str, str, str]] = Counter()
        totals: Counter[tuple[str, str]] = Counter()
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for entry in entries:
                    card = self._cards.get(entry.account, OTHER_CARD)
                    if self._insert(entry, card):
                        num_new += 1
                        day_key = (entry.day, card, entry.account, entry.kind.value)
                        daily[day_key] += entry.amount_wei
                        counts[day_key] += 1
                        totals[(card, entry.kind.value)] += entry.amount_wei
                self._add_sums(daily, counts, totals)
                if receipts_row is not None:
                    self._db.execute(
                        "INSERT OR REPLACE INTO progress (name, value) VALUES (?, ?)",
                        (_watermark(journal), receipts_row),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return num_new

    def _insert(self, entry: Entry, card: str) -> bool:
        """The entry, unless met before (a replayed page, a receipt read again); its sums come after."""
        return bool(self._db.execute(
            "INSERT OR IGNORE INTO entries (source, account, card, day, kind, amount_wei, block_number)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (entry.source, entry.account, card, entry.day, entry.kind.value, str(entry.amount_wei),
             entry.block_number),
        ).rowcount)  # fmt: skip

    def _add_sums(
        self,
        daily: Counter[tuple[str, str, str, str]],
        counts: Counter[tuple[str, str, str, str]],
        totals: Counter[tuple[str, str]],
    ) -> None:
        """Each key's sum read and written once a transaction, not once an entry (wei as text: sums may pass
        SQLite's 64-bit integers)."""
        for day_key, amount_wei in daily.items():
            row = self._db.execute(
                "SELECT amount_wei, num_entries FROM daily"
                " WHERE day = ? AND card = ? AND account = ? AND kind = ?",
                day_key,
            ).fetchone()
            amount, count = (int(row[0]), row[1]) if row else (0, 0)
            self._db.execute(
                "INSERT OR REPLACE INTO daily (day, card, account, kind, amount_wei, num_entries)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (*day_key, str(amount + amount_wei), count + counts[day_key]),
            )
        for (card, kind), amount_wei in totals.items():
            total = self._db.execute(
                "SELECT amount_wei FROM totals WHERE card = ? AND kind = ?", (card, kind)
            ).fetchone()
            self._db.execute(
                "INSERT OR REPLACE INTO totals (card, kind, amount_wei) VALUES (?, ?, ?)",
                (card, kind, str((int(total[0]) if total else 0) + amount_wei)),
            )

    def receipts_row(self, journal: str = "") -> int:
        """The last receipt (rowid) of ``journal`` counted: the next read starts after it."""
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM progress WHERE name = ?", (_watermark(journal),)
            ).fetchone()
        return int(row[0]) if row else 0

    def num_entries(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    # -- reading -------------------------------------------------------------------------------------------

    def totals(self) -> LedgerTotals:
        with self._lock:
            rows = self._db.execute("SELECT card, kind, amount_wei FROM totals").fetchall()
        by_card: dict[str, dict[LedgerKind, int]] = defaultdict(dict)
        for card, kind, amount in rows:
            by_card[card][LedgerKind(kind)] = int(amount)
        cards = {card: LedgerAmounts.of(amounts) for card, amounts in sorted(by_card.items())}
        return LedgerTotals(farm=sum(cards.values(), LedgerAmounts()), by_card=cards)

    def rows(self, *, by_account: bool = False, since_day: str = "") -> list[LedgerRow]:
        """The ledger by day and card model (and account, ``by_account``), from ``since_day`` on, sorted."""
        with self._lock:
            found = self._db.execute(
                "SELECT day, card, account, kind, amount_wei FROM daily WHERE day >= ?"
                " ORDER BY day, card, account",
                (since_day,),
            ).fetchall()
        amounts: dict[tuple[str, str, str | None], dict[LedgerKind, int]] = {}
        for day, card, account, kind, amount in found:
            by_kind = amounts.setdefault((day, card, account if by_account else None), {})
            by_kind[LedgerKind(kind)] = by_kind.get(LedgerKind(kind), 0) + int(amount)
        return [
            LedgerRow(day=day, card=card, account=account, amounts=LedgerAmounts.of(by_kind))
            for (day, card, account), by_kind in sorted(amounts.items(), key=lambda item: _sort_key(item[0]))
        ]

    def report(self, *, by_account: bool = False, since_day: str = "") -> LedgerReport:
        return LedgerReport(
            rows=self.rows(by_account=by_account, since_day=since_day),
            cards=self.card_descriptions(),
            totals=self.totals(),
        )


def _sort_key(key: tuple[str, str, str | None]) -> tuple[str, str, str]:
    day, card, account = key
    return day, card, account or ""


def _watermark(journal: str) -> str:
    return f"{RECEIPTS_WATERMARK}:{journal}" if journal else RECEIPTS_WATERMARK
