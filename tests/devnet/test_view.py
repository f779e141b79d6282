"""The devnet's view: a line per change off a terminal, the rows redrawn in place on one."""

from __future__ import annotations

import io
import re

from network.devnet.view import Board, LineView, LiveView, make_view

NODES = ["0x" + c * 40 for c in "abc"]
EVENTS = ["TaskPending", "TaskStarted", "TaskStarted", "TaskStarted", "TaskResultCommitmentSubmitted",
          "TaskResultCommitmentSubmitted", "TaskResultCommitmentSubmitted", "TaskResultCommitmentsReady",
          "TaskResultDisclosed", "TaskResultDisclosed", "TaskSuccess", "TaskNodeSuccess"]  # fmt: skip


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_one_task(view: LineView) -> None:
    board = view.board
    board.card_of = {NODES[0]: "Card A", NODES[1]: "Card B", NODES[2]: "Card B"}
    row = board.add(0, "GPT")
    started = iter(NODES)
    for name in EVENTS:
        node = next(started) if name == "TaskStarted" else None
        if board.on_event(0, name, task_id=7, node=node):
            view.changed(row)
    view.changed(board.finish(0, "validated", '"The farm wakes before the sun."'))
    view.close()


def test_off_a_terminal_one_line_per_change_of_state():
    out = io.StringIO()
    view = make_view(Board(), out)
    assert type(view) is LineView
    run_one_task(view)
    lines = out.getvalue().splitlines()
    assert all(
        re.match(r"^\[devnet\] \d\d:\d\d:\d\d task #0 GPT|^\[devnet\] \d\d:\d\d:\d\d footer", x)
        for x in lines
    )
    states = [line.split("(chain task 7) ")[1].split(" ")[0] for line in lines[:-1]]
    # three TaskStarted make one line, once the three nodes are known; twelve events make six lines
    assert states == ["queued", "running", "committing", "disclosing", "downloading", "validated"]
    assert "running on 3 nodes: Card A, Card B x2" in lines[1]
    assert re.search(
        r'validated in [\d.]+ s on 2 card model\(s\): "The farm wakes before the sun."', lines[5]
    )
    assert "footer: validated 1 | aborted 0 | failed 0 | slashed 0" in lines[6]


def test_on_a_terminal_the_rows_are_redrawn_in_place():
    out = Terminal()
    board = Board(log_dir=".devnet/run/logs")
    view = make_view(board, out)
    assert type(view) is LiveView
    view.say("chain up")
    drawn = len(view.board_lines())  # header, footer, logs
    row = board.add(3, "SD")
    board.on_event(3, "TaskPending", task_id=9, node=None)
    view.changed(row)
    screen = out.getvalue()
    assert "[devnet]" in screen and "chain up" in screen
    assert f"\x1b[{drawn}F\x1b[J" in screen  # back over the last drawing, then cleared
    assert re.search(r"#3\s+SD\s+9\s+queued", screen) and "logs: .devnet/run/logs" in screen
    # a finished task leaves its line above the view; the view itself is erased when it closes
    view.changed(board.finish(3, "aborted", "Task Cancelled"))
    assert re.search(r"task #3 SD \(chain task 9\) aborted in [\d.]+ s: Task Cancelled\n", out.getvalue())
    view.close()
    after_last_erase = out.getvalue().rsplit("\x1b[J", 1)[1]
    assert re.fullmatch(
        r"\[devnet\] \d\d:\d\d:\d\d footer: validated 0 \| aborted 1 \| .*\n", after_last_erase
    )


def test_the_live_view_never_wraps_a_line(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    view = LiveView(Board(), Terminal())
    view.board.card_of = {n: "NVIDIA GeForce RTX 4090 with a long name" for n in NODES}
    view.board.add(0, "GPT").nodes.extend(NODES)
    view.refresh()
    drawn = view.out.getvalue().split("\n")
    assert all(len(line) < 40 for line in drawn)


def test_a_sampled_task_runs_on_one_node_and_says_whether_it_was_audited():
    out = io.StringIO()
    board = Board()
    board.card_of = {NODES[0]: "Card A"}
    view = make_view(board, out)
    row = board.add(0, "GPT")
    events: list[tuple[str, dict]] = [
        ("TaskPending", {}), ("TaskSampled", {"audit_rate": 10}), ("TaskStarted", {"node": NODES[0]}),
        ("TaskResultCommitmentSubmitted", {}), ("TaskResultCommitmentsReady", {}),
        ("TaskAuditDrawn", {"audited": False}), ("TaskResultDisclosed", {}), ("TaskSuccess", {}),
    ]  # fmt: skip
    for name, extra in events:
        if board.on_event(0, name, task_id=7, node=extra.pop("node", None), **extra):
            view.changed(row)
    view.changed(board.finish(0, "validated", '"hello"'))
    lines = out.getvalue().splitlines()
    assert "task #0 GPT (chain task 7) [sampled 1/10] running on 1 node: Card A" in lines[1]
    assert "[sampled 1/10, not audited] validated in" in lines[-1]
