"""One asyncio task per unfinished (task, round): asks the ``RoundDriver`` for its next step, sleeps until
woken (a chain event, the deadline moving with chain time) and retries what failed for the moment.

A failure is classified once (``cluster.failures.classify``): a transient one is retried with backoff (a
full disk also raises an alert until the round writes again; a node account short of gas waits for a
top-up), a final one, or the task's fault raised where no report was possible, is recorded on the round
with its code and ends its driving. The same runners serve the coordinator's own loop and each round
driver actor (``actor.py``): only who applies the chain's events differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from cluster.coordinator.round_state import NodeTask, Step
from cluster.coordinator.rounds import RoundDriver
from cluster.coordinator.store import RoundStore
from cluster.failures import Failure, FailureCode, classify, failure_code, is_disk_full, is_insufficient_funds

log = logging.getLogger(__name__)
RETRY_BACKOFF_S = (0.5, 10.0)  # a transient failure's first and longest wait before the step is retried
MAX_IDLE_S = 30.0  # a round waiting for the chain looks again at least this often, events or not


class GasWaits:
    """Rounds refused a step for want of gas: an alert until a top-up lets them go on, and the code kept on
    a round that ends so (never silently)."""

    def __init__(self, store: RoundStore):
        self.store = store
        self.waiting: set[tuple[int, int]] = set()

    def round_waits(self, task: NodeTask) -> None:
        self.waiting.add(task.key)
        if task.failure_code is None:
            self.store.patch(task.task_id, task.round, failure_code=FailureCode.INSUFFICIENT_FUNDS)

    def round_moved(self, task: NodeTask) -> None:
        if task.key in self.waiting:
            self.waiting.discard(task.key)
            if task.failure is None:  # it went on after all: no failure to count
                self.store.patch(task.task_id, task.round, failure_code=None)


class RoundRunners:
    def __init__(
        self, store: RoundStore, driver: RoundDriver, gas_waits: GasWaits, *, poll_interval_s: float
    ):
        self.store = store
        self.driver = driver
        self.gas_waits = gas_waits
        self.poll_interval_s = poll_interval_s
        self._wakeups: dict[tuple[int, int], asyncio.Event] = {}
        self._runners: dict[tuple[int, int], asyncio.Task[None]] = {}
        self.waiting_for_disk: set[tuple[int, int]] = set()  # rounds whose last step hit a full disk
        self._deadlines: dict[tuple[int, int], float] = {}  # waiting rounds' deadlines (chain time)

    @property
    def num_running(self) -> int:
        return sum(not runner.done() for runner in self._runners.values())

    def ensure(self, task: NodeTask) -> None:
        """Wake the round's runner, or start one if the round has a step to take."""
        key = (task.task_id, task.round)
        self._wakeups.setdefault(key, asyncio.Event()).set()
        if task.step is not Step.DONE and (key not in self._runners or self._runners[key].done()):
            self._runners[key] = asyncio.create_task(self._drive(key), name=f"task-{key[0]}-{key[1]}")

    def resume_unfinished(self) -> None:
        """What the last process left: once the events since have ended what they end."""
        for task in self.store.unfinished():
            self.ensure(task)

    def wake_due(self) -> None:
        """Deadlines pass with chain time: the waiting rounds whose deadline the latest block passed look
        (a cancel, or what may still be done late). The others sleep until an event of theirs: waking every
        round at every poll cost more than the rounds themselves at 4,000 places."""
        now_s = self.driver.clock.now_s()
        for key, deadline_s in self._deadlines.items():
            if deadline_s <= now_s:
                self._wakeups[key].set()

    async def close(self) -> None:
        for runner in self._runners.values():
            runner.cancel()
        await asyncio.gather(*self._runners.values(), return_exceptions=True)
        self._runners.clear()

    async def _drive(self, key: tuple[int, int]) -> None:
        wakeup = self._wakeups.setdefault(key, asyncio.Event())
        backoff_s = RETRY_BACKOFF_S[0]
        while (task := self.store.get(*key)) is not None and task.step is not Step.DONE:
            wakeup.clear()
            try:
                moved = await self.driver.advance(task)
                backoff_s = RETRY_BACKOFF_S[0]
                self.waiting_for_disk.discard(key)
                self.gas_waits.round_moved(task)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                moved = False
                if classify(exc) is Failure.TRANSIENT:
                    if is_disk_full(exc):  # the operator's to fix: the round keeps its place and waits
                        self.waiting_for_disk.add(key)
                    elif is_insufficient_funds(exc):  # ... as for a node account that cannot pay its gas
                        self.gas_waits.round_waits(task)
                    log.warning("[rounds] step failed, retrying task=%d round=%d step=%s error=%r",
                                *key, task.step, exc)  # fmt: skip
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(backoff_s * 2, RETRY_BACKOFF_S[1])
                elif not self._record_failure(task, exc):
                    return  # even the deadline's cancel failed for good: nothing is left to try
            if not moved:
                self._deadlines[key] = task.deadline_chain_s
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), timeout=self._idle_s(task))
                self._deadlines.pop(key, None)
        self._wakeups.pop(key, None)
        self.waiting_for_disk.discard(key)
        self.driver.round_ended(key)

    def _idle_s(self, task: NodeTask) -> float:
        """How long a round that did not move sleeps unless woken: one held by the card guard (its siblings
        still executing: no event of its own will come) or not yet run looks again within a second; one that
        waits for the chain sleeps until its deadline (an event or ``wake_due`` wakes it before)."""
        soon_s = max(self.poll_interval_s, 1.0)
        if task.failure is None and task.step in (Step.SELECTED, Step.EXECUTED, Step.ERROR_FOUND):
            return soon_s
        if task.failure is None and task.awaits_draw:  # the draw's block, or two nodes free for an audit
            return soon_s
        return min(MAX_IDLE_S, max(soon_s, self.driver.clock.seconds_left(task.deadline_chain_s)))

    def _record_failure(self, task: NodeTask, exc: Exception) -> bool:
        """Record a final failure (or the task's fault, raised where no report was possible) on its round,
        with its code; False when the round had failed already (the failure came from the deadline's
        cancel)."""
        log.error("[rounds] round failed task=%d round=%d step=%s", task.task_id, task.round, task.step,
                  exc_info=exc)  # fmt: skip
        if task.failure is not None:
            return False
        failure = f"{task.step.value}: {type(exc).__name__}: {exc}"
        self.store.patch(task.task_id, task.round, failure=failure, failure_code=failure_code(exc))
        return True
