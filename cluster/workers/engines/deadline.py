"""The deadline of the job an engine runs, checked while it generates.

The pool stops waiting for a job at the round's deadline; without this the engine would run on (a 1 MiB
prompt kept three workers of a card model busy for 20 minutes, past its task's cancel, while the next
task for that card model waited). The worker sets the deadline around ``engine.run``; the transformers
engine checks it between tokens, the diffusers engine between steps, and the job ends with
``JobPastDeadline``, whose reply nobody waits for any more.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

from cluster.protocol.errors import ExecutionError

_deadline_unix_s: ContextVar[float | None] = ContextVar("job_deadline_unix_s", default=None)


class JobPastDeadline(ExecutionError):
    """The job's deadline passed while it ran: stopped, nothing to commit."""


@contextlib.contextmanager
def job_deadline(deadline_unix_s: float | None) -> Iterator[None]:
    token = _deadline_unix_s.set(deadline_unix_s)
    try:
        yield
    finally:
        _deadline_unix_s.reset(token)


def past_deadline() -> bool:
    deadline = _deadline_unix_s.get()
    return deadline is not None and time.time() > deadline


def check_deadline() -> None:
    if past_deadline():
        raise JobPastDeadline("the job passed its deadline while it ran: stopped")
