"""What the devnet prints: one live view, redrawn in place on a terminal, or a line per change elsewhere.

``Board`` holds the tasks' rows and the footer's counts; it knows nothing of the output. ``LiveView``
redraws the rows of the tasks in flight (and the last few finished) under the messages, which scroll
above it; ``LineView`` (output not a terminal: a pipe, a file, CI) prints one line per change of a
task's state and nothing else, each line starting with ``[devnet] HH:MM:SS``.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

NODES_PER_TASK = 3  # the protocol's: a task runs on three nodes (a sampled one on one, three if audited)
# The application's view of a task's events, in chain order; events not named keep the state.
STATE_OF_EVENT = {
    "TaskPending": "queued",
    "TaskStarted": "running",
    "TaskResultCommitmentSubmitted": "committing",
    "TaskErrorReported": "committing",
    "TaskResultCommitmentsReady": "disclosing",
    "TaskAuditStarted": "auditing",
    "TaskSuccess": "downloading",
    "TaskAborted": "aborted",
}
FINAL_STATES = ("validated", "aborted", "failed")
NUM_FINISHED_ROWS = 4  # finished tasks the live view keeps on screen


@dataclass
class TaskRow:
    number: int  # the devnet's own task number
    task_type: str  # GPT or SD
    started_s: float  # time.monotonic() when the application sent it
    chain_id: int | None = None
    state: str = "sending"
    nodes: list[str] = field(default_factory=list)
    ended_s: float | None = None
    outcome: str = ""  # the answer's start, "2 PNGs", or why it failed
    audit_rate: int | None = None  # a sampled task's N (TaskSampled); None: Full
    audited: bool | None = None  # its draw (TaskAuditDrawn), once read

    @property
    def nodes_wanted(self) -> int:
        """The nodes the task runs on: three, or one for a sampled task until its audit starts."""
        return 1 if self.audit_rate is not None and not self.audited else NODES_PER_TASK

    @property
    def sampling(self) -> str:
        """How the task is validated, for its lines: "" for Full."""
        if self.audit_rate is None:
            return ""
        drawn = {None: "", True: ", audited", False: ", not audited"}[self.audited]
        return f" [sampled 1/{self.audit_rate}{drawn}]"

    def seconds(self, now_s: float) -> float:
        return (self.ended_s or now_s) - self.started_s

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES


class Board:
    """The tasks and the footer's counts. ``card_of`` names each node's card model (address -> name)."""

    def __init__(self, log_dir: str = "") -> None:
        self.rows: dict[int, TaskRow] = {}
        self.card_of: dict[str, str] = {}
        self.counts: Counter[str] = Counter()  # validated, aborted, failed
        self.num_slashed = 0
        self.earned_cnx = 0.0
        self.started_s = time.monotonic()
        self.log_dir = log_dir

    def add(self, number: int, task_type: str) -> TaskRow:
        self.rows[number] = row = TaskRow(number, task_type, time.monotonic())
        return row

    def on_event(
        self,
        number: int,
        name: str,
        task_id: int,
        node: str | None,
        *,
        audit_rate: int | None = None,
        audited: bool | None = None,
    ) -> bool:
        """Apply one chain event; True when the row changed in a way worth a line. ``audit_rate``: a
        TaskSampled's; ``audited``: a TaskAuditDrawn's."""
        row = self.rows[number]
        row.chain_id = task_id
        if name == "TaskSampled":
            row.audit_rate = audit_rate
        if name == "TaskAuditDrawn":
            row.audited = audited
            return bool(audited)  # an audit is news; an unaudited draw shows on the task's last line
        if name == "TaskStarted" and node is not None and node not in row.nodes:
            row.nodes.append(node)
            if len(row.nodes) < row.nodes_wanted:
                return False  # one line once all three are chosen, not one per node
        state = STATE_OF_EVENT.get(name)
        if state is None or state == row.state or row.is_final:
            return name == "TaskStarted" and len(row.nodes) == row.nodes_wanted
        row.state = state
        return True

    def finish(self, number: int, state: str, outcome: str) -> TaskRow:
        row = self.rows[number]
        row.state, row.outcome, row.ended_s = state, outcome, time.monotonic()
        self.counts[state] += 1
        return row

    def cards(self, row: TaskRow) -> str:
        """The card models of the row's nodes: ``Card B x3`` or ``Card A, Card B x2``."""
        names = Counter(self.card_of.get(node, node[:10]) for node in row.nodes)
        return ", ".join(name if n == 1 else f"{name} x{n}" for name, n in sorted(names.items()))

    def tasks_per_min(self) -> float:
        minutes = max(time.monotonic() - self.started_s, 1.0) / 60
        return (self.counts["validated"] + self.counts["aborted"]) / minutes

    def footer(self) -> str:
        return (
            f"validated {self.counts['validated']} | aborted {self.counts['aborted']} | failed "
            f"{self.counts['failed']} | slashed {self.num_slashed} | earned {self.earned_cnx:.4f} CNX | "
            f"{self.tasks_per_min():.1f} tasks/min"
        )

    def describe(self, row: TaskRow) -> str:
        """A row as one line: what ``LineView`` prints on each change."""
        chain = f" (chain task {row.chain_id})" if row.chain_id is not None else ""
        head = f"task #{row.number} {row.task_type}{chain}{row.sampling}"
        if row.state == "running":
            nodes = "1 node" if len(row.nodes) == 1 else f"{len(row.nodes)} nodes"
            return f"{head} running on {nodes}: {self.cards(row)}"
        if row.is_final:
            cards = len(set(self.card_of.get(n, n) for n in row.nodes))
            where = f" on {cards} card model(s)" if row.nodes else ""
            return f"{head} {row.state} in {row.seconds(time.monotonic()):.1f} s{where}: {row.outcome}"
        return f"{head} {row.state}"


def _stamp() -> str:
    return f"[devnet] {time.strftime('%H:%M:%S')}"


class LineView:
    """One line per message and per change of a task's state."""

    def __init__(self, board: Board, out: TextIO = sys.stdout) -> None:
        self.board = board
        self.out = out

    def say(self, message: str) -> None:
        self.out.write(f"{_stamp()} {message}\n")
        self.out.flush()

    def changed(self, row: TaskRow) -> None:
        self.say(self.board.describe(row))

    def refresh(self) -> None:
        """Redraw what changes by itself (the seconds): nothing to do line by line."""

    def close(self) -> None:
        self.say("footer: " + self.board.footer())


class LiveView(LineView):
    """The rows of the tasks in flight redrawn in place under the messages (ANSI cursor movement)."""

    HEADER = f"  {'task':<6}{'type':<5}{'chain':<7}{'state':<13}{'nodes':<7}{'card model':<38}{'time':>7}"

    def __init__(self, board: Board, out: TextIO = sys.stdout) -> None:
        super().__init__(board, out)
        self._num_drawn = 0
        self._is_closed = False  # after the tasks: messages only (the stop's), no board

    def say(self, message: str) -> None:
        self._draw(above=[f"{_stamp()} {message}"])

    def changed(self, row: TaskRow) -> None:
        # a finished task leaves a line above the board: its answer stays on screen
        self._draw(above=[f"{_stamp()} {self.board.describe(row)}"] if row.is_final else [])

    def refresh(self) -> None:
        self._draw(above=[])

    def close(self) -> None:
        """The view erased, the footer left as the last line."""
        self._draw(above=[f"{_stamp()} footer: {self.board.footer()}"], board=False)
        self._is_closed = True

    def board_lines(self) -> list[str]:
        board, now = self.board, time.monotonic()
        rows = sorted(board.rows.values(), key=lambda row: row.number)
        finished = [row for row in rows if row.is_final][-NUM_FINISHED_ROWS:]
        shown = sorted(finished + [row for row in rows if not row.is_final], key=lambda row: row.number)
        lines = [self.HEADER]
        for row in shown:
            chain = "-" if row.chain_id is None else str(row.chain_id)
            lines.append(
                f"  #{row.number:<5}{row.task_type:<5}{chain:<7}{row.state:<13}{len(row.nodes):<7}"
                f"{board.cards(row)[:37]:<38}{row.seconds(now):>6.1f}s"
            )
        lines.append("  " + board.footer())
        if board.log_dir:
            lines.append(f"  logs: {board.log_dir}")
        return lines

    def _draw(self, above: list[str], board: bool = True) -> None:
        width = shutil.get_terminal_size().columns
        parts = []
        if self._num_drawn:  # back to the board's first line, and clear from there down
            parts.append(f"\x1b[{self._num_drawn}F\x1b[J")
        parts += [line + "\n" for line in above]
        lines = [line[: width - 1] for line in self.board_lines()] if board and not self._is_closed else []
        parts += [line + "\n" for line in lines]  # cut, never wrapped: the lines to go back up stay exact
        self._num_drawn = len(lines)
        self.out.write("".join(parts))
        self.out.flush()


def make_view(board: Board, out: TextIO = sys.stdout, *, plain: bool = False) -> LineView:
    """The live view on a terminal, lines elsewhere (or when asked)."""
    return LiveView(board, out) if out.isatty() and not plain else LineView(board, out)
