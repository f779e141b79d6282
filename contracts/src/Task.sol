// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {TaskType} from "./lib/Types.sol";
import {INode} from "./interfaces/INode.sol";
import {IQoS} from "./interfaces/IQoS.sol";
import {ITask} from "./interfaces/ITask.sol";
import {ITaskQueue} from "./interfaces/ITaskQueue.sol";
import {TaskAudits} from "./TaskAudits.sol";
import {TaskCore} from "./TaskCore.sol";

/// @title Task: the entry point of applications and of nodes at work; holds every task's fee.
/// @notice createTask -> three nodes selected now, or queued until nodes can take the task -> each node
/// commits keccak256(result, nonce, node) or reports an error -> all commit -> each discloses -> the first
/// two matching disclosures decide (PROTOCOL.md, Task lifecycle step 6) -> the result node uploads and is
/// paid. Each of the three rounds ends exactly once: Settled (paid fee * taskScore / 50, the last one
/// the remainder), Slashed (its share back to the creator, its stake to the treasury) or Cancelled (not
/// paid; the fee left over is refunded when the last round ends). The task's storage is deleted then.
/// TaskSeals keeps the seals and decides how each round ends (the match rules); TaskSettings holds the
/// owner-settable numbers; this contract runs the tasks, holds their fees and carries the rounds' ends
/// out. A queued task pays the treasury rent for its time in the queue (queueRentBpsPerHour).
/// A sampled task (createTaskWithValidation, run by TaskAudits in this contract's storage) has one round
/// until its draw audits it; then its audit adds rounds 1 and 2 and the pool pays their runs; each of
/// its rounds is paid one run, fee less premium (docs/protocol-decisions.md, "Sampled audits").
/// Invariants:
/// - `address(this).balance >= totalEscrowed + totalCredits + auditPool`; `totalEscrowed` = sum of
///   live `balance`s;
/// - a live task's `balance` = fee (+ an audit's two runs from the pool) - what its ended rounds, its
///   compensations, its queue rent and its premium took; it is 0 once all its rounds ended;
/// - every task is counted in exactly one end (numSucceeded or numAborted) and emits TaskAborted at
///   most once;
/// - no commitment or report is taken after the deadline; the deadline only moves to give the next
///   step responseWindow, or an audit a fresh timeout at its start (TaskDeadlineMoved);
/// - `_queueFloor` is the lowest vramLimit of a queued task (TaskQueue.NO_FLOOR when none).
contract Task is TaskCore {
    /// @notice The sampled audits' code (createTaskWithValidation, startAudit, the audit pool, the lone
    /// node's disclosure and cancel), deployed by this constructor and run by delegatecall in this
    /// contract's storage: with it here, Task would exceed EIP-170's 24,576 bytes.
    address public immutable audits;

    constructor(address initialOwner) TaskCore(initialOwner) {
        audits = address(new TaskAudits(initialOwner));
    }

    /*//////////////////////////////////////////////////////////////
                                 WIRING
    //////////////////////////////////////////////////////////////*/

    function wire(INode node_, IQoS qos_, ITaskQueue queue_) external onlyOwner {
        if (address(node) != address(0)) revert AlreadyWired();
        if (address(node_) == address(0) || address(qos_) == address(0) || address(queue_) == address(0)) {
            revert ZeroAddress();
        }
        node = node_;
        qos = qos_;
        queue = queue_;
        emit Wired(address(node_), address(qos_), address(queue_));
    }

    /*//////////////////////////////////////////////////////////////
                              APPLICATIONS
    //////////////////////////////////////////////////////////////*/

    /// @notice Creates a task paid by msg.value: started at once when three nodes can take it, else queued
    /// (reverts with TaskQueue.TaskFeeTooLow when the queue is full of higher-value tasks).
    /// @param cap num_images for SD, max_new_tokens for GPT: what the run time estimate scales with.
    function createTask(uint8 taskType, bytes32 taskHash, bytes32 dataHash, uint256 vramLimit, uint256 cap)
        external
        payable
        returns (uint256 taskId)
    {
        return _create(taskType, taskHash, dataHash, vramLimit, cap, 0, false);
    }

    /// @notice Queued task: its creator, at any time, refunded all but its queue rent. Started task: its
    /// creator or one of its nodes, after the deadline; rounds still open end Cancelled (a round that could
    /// disclose and did not: Slashed) and the fee left is refunded. Two "no arguments" reports end the
    /// task this way once the window they opened passed: the reporters are compensated.
    function cancelTask(uint256 taskId) external {
        TaskInfo storage t = _tasks[taskId];
        TaskStatus status = t.status;
        if (status == TaskStatus.None) revert TaskNotFound(taskId);
        if (status == TaskStatus.Queued) {
            if (msg.sender != t.creator) revert NotTaskCreator(taskId, msg.sender);
            _queueFloor = queue.remove(taskId);
            _abortQueued(taskId, REASON_CANCELLED);
            return;
        }
        if (!_isParticipant(t, msg.sender)) revert NotAllowedToCancel(taskId, msg.sender);
        if (block.timestamp <= t.deadline) revert DeadlineNotPassed(taskId, t.deadline, block.timestamp);
        if (_numNoArgs(t) >= _noArgsQuorum(t)) {
            // Two rounds never committed: nothing was decided or ended.
            _end(taskId, t, false, REASON_NO_ARGUMENTS);
            _endForMissingArguments(taskId, t, false);
        } else if (_numRounds(t) == 1 && status == TaskStatus.CommitmentsReady) {
            // A sampled task's lone commitment: the draw decides (TaskAudits.cancelTask).
            _delegate();
        } else {
            if (!t.isEnded) _end(taskId, t, false, REASON_CANCELLED);
            _endAfterDeadline(taskId, t, status);
        }
        _dispatchQueued();
    }

    /// @notice Starts queued tasks the available nodes can take, at most MAX_STARTS_PER_CALL. Every call
    /// that frees nodes does this already; anyone may call it when more nodes were freed at once.
    function dispatchQueued() external {
        _freedVram = type(uint256).max;
        _dispatchQueued();
    }

    /*//////////////////////////////////////////////////////////////
                                  NODES
    //////////////////////////////////////////////////////////////*/

    /// @notice Until the deadline: a commitment after it could leave the other nodes no time to disclose.
    function submitTaskResultCommitment(uint256 taskId, uint256 round, bytes32 commitment) external {
        TaskInfo storage t = _runningTask(taskId);
        Round storage rd = _callerRound(t, taskId, round);
        if (rd.commitPos != 0) revert AlreadyCommitted(taskId, round);
        if (rd.isNoArgs) revert ReportedNoArguments(taskId, round);
        _requireBeforeDeadline(taskId, t);
        _seal(taskId, round, commitment);
        rd.commitPos = ++t.numCommits;
        // A sampled task's lone commitment: the draw reads the hash of the block after this one.
        if (_numRounds(t) == 1) rd.commitBlock = uint40(block.number);
        emit TaskResultCommitmentSubmitted(taskId, round, msg.sender, commitment);
        _afterCommit(taskId, t);
    }

    /// @notice Instead of a commitment, until the deadline: the task is invalid. Counts as commitment and
    /// empty disclosure.
    function reportTaskError(uint256 taskId, uint256 round) external {
        TaskInfo storage t = _runningTask(taskId);
        Round storage rd = _callerRound(t, taskId, round);
        if (rd.commitPos != 0) revert AlreadyCommitted(taskId, round);
        if (rd.isNoArgs) revert ReportedNoArguments(taskId, round);
        // A public error report would show the outcome before the draw: a sampled node seals it instead.
        if (_numRounds(t) == 1) revert SampledErrorMustBeSealed(taskId);
        _requireBeforeDeadline(taskId, t);
        rd.isError = true;
        rd.commitPos = ++t.numCommits;
        rd.disclosePos = ++t.numDisclosed;
        emit TaskErrorReported(taskId, round, msg.sender);
        _afterCommit(taskId, t);
        _afterDisclosure(taskId, t, round, "");
        _dispatchQueued();
    }

    function discloseTaskResult(uint256 taskId, uint256 round, bytes calldata result, bytes32 nonce) external {
        TaskInfo storage t = _runningTask(taskId);
        if (t.status != TaskStatus.CommitmentsReady) revert CommitmentsNotReady(taskId, t.numCommits);
        Round storage rd = _callerRound(t, taskId, round);
        if (rd.disclosePos != 0) revert AlreadyDisclosed(taskId, round);
        // A sampled task's lone node: the draw decides (TaskAudits.discloseTaskResult).
        if (_numRounds(t) == 1) _delegate();
        _openSeal(taskId, round, t.taskType, result, nonce);
        // A sampled first node's empty result is its sealed error report.
        if (round == 0 && result.length == 0 && t.auditRate != 0) rd.isError = true;
        rd.disclosePos = ++t.numDisclosed;
        emit TaskResultDisclosed(taskId, round, msg.sender, result);
        _afterDisclosure(taskId, t, round, result);
        _dispatchQueued();
    }

    /// @notice The result node uploaded the result files to the relay: it is paid, the task succeeded.
    function reportResultsUploaded(uint256 taskId, uint256 round) external {
        TaskInfo storage t = _tasks[taskId];
        if (t.decision != Decision.Success) revert TaskNotSucceeded(taskId);
        Round storage rd = _callerRound(t, taskId, round);
        if (round != t.resultRound) revert NotResultNode(taskId, round, t.resultRound);
        if (rd.state != RoundState.Pending) revert ResultAlreadyUploaded(taskId);
        emit TaskResultUploaded(taskId);
        _end(taskId, t, true, "");
        _endRound(taskId, t, round, RoundState.Settled, _positionScore(rd));
        _dispatchQueued();
    }

    /*//////////////////////////////////////////////////////////////
                                  VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @notice A live task (status None once it ended: its storage is deleted).
    function getTask(uint256 taskId) external view returns (TaskInfo memory) {
        return _tasks[taskId];
    }

    /// @notice The seal of a round of a live task: the node's commitment until it discloses, then
    /// keccak256 of its result; zero when the round has not committed (or reported an error) or its node
    /// has moved on to another task.
    function roundSeal(uint256 taskId, uint256 round) external view returns (bytes32) {
        if (round >= NUM_ROUNDS) revert InvalidRound(round);
        return _sealOf(_tasks[taskId].rounds[round]);
    }

    function nextTaskId() external view returns (uint256) {
        return _counters.nextTaskId;
    }

    function numQueued() external view returns (uint256) {
        return _counters.numQueued;
    }

    function totalEscrowed() external view returns (uint256) {
        return _counters.totalEscrowed;
    }

    /*//////////////////////////////////////////////////////////////
                             SAMPLED AUDITS
    //////////////////////////////////////////////////////////////*/

    /// @notice The functions of TaskAudits (their ABI is merged into Task's artifact by build.mjs).
    fallback() external payable {
        _delegate();
    }

    /// @dev Runs this call's calldata in TaskAudits, in this contract's storage, and returns or reverts
    /// with what it returned: the call ends here.
    function _delegate() internal {
        address target = audits;
        assembly {
            calldatacopy(0, 0, calldatasize())
            let isOk := delegatecall(gas(), target, 0, calldatasize(), 0, 0)
            returndatacopy(0, 0, returndatasize())
            if iszero(isOk) { revert(0, returndatasize()) }
            return(0, returndatasize())
        }
    }

    /// @dev Task creates Full tasks only: createTaskWithValidation runs in TaskAudits.
    function _sampledTerms(uint256, TaskInfo storage, uint256 rate, bool) internal pure override returns (uint256) {
        revert InvalidAuditRate(rate);
    }
}
