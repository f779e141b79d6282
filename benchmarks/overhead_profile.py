"""Where a round's CPU goes: the coordinator's process, profiled over the capacity benchmark's window.

    python benchmarks/cluster_overhead.py --phases capacity --slots 300 --seconds 60 --profile sampling
    python benchmarks/cluster_overhead.py --phases capacity --slots 300 --seconds 60 --profile cprofile
    python -m benchmarks.overhead_profile /tmp/helium-profile/sampling-300.txt --rounds N --cpu-ms M

The coordinator runs in the benchmark's own process, on its asyncio loop (``serve_and_restart``), so that
is the process profiled, only over the sustained window (after bring-up and warm-up; no restart follows).

- ``sampling``: py-spy attached to this process (100 samples a second, idle samples left out, every
  thread). Each sample is charged to one category, the one of its outermost frame that has one: the
  top-level function of each kind, so nothing is counted twice (a relay request's signature is the relay
  request's; the table below the categories says what each category's samples ended in). Categories are
  scaled to the window's measured CPU per round. The asyncio loop's own share is the samples in which
  nothing but the loop's frames run. py-spy runs beside the process: rounds/s and CPU are about as
  without it.
- ``cprofile``: cProfile on the loop's thread: calls per round, own and cumulative ms per round of each
  function. Its own cost inflates functions called often (a round's CPU is about twice the unprofiled
  one): use it for counts and ranks, the sampling profile for the split. cProfile counts each resumption
  of a coroutine as a call.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import subprocess
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

PROFILE_DIR = Path("/tmp/helium-profile")
SAMPLE_RATE = 100

# (category, path fragments, function names or None for any): checked on each frame from the outermost in.
SIGNING = "signing (eth_account, coincurve)"
RELAY = "relay requests (httpx)"
EVENTS = "event decoding"
SQLITE = "SQLite and files (stores, tx journal, ledger)"
RPC = "JSON-RPC (web3, aiohttp, json)"
ABI = "ABI encoding of calls (eth_abi)"
POOL = "pool interface (simulated workers)"
LOGGING = "logging"
CATEGORIES: list[tuple[str, tuple[str, ...], tuple[str, ...] | None]] = [
    (SIGNING, ("/eth_account/", "/coincurve/", "/eth_keys/", "/rlp/", "/eth_rlp/",
               "cluster/protocol/signing.py"), None),
    (RELAY, ("cluster/relay/client.py", "/httpx/", "/httpcore/", "/h11/", "/anyio/"), None),
    (EVENTS, ("cluster/chain/events.py",),
     ("EventDecoder.decode", "_decoded", "_decode_topic", "event_topic", "EventDecoder.__post_init__")),
    (EVENTS, ("cluster/chain/task_events.py",), None),
    (SQLITE, ("cluster/coordinator/store.py", "cluster/chain/tx_journal.py", "cluster/durable_sqlite.py",
              "/sqlite3/", "cluster/ledger/", "cluster/atomic_files.py"), None),
    (SQLITE, ("cluster/chain/events.py",), ("CursorStore.get", "CursorStore.set", "CursorStore.__init__")),
    (RPC, ("cluster/chain/rpc.py", "/web3/", "/aiohttp/", "/multidict/", "/yarl/", "/json/",
           "cluster/chain/receipts.py"), None),
    (ABI, ("cluster/chain/abi_calls.py", "/eth_abi/"), None),
    (POOL, ("benchmarks/farm_sim.py", "cluster/coordinator/scheduling/"), None),
    (LOGGING, ("/logging/",), None),
]  # fmt: skip
LOOP = "asyncio loop itself"
REST = "the rest"
# The loop's frames, and the benchmark's own below it (asyncio.run and what called it)
LOOP_FILES = ("/asyncio/", "/selectors.py", "/contextlib.py", "/threading.py", "<frozen", "/contextvars",
              "benchmarks/cluster_overhead.py", "benchmarks/overhead_phases.py")  # fmt: skip


def _frame_parts(frame: str) -> tuple[str, str]:
    """'Qual.name (path/file.py:12)' -> (function, path)."""
    name, _, where = frame.rpartition(" (")
    return (name, where.rsplit(":", 1)[0]) if name else (frame, "")


def category_of(function: str, path: str) -> str | None:
    for name, fragments, functions in CATEGORIES:
        if any(f in path for f in fragments) and (functions is None or function in functions):
            return name
    return None


def classify_stack(frames: list[str]) -> tuple[str, str, str]:
    """(category, innermost category, where in 'the rest') of one sample, frames outermost first."""
    parts = [_frame_parts(f) for f in frames if not f.startswith(("thread (", "process "))]
    cats = [category_of(fn, path) for fn, path in parts]
    found = [c for c in cats if c]
    if found:
        return found[0], found[-1], ""
    if all(any(x in path for x in LOOP_FILES) for _, path in parts):
        return LOOP, LOOP, ""
    own = [(fn, path) for fn, path in parts if not any(x in path for x in LOOP_FILES)]
    fn, path = own[-1]  # the innermost frame outside the loop: what the rest is doing
    return REST, REST, f"{fn} ({path.split('/site-packages/')[-1].replace(str(_repo()) + '/', '')})"


def root_of(frames: list[str]) -> str:
    """The outermost frame above the loop's: the task or callback a sample runs in."""
    for frame in frames:
        fn, path = _frame_parts(frame)
        if not frame.startswith(("thread (", "process ")) and not any(x in path for x in LOOP_FILES):
            return f"{fn} ({path.split('/site-packages/')[-1].replace(str(_repo()) + '/', '')})"
    return LOOP


def _repo() -> Path:
    return Path(__file__).resolve().parents[1]


def summarize_samples(raw: Path, rounds: int, cpu_ms: float) -> dict[str, Any]:
    """Categories of a py-spy raw file in ms per round, scaled so that they add up to ``cpu_ms`` a round."""
    outer: Counter[str] = Counter()
    nested: dict[str, Counter[str]] = defaultdict(Counter)
    rest: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    roots: Counter[str] = Counter()  # the first frame above the loop: which task (a round's, the chain's)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames, n = stack.split(";"), int(count)
        threads[frames[0] if frames[0].startswith("thread (") else "?"] += n
        category, innermost, where = classify_stack(frames)
        outer[category] += n
        nested[category][innermost] += n
        if where:
            rest[where] += n
        roots[root_of(frames)] += n
    total = sum(outer.values())
    scale = cpu_ms / max(total, 1)  # ms per round of one sample

    def ms(n: int) -> float:
        return round(n * scale, 2)

    return {
        "samples": total, "rounds": rounds, "cpu_ms_per_round": cpu_ms,
        "ms_per_round": {c: ms(n) for c, n in outer.most_common()},
        "inside": {c: {i: ms(n) for i, n in nested[c].most_common() if i != c} for c in outer},
        "rest_top": [[w, ms(n)] for w, n in rest.most_common(25)],
        "threads": {t: round(n / max(total, 1), 3) for t, n in threads.most_common()},
        "roots": [[r, ms(n)] for r, n in roots.most_common(15)],
    }  # fmt: skip


def summarize_cprofile(stats_path: Path, rounds: int, top: int = 20) -> dict[str, Any]:
    stats = pstats.Stats(str(stats_path))
    rows = []
    for (path, line, name), (_cc, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = path.split("/site-packages/")[-1].replace(str(_repo()) + "/", "")
        rows.append({
            "function": f"{name} ({where}:{line})" if line else name,
            "calls_per_round": round(nc / rounds, 2), "own_ms": round(1000 * tt / rounds, 3),
            "cum_ms": round(1000 * ct / rounds, 3),
        })  # fmt: skip
    total_ms = 1000 * stats.total_tt / rounds  # type: ignore[attr-defined]
    by_own = sorted(rows, key=lambda r: -r["own_ms"])[:top]
    by_cum = sorted(rows, key=lambda r: -r["cum_ms"])[:top]
    return {
        "rounds": rounds, "profiled_ms_per_round": round(total_ms, 2), "top_own": by_own, "top_cum": by_cum,
    }  # fmt: skip


class WindowProfiler:
    """Starts before the sustained window and stops after it; ``result`` then summarizes."""

    def __init__(self, mode: str, slots: int, seconds: float, out_dir: Path = PROFILE_DIR):
        self.mode, self.seconds = mode, seconds
        out_dir.mkdir(parents=True, exist_ok=True)
        suffix = "txt" if mode == "sampling" else "prof"
        self.path = out_dir / f"{mode}-{slots}.{suffix}"
        self.profile: cProfile.Profile | None = None
        self.spy: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import os

        if self.mode == "cprofile":
            self.profile = cProfile.Profile()
            self.profile.enable()
            return
        py_spy = shutil.which("py-spy")
        if py_spy is None:
            raise RuntimeError("--profile sampling needs py-spy (pip install py-spy)")
        self.spy = subprocess.Popen([
            py_spy, "record", "--pid", str(os.getpid()), "--rate", str(SAMPLE_RATE), "--duration",
            str(int(self.seconds)), "--format", "raw", "--threads", "--full-filenames", "--nonblocking",
            "--output", str(self.path),
        ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def stop(self) -> None:
        if self.profile is not None:
            self.profile.disable()
            self.profile.dump_stats(str(self.path))
        if self.spy is not None:
            self.spy.wait(timeout=60)

    def result(self, rounds: int, cpu_ms_per_round: float) -> dict[str, Any]:
        if self.mode == "cprofile":
            return {"file": str(self.path)} | summarize_cprofile(self.path, rounds)
        return {"file": str(self.path)} | summarize_samples(self.path, rounds, cpu_ms_per_round)


def markdown(summary: dict[str, Any]) -> str:
    """Tables for the results file from a summary (either mode)."""
    lines = []
    if "ms_per_round" in summary:
        lines += ["| category | ms per round | of which (innermost) |", "|---|---:|---|"]
        for c, v in summary["ms_per_round"].items():
            inside = ", ".join(f"{i} {m}" for i, m in summary["inside"].get(c, {}).items() if m >= 0.05)
            lines.append(f"| {c} | {v} | {inside} |")
        lines += ["", "| the rest: innermost frame outside the loop | ms per round |", "|---|---:|"]
        lines += [f"| `{w}` | {m} |" for w, m in summary["rest_top"]]
        lines += ["", "| task or callback (outermost frame above the loop) | ms per round |", "|---|---:|"]
        lines += [f"| `{w}` | {m} |" for w, m in summary.get("roots", [])]
    if "top_own" in summary:
        lines += [
            "| function | calls per round | own ms per round | cumulative ms per round |",
            "|---|---:|---:|---:|",
        ]
        lines += [f"| `{r['function']}` | {r['calls_per_round']} | {r['own_ms']} | {r['cum_ms']} |"
                  for r in summary["top_own"]]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    import json

    parser = argparse.ArgumentParser(description="summarize a saved profile of the capacity window")
    parser.add_argument("file", type=Path)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--cpu-ms", type=float, default=0.0, help="CPU ms per round (sampling profiles)")
    parser.add_argument("--cum", action="store_true", help="cProfile: the top entries by cumulative time")
    options = parser.parse_args()
    if options.file.suffix == ".prof":
        summary = summarize_cprofile(options.file, options.rounds)
        if options.cum:
            for r in summary["top_cum"]:
                print(f"{r['cum_ms']:9.3f} {r['own_ms']:8.3f} {r['calls_per_round']:8.2f}  {r['function']}")
            return
    else:
        summary = summarize_samples(options.file, options.rounds, options.cpu_ms)
    print(markdown(summary))
    print(json.dumps({k: v for k, v in summary.items() if k in ("threads", "profiled_ms_per_round")}))


if __name__ == "__main__":
    main()
