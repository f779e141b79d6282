"""The reference check: a card model's node accounts join the chain only when all of its workers compute
the same bytes for the same GPT task.

Three nodes of one card model must agree bit for bit on a GPT result. A faulty GPU, or a driver or library
that differs under the same runtime tag, would otherwise get the farm's nodes slashed one task at a time.
So before a card model joins, every worker runs the same reference tasks (greedy and seeded sampling) and
the result bytes are compared. Once it serves, the card guard (``cluster.coordinator.drivers.guard``) pauses a
card model whose own rounds of one task disagree.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cluster.coordinator.scheduling.pool import WorkerPool
from cluster.coordinator.scheduling.runner import JobDeadlineExceeded
from cluster.protocol.cards import CardModel
from cluster.protocol.gpt import GPTTaskArgs
from cluster.workers.messages import JobRequest

REFERENCE_PROMPT = "Say hello to the Helium network in one short sentence."
REFERENCE_SAMPLING_SEED = 4242
DEFAULT_TIMEOUT_S = 300.0


def reference_tasks(model: str, *, max_new_tokens: int = 16) -> list[GPTTaskArgs]:
    """The reference GPT arguments for ``model``: one greedy task and one sampled with a fixed seed."""
    messages = [{"role": "user", "content": REFERENCE_PROMPT}]
    greedy = {"do_sample": False, "max_new_tokens": max_new_tokens}
    sampled = {"do_sample": True, "temperature": 0.8, "top_p": 0.95, "max_new_tokens": max_new_tokens}
    return [
        GPTTaskArgs.model_validate(
            {"model": model, "messages": messages, "seed": seed, "generation_config": config}
        )
        for seed, config in ((0, greedy), (REFERENCE_SAMPLING_SEED, sampled))
    ]


@dataclass(frozen=True, slots=True)
class GroupCheck:
    ok: bool
    results_by_worker: dict[str, bytes]  # the reference tasks' result bytes, concatenated in task order
    message: str


def results_disagree(results: Mapping[str, bytes]) -> bool:
    """True when the workers of one card model returned different GPT result bytes."""
    return len(set(results.values())) > 1


def odd_ones_out(results: Mapping[str, bytes]) -> list[str]:
    """Workers whose bytes differ from a strict majority's; every worker when there is no majority."""
    if not results_disagree(results):
        return []
    majority, count = Counter(results.values()).most_common(1)[0]
    if 2 * count <= len(results):
        return sorted(results)
    return sorted(worker for worker, result in results.items() if result != majority)


async def _run_reference(
    pool: WorkerPool, worker_id: str, tasks: Sequence[GPTTaskArgs], deadline_unix_s: float
) -> bytes | str:
    """The worker's concatenated result bytes, or why it could not produce them."""
    results = []
    for args in tasks:
        try:
            reply = await pool.run_job_on(worker_id, JobRequest(args, deadline_unix_s))
        except JobDeadlineExceeded as exc:
            return str(exc)
        if reply.error is not None:
            return f"the reference task failed: {reply.error}"
        results.append(reply.result)
    return b"".join(results)


async def check_card_model(
    pool: WorkerPool,
    card: CardModel,
    tasks: Sequence[GPTTaskArgs],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> GroupCheck:
    """Run the reference GPT tasks on every worker of ``card`` and compare the result bytes."""
    worker_ids = pool.worker_ids(card)
    deadline_unix_s = time.time() + timeout_s
    outcomes = await asyncio.gather(*(_run_reference(pool, w, tasks, deadline_unix_s) for w in worker_ids))
    results = {w: o for w, o in zip(worker_ids, outcomes, strict=True) if isinstance(o, bytes)}
    failures = {w: o for w, o in zip(worker_ids, outcomes, strict=True) if isinstance(o, str)}
    where = f"card model {card.describe()}"
    if failures:
        named = "; ".join(f"{w}: {why}" for w, why in sorted(failures.items()))
        return GroupCheck(False, results, f"{where}: workers could not run the reference tasks: {named}")
    odd = odd_ones_out(results)
    if odd:
        shown = ", ".join(f"{w}={results[w].hex()[:16]}" for w in sorted(results))
        return GroupCheck(False, results, f"{where}: workers {odd} disagree with their group ({shown})")
    digest = next(iter(results.values()), b"").hex()[:16]
    return GroupCheck(
        True, results, f"{where}: {len(results)} workers agree on {len(tasks)} reference task(s) ({digest})"
    )
