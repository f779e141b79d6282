"""Random sequences of joins, pauses, resumes, quits, tasks, commits, disclosures, error reports, "no
arguments" reports and their refutations by the relay's receipt, uploads, cancels (withholders slashed),
queue rent and the passing of time, driven by hypothesis against the real contracts; at audit rate 1
(today's protocol, createTask) and 10 (createTaskWithValidation, Full or Sampled: one node, its draw,
startAudit, the audits' two more nodes, the audit pool).

After every step: the native currency is conserved to the wei, each contract's balance equals its books,
NetworkStats agrees with the nodes' statuses and with an independent count of the task events, every
node status change followed the status table of PROTOCOL.md, and each card model's selection books
(available nodes, summed weight, joined nodes) agree with the nodes' statuses and QoS weights. A
sequence is a list of weighted actions (a random-sequence driver rather than a RuleBasedStateMachine:
every example runs the full length, so tasks get far enough to reach their decisions).
"""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_hash.auto import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from web3 import Web3

from cluster.chain.contracts import Decision, NodeStatus, RoundState, TaskStatus, TaskType
from cluster.chain.deploy import Deployment
from cluster.chain.revert import ContractRevert
from cluster.protocol.hashes import card_model_key, commitment
from cluster.protocol.receipts import sign_receipt
from tests.contracts.net import ETHER, GPU_A, GPU_B, GPU_SMALL, Net

S = NodeStatus
NUM_NODES = 10
CARDS = [GPU_A] * 4 + [GPU_B] * 4 + [GPU_SMALL] * 2
RESULTS = [keccak(b"a"), keccak(b"b")]  # a small alphabet: matches and mismatches are both common
TIMEOUT_S = 15 * 60
ARGUMENTS_WAIT_S = 2 * 60
MIN_FEE = 10**15
# (from, to) of the status table, plus the task-driven moves (select, finish, slash, kick-out).
ALLOWED = {
    (S.QUIT, S.AVAILABLE), (S.AVAILABLE, S.PAUSED), (S.PAUSED, S.AVAILABLE), (S.AVAILABLE, S.QUIT),
    (S.PAUSED, S.QUIT), (S.BUSY, S.PENDING_PAUSE), (S.BUSY, S.PENDING_QUIT),
    (S.PENDING_PAUSE, S.PENDING_QUIT), (S.AVAILABLE, S.BUSY), (S.BUSY, S.AVAILABLE),
    (S.PENDING_PAUSE, S.PAUSED), (S.PENDING_QUIT, S.QUIT), (S.BUSY, S.QUIT), (S.PENDING_PAUSE, S.QUIT),
}  # fmt: skip
NODE_ACTIONS = {
    "pause": {S.AVAILABLE: S.PAUSED, S.BUSY: S.PENDING_PAUSE},
    "resume": {S.PAUSED: S.AVAILABLE},
    "quit": {S.AVAILABLE: S.QUIT, S.PAUSED: S.QUIT, S.BUSY: S.PENDING_QUIT, S.PENDING_PAUSE: S.PENDING_QUIT},
}
# Weighted action kinds: nodes at work most often, so that tasks reach their decisions.
KINDS = ["work"] * 8 + ["create"] * 3 + ["join"] * 2 + ["node"] * 2 + ["time", "cancel"]
# Fees: mostly valid ones (an integer strategy over 1..5 CNX drew fees below the minimum for nearly every
# task, so few tasks ever started), of every residue mod 3 (which picks the validation at N > 1).
FEES = [1, MIN_FEE - 1, MIN_FEE, ETHER // 3, ETHER, ETHER + 1, 2 * ETHER, 3 * ETHER, 5 * ETHER]
ACTION = st.tuples(
    st.sampled_from(KINDS), st.integers(0, 2**16), st.integers(0, 2**16), st.sampled_from(FEES)
)


class Scenario:
    def __init__(self, w3: Web3, deployment: Deployment, num_joined: int, audit_rate: int = 1):
        self.w3 = w3
        self.net = Net(w3, deployment, num_tracked_accounts=3 + NUM_NODES)
        self.nodes = self.net.accounts[3 : 3 + NUM_NODES]
        self.creators = self.net.accounts[1:3]
        self.node_status = dict.fromkeys(self.nodes, S.QUIT)  # from NodeStatusChanged events only
        self.num_created = self.num_succeeded = self.num_aborted = 0
        self.send(self.net.queue.functions.setSizeLimit(3), self.net.owner)  # so that the queue fills up
        self.relay = Account.create()  # its receipts refute "no arguments" reports
        self.send(self.net.task.functions.setRelaySigner(self.relay.address), self.net.owner)
        self.audit_rate = audit_rate
        if audit_rate != 1:
            self.send(self.net.task.functions.setAuditRate(audit_rate), self.net.owner)
            self.send(self.net.task.functions.fundAuditPool(), self.net.owner, 10 * ETHER)
        for i in range(num_joined):
            self.join(i)

    # -- sending and watching ---------------------------------------------------------------------------

    def send(self, call: Any, sender: str, value: int = 0) -> Any:
        receipt = self.net.tx(call, sender, value)
        for event in self.net.events(receipt):
            if event.name == "NodeStatusChanged":
                node, old, new = event.args["node"], S(event.args["from"]), S(event.args["to"])
                assert self.node_status[node] == old, (
                    f"{node}: event says {old}, earlier events said otherwise"
                )
                assert (old, new) in ALLOWED, f"transition {old.name} -> {new.name} is not in the table"
                self.node_status[node] = new
            elif event.name == "TaskPending":
                self.num_created += 1
            elif event.name == "TaskResultUploaded":
                self.num_succeeded += 1
            elif event.name == "TaskAborted":
                self.num_aborted += 1
            elif event.name in ("TaskSampled", "TaskAuditStarted", "TaskAuditDrawn", "TaskResultUploaded"):
                hypothesis_event(event.name)  # --hypothesis-show-statistics: how often each path ran
        return receipt

    def try_send(self, call: Any, sender: str, value: int = 0) -> ContractRevert | None:
        try:
            self.send(call, sender, value)
        except ContractRevert as exc:
            return exc
        return None

    def apply(self, kind: str, a: int, b: int, fee: int) -> None:
        if kind == "work":
            self.work(a, RESULTS[b % 2])
        elif kind == "create":
            self.create_task(a % 2, TaskType(b % 2), fee, [0, 0, 0, 16, 48][a % 5], b % 4, fee % 3)
        elif kind == "join":
            self.join(a % NUM_NODES)
        elif kind == "node":
            self.node_action(a % NUM_NODES, list(NODE_ACTIONS)[b % 3])
        elif kind == "time":
            self.pass_time([60, ARGUMENTS_WAIT_S + 1, TIMEOUT_S + 1][a % 3])
        else:
            self.cancel(a, b)

    def pass_time(self, seconds: int) -> None:
        """Mines a block `seconds` after the latest (the blocks' interval ignores evm_increaseTime)."""
        latest = self.w3.eth.get_block("latest")["timestamp"]
        self.w3.provider.make_request("evm_setNextBlockTimestamp", [latest + seconds])
        self.w3.provider.make_request("evm_mine", [])

    # -- actions ----------------------------------------------------------------------------------------

    def join(self, i: int) -> None:
        node = self.nodes[i]
        before = self.node_status[node]
        err = self.try_send(self.net.node.functions.join(*CARDS[i]), node, self.net.node_stake())
        if before == S.QUIT:
            assert err is None and self.node_status[node] in (S.AVAILABLE, S.BUSY)  # may start a queued task
        else:
            assert err is not None and err.name == "NodeAlreadyJoined"

    def node_action(self, i: int, action: str) -> None:
        node = self.nodes[i]
        before = self.node_status[node]
        err = self.try_send(getattr(self.net.node.functions, action)(), node)
        if before in NODE_ACTIONS[action]:
            assert err is None
            # A resume may start a queued task on the spot: the node is then already Busy.
            assert self.node_status[node] in (NODE_ACTIONS[action][before], S.BUSY)
        else:
            assert err is not None and err.name == "InvalidNodeStatus"

    def create_task(
        self, creator: int, task_type: TaskType, fee: int, vram_limit: int, cap: int, validation: int
    ) -> None:
        task_hash = keccak(fee.to_bytes(32, "big"))
        fns = self.net.task.functions
        if self.audit_rate == 1:  # today's callers: createTask
            call = fns.createTask(int(task_type), task_hash, b"\0" * 32, vram_limit, cap)
        else:
            call = fns.createTaskWithValidation(
                int(task_type), task_hash, b"\0" * 32, vram_limit, cap, validation
            )
        err = self.try_send(call, self.creators[creator], fee)
        if fee < MIN_FEE:
            assert err is not None and err.name == "FeeBelowMinimum"
        else:
            assert err is None or err.name in ("TaskFeeTooLow", "TaskCannotRun"), err

    def cancel(self, pick: int, caller_pick: int) -> None:
        live = self.net.live_tasks()
        if not live:
            return
        task_id = sorted(live)[pick % len(live)]
        task = live[task_id]
        callers = [task["creator"], *(r[0] for r in task["rounds"] if int(r[0], 16) != 0)]
        caller = callers[caller_pick % len(callers)]
        err = self.try_send(self.net.task.functions.cancelTask(task_id), caller)
        if task["status"] == TaskStatus.QUEUED:
            assert (err is None) == (caller == task["creator"])
        else:
            now = self.w3.eth.get_block("latest")["timestamp"]
            if err is not None and now >= task["deadline"] and _is_alone(task):
                # A lone commitment's cancel reads the draw: audited, it starts the audit, which may wait.
                assert err.name in AUDIT_WAITS, err
                return
            assert (err is None) == (now >= task["deadline"]), err  # the cancel's block is 1 s later

    def work(self, pick: int, result: bytes) -> None:
        """One step of a running task: commit, report an error, disclose, or upload.

        Node selection depends on the chain's randomness, so the moves on offer differ between runs: the
        move is picked by index, a draw that does not depend on what the chain did.
        """
        moves = []
        for task_id, task in self.net.live_tasks().items():
            if task["status"] < TaskStatus.STARTED:
                continue
            if any(r[5] for r in task["rounds"]):  # a round reported the arguments missing
                moves.append(("refute", task_id, task["startedAt"]))
            alone = _is_alone(task)
            if alone and task["status"] == TaskStatus.COMMITMENTS_READY:
                moves.append(("audit", task_id, 0))
            for r, (node, commit_pos, disclose_pos, _, state, is_no_args, _) in enumerate(task["rounds"]):
                if int(node, 16) == 0:  # a sampled task's rounds 1 and 2 before an audit
                    continue
                if commit_pos == 0 and not is_no_args:
                    moves += [("commit", task_id, r)] * 3 + [("error", task_id, r), ("noargs", task_id, r)]
                elif disclose_pos == 0 and task["status"] == TaskStatus.COMMITMENTS_READY:
                    moves.append(("disclose", task_id, r))
                elif (
                    task["decision"] == Decision.SUCCESS
                    and r == task["resultRound"]
                    and state == RoundState.PENDING
                ):
                    moves.append(("upload", task_id, r))
        if not moves:
            return
        move, task_id, r = moves[pick % len(moves)]
        fns = self.net.task.functions
        if move == "audit":
            err = self.try_send(fns.startAudit(task_id), self.creators[0])
            assert err is None or err.name in ("TaskNotAudited", *AUDIT_WAITS), err
            return
        alone = _is_alone(self.net.get_task(task_id))
        if move == "error" and alone:  # a lone node seals its error as the empty result
            move, result = "commit", b""
        if move == "refute":  # a receipt dated at the start: the arguments were there all along
            receipt = sign_receipt(self.relay.key, self.w3.eth.chain_id, self.net.task.address, task_id, r)
            signature = bytes.fromhex(receipt.signature[2:])
            self.send(fns.refuteNoArguments(task_id, receipt.stored_at_s, signature), self.creators[0])
            return
        node = self.net.selected(task_id)[r]
        # No commitment or report after the deadline (the last one's block may be a second past it).
        late = ("DeadlinePassed",)
        if move == "commit":
            nonce = keccak(result + node.encode())
            self.net._secrets[(task_id, r)] = (result, nonce)
            call = fns.submitTaskResultCommitment(task_id, r, commitment(result, nonce, node))
            err = self.try_send(call, node)
            assert err is None or err.name in late, err
        elif move == "error":
            err = self.try_send(fns.reportTaskError(task_id, r), node)
            assert err is None or err.name in late, err
        elif move == "noargs":
            err = self.try_send(fns.reportNoArguments(task_id, r), node)
            assert err is None or err.name in ("ArgumentsWaitNotPassed", *late), err
        elif move == "disclose":
            result, nonce = self.net._secrets[(task_id, r)]
            err = self.try_send(fns.discloseTaskResult(task_id, r, result, nonce), node)
            assert err is None or (alone and err.name in ("AuditNotDrawn", "TaskAudited")), err
        else:
            self.send(fns.reportResultsUploaded(task_id, r), node)

    # -- invariants -------------------------------------------------------------------------------------

    def check(self) -> None:
        statuses = self.net.assert_books()
        assert {n: self.node_status[n] for n in statuses} == statuses
        assert all(self.node_status[n] == S.QUIT for n in self.nodes if n not in statuses)
        counters = self.net.task_counters()
        assert counters["total"] == self.num_created
        assert counters["succeeded"] == self.num_succeeded
        assert counters["aborted"] == self.num_aborted
        self.check_selection_books(statuses)

    def check_selection_books(self, statuses: dict[str, NodeStatus]) -> None:
        for card in set(CARDS):
            nodes = [n for n, c in zip(self.nodes, CARDS, strict=True) if c == card]
            available = [n for n in nodes if statuses.get(n) == S.AVAILABLE]
            joined = [n for n in nodes if statuses.get(n, S.QUIT) != S.QUIT]
            weights = {n: self.net.view(self.net.qos, "weight", n) for n in available}
            key = card_model_key(*card)
            _vram, num_available, total_weight, num_joined = self.net.view(self.net.node, "cardModel", key)
            expected = (len(available), sum(weights.values()), len(joined))
            assert (num_available, total_weight, num_joined) == expected
            members, member_weights, _ = self.net.view(self.net.node, "availableNodesOf", key)
            members = [Web3.to_checksum_address(m) for m in members]
            assert dict(zip(members, member_weights, strict=True)) == weights


AUDIT_WAITS = ("AuditNotDrawn", "AuditNodesUnavailable", "AuditPoolTooLow")


def _is_alone(task: dict[str, Any]) -> bool:
    """A sampled task before its audit: one round, its node's."""
    return task["auditRate"] != 0 and not task["isAudited"]


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(num_joined=st.integers(2, 8), actions=st.lists(ACTION, min_size=25, max_size=40))
@pytest.mark.parametrize("audit_rate", [1, 10])
def test_random_sequences_conserve_funds_and_keep_counters(
    w3: Web3, deployment: Deployment, audit_rate, num_joined, actions
):
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    # Blocks one second apart, not by the wall clock: a transaction is estimated in the block it is mined
    # in (number and timestamp; only prevrandao differs), and a cancel's block is the latest's + 1 s.
    w3.provider.make_request("anvil_setBlockTimestampInterval", [1])
    try:
        scenario = Scenario(w3, deployment, num_joined, audit_rate)
        scenario.check()
        for action in actions:
            scenario.apply(*action)
            scenario.check()
    finally:
        w3.provider.make_request("anvil_removeBlockTimestampInterval", [])
        w3.provider.make_request("evm_revert", [snapshot])
