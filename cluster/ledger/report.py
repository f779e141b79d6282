"""The ledger for people (a table) and for spreadsheets (CSV with exact CNX decimals)."""

from __future__ import annotations

import csv
import io

from cluster.ledger.model import WEI_PER_CNX, LedgerAmounts, LedgerKind, LedgerReport, LedgerTotals, cnx_text

CSV_AMOUNTS = [kind for kind in LedgerKind]


def _cnx(wei: int) -> str:
    return f"{wei / WEI_PER_CNX:.6f}"


def render_totals(totals: LedgerTotals) -> str:
    """One line of the farm's totals: the status shows it."""
    farm = totals.farm
    return (
        f"ledger: earned {_cnx(farm.earned_wei)} CNX, gas {_cnx(farm.gas_wei)}, net of gas "
        f"{_cnx(farm.net_of_gas_wei)}; slashed {_cnx(farm.slashed_wei)}; top-ups {_cnx(farm.topup_wei)}, "
        f"payouts {_cnx(farm.payout_wei)} (python -m cluster ledger)"
    )


def render_table(report: LedgerReport) -> str:
    """A row per day and card model (and account), the totals per card model, the card models named."""
    has_accounts = any(row.account is not None for row in report.rows)
    head = f"{'day':<10} {'card':<8} " + (f"{'account':<42} " if has_accounts else "")
    head += " ".join(f"{name:>12}" for name in _AMOUNT_COLUMNS)
    lines = ["amounts in CNX; earned = fees and compensations; net = earned less gas", head]
    for row in report.rows:
        start = f"{row.day:<10} {row.card:<8} " + (f"{row.account or '':<42} " if has_accounts else "")
        lines.append(start + _amounts(row.amounts))
    lines += ["", "totals:"]
    pad = " " * (42 + 1 if has_accounts else 0)
    for card, amounts in report.totals.by_card.items():
        lines.append(f"{'':<10} {card:<8} {pad}{_amounts(amounts)}")
    lines.append(f"{'farm':<10} {'':<8} {pad}{_amounts(report.totals.farm)}")
    if report.cards:
        lines += ["", "card models:"] + [f"  {card}  {text}" for card, text in sorted(report.cards.items())]
    return "\n".join(lines)


_AMOUNT_COLUMNS = ("earned", "gas", "net", "slashed", "top-ups", "payouts", "staked", "unstaked")


def _amounts(a: LedgerAmounts) -> str:
    values = (a.earned_wei, a.gas_wei, a.net_of_gas_wei, a.slashed_wei, a.topup_wei, a.payout_wei,
              a.staked_wei, a.unstaked_wei)  # fmt: skip
    return " ".join(f"{_cnx(v):>12}" for v in values)


def render_csv(report: LedgerReport) -> str:
    """A row per day, card model and account (or card model alone), every kind in exact CNX."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["day", "card", "gpu", "account", *(f"{kind.value}_cnx" for kind in CSV_AMOUNTS),
                     "net_of_gas_cnx"])  # fmt: skip
    for row in report.rows:
        amounts = [cnx_text(row.amounts[kind]) for kind in CSV_AMOUNTS]
        gpu = report.cards.get(row.card, "")
        net = cnx_text(row.amounts.net_of_gas_wei)
        writer.writerow([row.day, row.card, gpu, row.account or "", *amounts, net])
    return out.getvalue()
