// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ArgumentsReceipt} from "./lib/ArgumentsReceipt.sol";
import {TaskSeals} from "./TaskSeals.sol";

/// @title TaskArguments: a task whose arguments never reached its nodes, and false claims that they did not.
/// @notice From `argumentsWait` after the start, a node that has not committed may report the arguments
/// missing. One report may be the node's own network's fault, so it takes two; and since the chain cannot
/// tell a relay that never had the arguments from nodes that lie, the reports stand only if nobody refutes
/// them within `responseWindow`: the relay signs a receipt when it stores a task's arguments
/// (lib/ArgumentsReceipt.sol), and that receipt, dated at most half the arguments wait after the start,
/// shows every report false. Standing reports end the task at the cancel with the reporters compensated;
/// refuted reporters are slashed (docs/protocol-decisions.md, "The second audit", 4).
/// Invariants:
/// - a round that reported the arguments missing never commits;
/// - a task with a report is ended only by the cancel after its deadline (moved to `responseWindow`
///   after the second report) or by a refutation.
abstract contract TaskArguments is TaskSeals {
    /*//////////////////////////////////////////////////////////////
                                CONSTANTS
    //////////////////////////////////////////////////////////////*/

    string public constant REASON_NO_ARGUMENTS = "Task arguments not delivered";
    string public constant REASON_NO_ARGUMENTS_REFUTED = "Task arguments report refuted";

    /*//////////////////////////////////////////////////////////////
                                  NODES
    //////////////////////////////////////////////////////////////*/

    /// @notice The arguments never reached this node (a selected node that has not committed, from
    /// `argumentsWait` after the start until the deadline). The second report moves the deadline to
    /// `responseWindow` from now, the time to refute the reports with the relay's receipt; then a cancel
    /// ends the task: each reporting node is paid `argumentsCompensationBps` of the fee for the time it
    /// was held, the rest is refunded, and every round ends Cancelled scoring as if it had finished in its
    /// round position.
    function reportNoArguments(uint256 taskId, uint256 round) external {
        TaskInfo storage t = _runningTask(taskId);
        Round storage rd = _callerRound(t, taskId, round);
        if (rd.commitPos != 0) revert AlreadyCommitted(taskId, round);
        if (rd.isNoArgs) revert AlreadyReportedNoArguments(taskId, round);
        _requireBeforeDeadline(taskId, t);
        uint256 waitEnds = uint256(t.startedAt) + argumentsWait;
        if (block.timestamp < waitEnds) revert ArgumentsWaitNotPassed(taskId, waitEnds, block.timestamp);
        rd.isNoArgs = true;
        emit TaskNoArgumentsReported(taskId, round, msg.sender);
        if (_numNoArgs(t) == _noArgsQuorum(t)) _moveDeadline(taskId, t, block.timestamp + responseWindow);
    }

    /// @notice The relay's receipt (lib/ArgumentsReceipt.sol) shows the arguments stored at `storedAt`, at
    /// most half the arguments wait after the start, so at least that long before any report: every
    /// round that reported them missing is slashed, the rounds they held up are compensated as a standing
    /// report would have been, the rest of the fee is refunded. Anyone may send it while the task lives.
    function refuteNoArguments(uint256 taskId, uint256 storedAt, bytes calldata signature) external {
        TaskInfo storage t = _runningTask(taskId);
        if (_numNoArgs(t) == 0) revert NothingToRefute(taskId);
        address signer = ArgumentsReceipt.signer(_receiptDomain, taskId, storedAt, signature);
        if (signer == address(0) || signer != relaySigner) revert InvalidReceipt(taskId);
        uint256 latest = uint256(t.startedAt) + argumentsWait / 2;
        if (storedAt > latest) revert ReceiptTooLate(taskId, storedAt, latest);
        emit TaskNoArgumentsRefuted(taskId, storedAt);
        if (!t.isEnded) _end(taskId, t, false, REASON_NO_ARGUMENTS_REFUTED);
        _endForMissingArguments(taskId, t, true);
        _dispatchQueued();
    }

    /*//////////////////////////////////////////////////////////////
                                 RULES
    //////////////////////////////////////////////////////////////*/

    /// @dev The arguments were reported missing by two rounds (the reports stand) or by any (`isRefuted`:
    /// a relay receipt showed them stored). Every open round scores as if it had finished in its round
    /// position (nobody is blamed), but a refuted reporter, which is slashed: a false report is a false
    /// claim, as a wrong result is. The reporters that stand are compensated, or, when refuted, the
    /// rounds they held up are.
    function _endForMissingArguments(uint256 taskId, TaskInfo storage t, bool isRefuted) internal {
        RoundState[3] memory outcomes;
        uint256[3] memory scores;
        for (uint256 r; r < NUM_ROUNDS; ++r) {
            Round storage rd = t.rounds[r];
            if (rd.state != RoundState.Pending || rd.node == address(0)) continue;
            if (isRefuted && rd.isNoArgs) {
                outcomes[r] = RoundState.Slashed;
                continue;
            }
            outcomes[r] = RoundState.Cancelled;
            scores[r] = 2 * _award(r + 1);
            if (rd.isNoArgs != isRefuted) _compensate(taskId, t, rd.node);
        }
        _endOpenRounds(taskId, t, outcomes, scores);
    }

    /// @dev The reports that stand for the task: one for a lone sampled node (nobody else can), else two.
    function _noArgsQuorum(TaskInfo storage t) internal view returns (uint256) {
        return _numRounds(t) == 1 ? 1 : 2;
    }

    /// @dev The rounds that reported the arguments missing.
    function _numNoArgs(TaskInfo storage t) internal view returns (uint256 n) {
        for (uint256 r; r < NUM_ROUNDS; ++r) {
            if (t.rounds[r].isNoArgs) ++n;
        }
    }

    /*//////////////////////////////////////////////////////////////
                               IN TASK
    //////////////////////////////////////////////////////////////*/

    /// @dev Pays `account` argumentsCompensationBps of the fee from the task's balance, for the time the
    /// task held it without its arguments.
    function _compensate(uint256 taskId, TaskInfo storage t, address account) internal virtual;

    /// @dev The live task `taskId`, started and not decided by its commitments yet (reverts otherwise).
    function _runningTask(uint256 taskId) internal view virtual returns (TaskInfo storage);

    /// @dev The running task ended: succeeded, or aborted for `reason`.
    function _end(uint256 taskId, TaskInfo storage t, bool isSuccess, string memory reason) internal virtual;

    /// @dev Starts the queued tasks the nodes this call freed make runnable.
    function _dispatchQueued() internal virtual;
}
