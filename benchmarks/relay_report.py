"""benchmarks/results/relay_throughput.md from the figures benchmarks/relay_throughput.py measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Round 1's recorded figures (benchmarks/results/relay_throughput.md before this round): one relay in
# the client's process, SQLite, the pure-Python backend (coincurve was not installed), RelayClient.
ROUND_1 = "small downloads 72.2/s with 1 in flight, 73.6/s with 8; argument uploads 28.9/s and 82.2/s"


def write_report(results: dict[str, Any], path: Path) -> None:
    m = results["machine"]
    lines = [
        "# Relay throughput (loopback)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['date']}. Load average (1 min): "
        f"{m['load_1m_at_start']} at the start, {m['load_1m_at_end']} at the end; each row gives its own. "
        "The relays, PostgreSQL, anvil and the load generator share these cores.",
        "",
        f"Before this round: {ROUND_1}.",
        "",
        *small_get_table(results["small_get"]),
        *takeover_table(results["takeover"]),
        *client_table(results["client"]),
        *uploads_table(results.get("args_upload_8mib")),
    ]
    path.write_text("\n".join(lines) + "\n")


def small_get_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Small signed GET (argument download, 1 KiB)",
        "",
        "Requests signed beforehand by the load generator (one process, aiohttp); with two replicas the",
        "requests alternate between them. Relay CPU: the relays' user and system time per request.",
        "",
        "| signatures | database | in flight | replicas | requests/s | relay CPU ms/request "
        "| load before → after |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['database']} | {r['in_flight']} | {r['replicas']} | {r['per_s']:,.0f} | "
            f"{r['relay_cpu_ms_per_request']:.2f} | {r['load_1m_before']} → {r['load_1m_after']} |"
        )
    return [*lines, ""]


def takeover_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["## Follower takeover", "", "Not measured: no PostgreSQL server on this machine.", ""]
    lines = [
        "## Follower takeover (two replicas, PostgreSQL)",
        "",
        "The replica that follows the chain is SIGKILLed; seconds until the other one follows. PostgreSQL",
        "drops the advisory lock with the dead session; the standby tries at its next poll (1 s).",
        "",
        "| trial | takeover s |",
        "|---|---|",
    ]
    lines += [f"| {r['trial'] + 1} | {r['takeover_s']:.2f} |" for r in rows]
    return [*lines, ""]


def client_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Every operation through RelayClient (C backend, one relay)",
        "",
        "Each operation one request signed as it is sent, in this process. Arguments are capped at the",
        "relay's 8 MiB limit, so the 10 MB row uploads 8 MiB of arguments and 10 MB result files.",
        "",
        "| database | file | in flight | args up/s | args down/s | result up/s | result down/s | "
        "result MB/s up | result MB/s down |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mb = 10.0 if r["size"] == "10 MB" else 0.001024
        lines.append(
            f"| {r['database']} | {r['size']} | {r['in_flight']} | {r['args_upload']:.1f} | "
            f"{r['args_download']:.1f} | {r['result_upload']:.1f} | {r['result_download']:.1f} | "
            f"{r['result_upload'] * mb:.1f} | {r['result_download'] * mb:.1f} |"
        )
    return [*lines, ""]


def uploads_table(measured: dict[str, Any] | None) -> list[str]:
    if measured is None:
        return []
    m = measured["machine"]
    lines = [
        "## 8 MiB argument uploads, before and after (one relay, SQLite)",
        "",
        f"Measured {m['date']} (`relay_throughput.py --uploads`, benchmarks/relay_uploads.py). Uploads",
        "signed beforehand, one in flight, each code's relay in turn (median of its rounds). Relay CPU: its",
        "user and system time per upload, which the other load on the machine disturbs less than the rate.",
        "",
        "| relay code | uploads | uploads/s | relay CPU ms/upload | load (1 min) while measured |",
        "|---|---|---|---|---|",
    ]
    for r in measured["rows"]:
        lines.append(
            f"| {r['code']} | {r['uploads']} | {r['per_s']:.2f} | {r['relay_cpu_ms_per_upload']:,} | "
            f"{r['load_1m_min']} to {r['load_1m_max']} |"
        )
    return [*lines, ""]
