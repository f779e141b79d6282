// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Owned} from "./lib/Owned.sol";
import {Payouts} from "./lib/Payouts.sol";
import {ResultMatch} from "./lib/ResultMatch.sol";
import {TaskType} from "./lib/Types.sol";
import {INode} from "./interfaces/INode.sol";
import {IQoS} from "./interfaces/IQoS.sol";
import {ITask} from "./interfaces/ITask.sol";
import {ITaskQueue} from "./interfaces/ITaskQueue.sol";

/// @title Task: the entry point of applications and of nodes at work; holds every task's fee.
/// @notice createTask -> three nodes selected now, or queued until nodes can take the task -> each node
/// commits keccak256(result, nonce, node) or reports an error -> all commit -> each discloses -> the first
/// two matching disclosures decide (PROTOCOL.md, Task lifecycle step 6) -> the result node uploads and is
/// paid. Each of the three rounds ends exactly once: Settled (paid fee * taskScore / 50, the last one
/// the remainder), Slashed (its share back to the creator, its stake to the treasury) or Cancelled (not
/// paid; the fee left over is refunded when the last round ends). The task's storage is deleted then.
/// A node holds one task at a time, so its commitment, then its disclosed result's hash, live in a slot
/// of its own that every task it runs reuses (`_seals`): a slot written once costs 2,900 gas to write
/// again, a fresh task slot 20,000 (docs/contracts.md, "Gas").
/// Invariants:
/// - `address(this).balance >= totalEscrowed + totalCredits`; `totalEscrowed` = sum of live `balance`s;
/// - a live task's `balance` = fee - what its ended rounds took; it is 0 once all three ended;
/// - every task is counted in exactly one end (numSucceeded or numAborted) and emits TaskAborted at
///   most once.
contract Task is Owned, Payouts, ITask {
    using ResultMatch for bytes;

    /*//////////////////////////////////////////////////////////////
                                CONSTANTS
    //////////////////////////////////////////////////////////////*/

    uint256 internal constant NUM_ROUNDS = 3;
    /// @dev Position awards [10, 9, 6] for 1st / 2nd / 3rd, one byte each; position 0 (none) awards 0.
    uint256 internal constant POSITION_AWARDS = 0x0a0906;
    /// @notice Each of the two orders hands out 10 + 9 + 6: the three task scores always sum to 50.
    uint256 public constant SCORE_DENOMINATOR = 50;
    uint256 public constant MAX_RESULT_BYTES = 1024;
    uint256 public constant MAX_DISTANCE_THRESHOLD = 64;

    string public constant REASON_RESULT_ILLEGAL = "Task result illegal";
    string public constant REASON_ERROR_REPORTED = "Task error reported";
    string public constant REASON_CANCELLED = "Task Cancelled";
    string public constant REASON_FEE_TOO_LOW = "Task fee is too low";
    string public constant REASON_NO_ARGUMENTS = "Task arguments not delivered";
    /// @notice At most this many queued tasks start in one call; `dispatchQueued` starts more.
    uint256 public constant MAX_STARTS_PER_CALL = 2;
    uint256 internal constant BPS = 10_000;
    /// @dev keccak256 of the empty result: what an error report counts as (PROTOCOL.md, step 4).
    bytes32 internal constant EMPTY_RESULT_HASH = keccak256("");
    /// @dev A node's seal slots before its first task (written at its join).
    bytes32 internal constant UNWRITTEN_SEAL = bytes32(uint256(1));

    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    event Wired(address node, address qos, address queue);
    event TaskTimeoutSet(uint256 taskTimeout);
    event DistanceThresholdSet(uint256 distanceThreshold);
    event MinTaskFeeSet(uint256 minTaskFee);
    event ArgumentsWaitSet(uint256 argumentsWait, uint256 compensationBps);

    event TaskPending(
        uint256 indexed taskId,
        TaskType taskType,
        address indexed creator,
        bytes32 taskHash,
        bytes32 dataHash,
        uint256 vramLimit,
        uint256 cap,
        uint256 fee
    );
    event TaskStarted(
        uint256 indexed taskId,
        TaskType taskType,
        address indexed creator,
        address indexed selectedNode,
        bytes32 taskHash,
        bytes32 dataHash,
        uint256 round
    );
    event TaskResultCommitmentSubmitted(uint256 indexed taskId, uint256 round, address indexed node, bytes32 commitment);
    event TaskErrorReported(uint256 indexed taskId, uint256 round, address indexed node);
    event TaskResultCommitmentsReady(uint256 indexed taskId);
    event TaskResultDisclosed(uint256 indexed taskId, uint256 round, address indexed node, bytes result);
    event TaskSuccess(uint256 indexed taskId, bytes result, address indexed resultNode);
    event TaskResultUploaded(uint256 indexed taskId);
    event TaskAborted(uint256 indexed taskId, string reason);
    event TaskNodeSuccess(uint256 indexed taskId, address indexed node, uint256 fee);
    event TaskNodeSlashed(uint256 indexed taskId, address indexed node);
    event TaskNodeCancelled(uint256 indexed taskId, address indexed node);
    /// @notice A node that reported the arguments missing is paid for the time it was held.
    event TaskNodeCompensated(uint256 indexed taskId, address indexed node, uint256 amount);
    event TaskNoArgumentsReported(uint256 indexed taskId, uint256 round, address indexed node);
    event TaskFeeRefunded(uint256 indexed taskId, address indexed creator, uint256 amount);

    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @dev Only the Node contract reports nodes that became available.
    error NotNode(address caller);
    /// @dev `wire` was already called: the wiring is set once.
    error AlreadyWired();
    /// @dev taskType must be 0 (SD) or 1 (GPT).
    error InvalidTaskType(uint256 taskType);
    /// @dev A task's fee must be at least `minTaskFee`: a task holds three nodes, which must cost money.
    error FeeBelowMinimum(uint256 fee, uint256 minTaskFee);
    /// @dev No three joined nodes could ever take this task (no card model with VRAM >= vramLimit and
    /// enough nodes): it would only squat in the queue.
    error TaskCannotRun(TaskType taskType, uint256 vramLimit);
    /// @dev The arguments wait has not passed since the task started.
    error ArgumentsWaitNotPassed(uint256 taskId, uint256 waitEnds, uint256 timestamp);
    /// @dev This round already reported the arguments missing.
    error AlreadyReportedNoArguments(uint256 taskId, uint256 round);
    /// @dev The wait must be shorter than the task timeout and the compensation at most 30% per node.
    error InvalidArgumentsWait(uint256 argumentsWait, uint256 compensationBps);
    /// @dev The fee, vramLimit or cap does not fit the task's storage (96, 64 and 64 bits).
    error ValueTooLarge(uint256 fee, uint256 vramLimit, uint256 cap);
    /// @dev No live task has this id (never created, or ended and deleted).
    error TaskNotFound(uint256 taskId);
    /// @dev The task is not running: still queued, or ended.
    error TaskNotRunning(uint256 taskId, TaskStatus status);
    /// @dev round must be 0, 1 or 2.
    error InvalidRound(uint256 round);
    /// @dev The caller is not the node selected for this round.
    error NotSelectedNode(uint256 taskId, uint256 round, address caller);
    /// @dev This round already committed or reported an error.
    error AlreadyCommitted(uint256 taskId, uint256 round);
    /// @dev A commitment must not be zero.
    error EmptyCommitment(uint256 taskId, uint256 round);
    /// @dev Disclosures open once all three rounds committed.
    error CommitmentsNotReady(uint256 taskId, uint256 numCommits);
    /// @dev This round already disclosed (or reported an error, which counts as its disclosure).
    error AlreadyDisclosed(uint256 taskId, uint256 round);
    /// @dev keccak256(abi.encodePacked(result, nonce, msg.sender)) differs from the round's commitment.
    error CommitmentMismatch(uint256 taskId, uint256 round);
    /// @dev A disclosed result is longer than MAX_RESULT_BYTES.
    error ResultTooLong(uint256 numBytes, uint256 maxBytes);
    /// @dev The task has no successful result waiting for its upload.
    error TaskNotSucceeded(uint256 taskId);
    /// @dev Only the result node (the round of TaskSuccess) reports the upload.
    error NotResultNode(uint256 taskId, uint256 round, uint256 resultRound);
    /// @dev The result node already reported its upload.
    error ResultAlreadyUploaded(uint256 taskId);
    /// @dev Only the creator cancels a queued task.
    error NotTaskCreator(uint256 taskId, address caller);
    /// @dev Only the creator or a selected node cancels a started task.
    error NotAllowedToCancel(uint256 taskId, address caller);
    /// @dev A started task can be cancelled only after its deadline.
    error DeadlineNotPassed(uint256 taskId, uint256 deadline, uint256 timestamp);
    /// @dev The timeout must be in 1 s .. 2**32 s.
    error InvalidTaskTimeout(uint256 taskTimeout);
    /// @dev The distance threshold must be in 1..64 (bits of a 64-bit hash).
    error InvalidDistanceThreshold(uint256 distanceThreshold);
    /// @dev A round that reported the arguments missing neither commits nor reports an error.
    error ReportedNoArguments(uint256 taskId, uint256 round);

    /*//////////////////////////////////////////////////////////////
                                 STORAGE
    //////////////////////////////////////////////////////////////*/

    /// @dev None: no live task (never created, or ended and deleted).
    enum TaskStatus {
        None,
        Queued,
        Started,
        CommitmentsReady
    }

    /// @dev The outcome decided by the first two matching disclosures.
    enum Decision {
        None,
        Success,
        ErrorReported
    }

    enum RoundState {
        Pending,
        Settled,
        Slashed,
        Cancelled
    }

    /// @dev Positions are 1-based (0: not yet). An error report takes a position in both orders at once.
    struct Round {
        address node;
        uint8 commitPos;
        uint8 disclosePos;
        bool isError;
        RoundState state;
        bool isNoArgs; // reported the arguments missing
    }

    /// @dev A task's storage and, through `getTask`, its view.
    struct TaskInfo {
        address creator;
        TaskType taskType;
        TaskStatus status;
        Decision decision;
        uint8 numCommits;
        uint8 numDisclosed;
        uint8 numEnded; // rounds Settled, Slashed or Cancelled
        uint8 resultRound;
        bool isEnded; // the task's end (Succeeded / Aborted) was reported
        uint128 fee;
        uint128 balance;
        uint64 vramLimit;
        uint64 cap;
        uint64 deadline;
        uint64 startedAt;
        /// Kept only while the task waits in the queue (its start needs them); TaskPending and
        /// TaskStarted carry them. A task that starts at once never stores them.
        bytes32 taskHash;
        bytes32 dataHash;
        Round[3] rounds;
    }

    /// @dev The task counters and the escrow, one slot: a task's start and end write no slot of their own
    /// for them. Queued, running and the total follow (NetworkStats.taskCounters).
    struct Counters {
        uint40 nextTaskId;
        uint24 numQueued;
        uint40 numSucceeded;
        uint40 numAborted;
        uint112 totalEscrowed;
    }

    INode public node;
    IQoS public qos;
    ITaskQueue public queue;

    uint256 public taskTimeout = 15 minutes;
    uint256 public distanceThreshold = 5;
    /// @notice The smallest fee a task may pay (owner-settable).
    uint256 public minTaskFee = 0.001 ether;
    /// @notice Seconds after a task's start from which its nodes may report its arguments missing, and
    /// what each reporting node is paid then, in basis points of the fee.
    uint256 public argumentsWait = 2 minutes;
    uint256 public argumentsCompensationBps = 1_000;
    Counters internal _counters = Counters({
        nextTaskId: 1, numQueued: 0, numSucceeded: 0, numAborted: 0, totalEscrowed: 0
    });
    mapping(uint256 => TaskInfo) internal _tasks;
    /// @dev A selected node's commitment until it discloses, then keccak256 of its result. A node holds
    /// one task at a time: its seal always belongs to the task it holds (or held last).
    mapping(address => bytes32) internal _seals;
    /// @dev A node's last disclosed SD result (the perceptual hashes that SD matching compares).
    mapping(address => bytes) internal _images;
    /// @dev What a node that discloses after its task's decision must match: the decided result's hash
    /// (GPT; an error decision: the empty result's) or its images (SD). Written for the one round left at
    /// the decision; the winner's own seal is its node's, reused once the node is released.
    mapping(address => bytes32) internal _expected;
    mapping(address => bytes) internal _expectedImages;

    constructor(address initialOwner) Owned(initialOwner) {}

    /*//////////////////////////////////////////////////////////////
                            WIRING AND SETTINGS
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

    /// @notice Applies to tasks started afterwards.
    function setTaskTimeout(uint256 taskTimeout_) external onlyOwner {
        if (taskTimeout_ == 0 || taskTimeout_ > type(uint32).max) revert InvalidTaskTimeout(taskTimeout_);
        taskTimeout = taskTimeout_;
        emit TaskTimeoutSet(taskTimeout_);
    }

    function setDistanceThreshold(uint256 distanceThreshold_) external onlyOwner {
        if (distanceThreshold_ == 0 || distanceThreshold_ > MAX_DISTANCE_THRESHOLD) {
            revert InvalidDistanceThreshold(distanceThreshold_);
        }
        distanceThreshold = distanceThreshold_;
        emit DistanceThresholdSet(distanceThreshold_);
    }

    /// @notice Applies to tasks created afterwards.
    function setMinTaskFee(uint256 minTaskFee_) external onlyOwner {
        minTaskFee = minTaskFee_;
        emit MinTaskFeeSet(minTaskFee_);
    }

    /// @notice Applies to tasks whose nodes report afterwards.
    function setArgumentsWait(uint256 argumentsWait_, uint256 compensationBps_) external onlyOwner {
        if (argumentsWait_ >= taskTimeout || compensationBps_ > 3_000) {
            revert InvalidArgumentsWait(argumentsWait_, compensationBps_);
        }
        argumentsWait = argumentsWait_;
        argumentsCompensationBps = compensationBps_;
        emit ArgumentsWaitSet(argumentsWait_, compensationBps_);
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
        if (taskType > uint8(TaskType.GPT)) revert InvalidTaskType(taskType);
        if (msg.value == 0 || msg.value < minTaskFee) revert FeeBelowMinimum(msg.value, minTaskFee);
        if (msg.value > type(uint96).max || vramLimit > type(uint64).max || cap > type(uint64).max) {
            revert ValueTooLarge(msg.value, vramLimit, cap);
        }
        Counters memory c = _counters;
        taskId = c.nextTaskId++;
        c.totalEscrowed += uint112(msg.value);
        TaskInfo storage t = _tasks[taskId];
        t.creator = msg.sender;
        t.taskType = TaskType(taskType);
        t.fee = uint128(msg.value);
        t.balance = uint128(msg.value);
        t.vramLimit = uint64(vramLimit);
        t.cap = uint64(cap);
        emit TaskPending(taskId, TaskType(taskType), msg.sender, taskHash, dataHash, vramLimit, cap, msg.value);

        if (_start(taskId, t, taskHash, dataHash)) {
            _counters = c;
            return taskId;
        }
        if (!node.canEverRun(TaskType(taskType), vramLimit)) revert TaskCannotRun(TaskType(taskType), vramLimit);
        t.taskHash = taskHash;
        if (dataHash != 0) t.dataHash = dataHash; // reserved, zero today: no write
        t.status = TaskStatus.Queued;
        ++c.numQueued;
        _counters = c;
        uint256 evictedTaskId = queue.push(taskId, TaskType(taskType), vramLimit, cap, msg.value);
        if (evictedTaskId != 0) _abortQueued(evictedTaskId, REASON_FEE_TOO_LOW);
    }

    /// @notice Queued task: its creator, at any time, full refund. Started task: its creator or one of its
    /// nodes, after the deadline; rounds still open end Cancelled and the fee left is refunded.
    function cancelTask(uint256 taskId) external {
        TaskInfo storage t = _tasks[taskId];
        TaskStatus status = t.status;
        if (status == TaskStatus.None) revert TaskNotFound(taskId);
        if (status == TaskStatus.Queued) {
            if (msg.sender != t.creator) revert NotTaskCreator(taskId, msg.sender);
            queue.remove(taskId);
            _abortQueued(taskId, REASON_CANCELLED);
            return;
        }
        if (!_isParticipant(t, msg.sender)) revert NotAllowedToCancel(taskId, msg.sender);
        if (block.timestamp <= t.deadline) revert DeadlineNotPassed(taskId, t.deadline, block.timestamp);
        if (!t.isEnded) _end(taskId, t, false, REASON_CANCELLED);

        // Cancel compensation (QoS only, nobody is paid): when no round committed, each scores as if it
        // had finished in its round position; otherwise only the committed rounds score, in commit order.
        // Once all committed, a round that has not disclosed withheld its result: it is slashed like a
        // wrong one, so that withholding never pays better than disclosing (docs/protocol-decisions.md).
        bool isNoneCommitted = t.numCommits == 0;
        bool couldDisclose = status == TaskStatus.CommitmentsReady;
        RoundState[3] memory outcomes;
        uint256[3] memory scores;
        for (uint256 r; r < NUM_ROUNDS; ++r) {
            Round storage rd = t.rounds[r];
            if (rd.state != RoundState.Pending) continue;
            if (couldDisclose && rd.disclosePos == 0) {
                outcomes[r] = RoundState.Slashed;
            } else {
                outcomes[r] = RoundState.Cancelled;
                scores[r] = 2 * _award(isNoneCommitted ? r + 1 : rd.commitPos);
            }
        }
        _endOpenRounds(taskId, t, outcomes, scores);
        _dispatchQueued();
    }

    /// @notice Starts queued tasks the available nodes can take, at most MAX_STARTS_PER_CALL. Every call
    /// that frees nodes does this already; anyone may call it when more nodes were freed at once.
    function dispatchQueued() external {
        _dispatchQueued();
    }

    /*//////////////////////////////////////////////////////////////
                                  NODES
    //////////////////////////////////////////////////////////////*/

    function submitTaskResultCommitment(uint256 taskId, uint256 round, bytes32 commitment) external {
        TaskInfo storage t = _runningTask(taskId);
        Round storage rd = _callerRound(t, taskId, round);
        if (rd.commitPos != 0) revert AlreadyCommitted(taskId, round);
        if (rd.isNoArgs) revert ReportedNoArguments(taskId, round);
        if (commitment == bytes32(0)) revert EmptyCommitment(taskId, round);
        _seals[msg.sender] = commitment;
        rd.commitPos = ++t.numCommits;
        emit TaskResultCommitmentSubmitted(taskId, round, msg.sender, commitment);
        _afterCommit(taskId, t);
    }

    /// @notice Instead of a commitment: the task is invalid. Counts as commitment and empty disclosure.
    function reportTaskError(uint256 taskId, uint256 round) external {
        TaskInfo storage t = _runningTask(taskId);
        Round storage rd = _callerRound(t, taskId, round);
        if (rd.commitPos != 0) revert AlreadyCommitted(taskId, round);
        if (rd.isNoArgs) revert ReportedNoArguments(taskId, round);
        rd.isError = true;
        rd.commitPos = ++t.numCommits;
        rd.disclosePos = ++t.numDisclosed;
        emit TaskErrorReported(taskId, round, msg.sender);
        _afterCommit(taskId, t);
        _afterDisclosure(taskId, t, round, "");
        _dispatchQueued();
    }

    /// @notice The arguments never reached this node (a selected node that has not committed, from
    /// `argumentsWait` after the start). The second report aborts the task: each reporting node is paid
    /// `argumentsCompensationBps` of the fee for the time it was held, the rest is refunded, and every
    /// round ends Cancelled scoring as if it had finished in its round position.
    function reportNoArguments(uint256 taskId, uint256 round) external {
        TaskInfo storage t = _runningTask(taskId);
        Round storage rd = _callerRound(t, taskId, round);
        if (rd.commitPos != 0) revert AlreadyCommitted(taskId, round);
        if (rd.isNoArgs) revert AlreadyReportedNoArguments(taskId, round);
        uint256 waitEnds = uint256(t.startedAt) + argumentsWait;
        if (block.timestamp < waitEnds) revert ArgumentsWaitNotPassed(taskId, waitEnds, block.timestamp);
        rd.isNoArgs = true;
        emit TaskNoArgumentsReported(taskId, round, msg.sender);
        uint256 numReports;
        for (uint256 r; r < NUM_ROUNDS; ++r) {
            if (t.rounds[r].isNoArgs) ++numReports;
        }
        if (numReports < 2) return;

        // Two rounds never committed, so nothing was disclosed or decided: every round is Pending.
        _end(taskId, t, false, REASON_NO_ARGUMENTS);
        uint256 amount = (uint256(t.fee) * argumentsCompensationBps) / BPS;
        RoundState[3] memory outcomes;
        uint256[3] memory scores;
        for (uint256 r; r < NUM_ROUNDS; ++r) {
            Round storage open = t.rounds[r];
            outcomes[r] = RoundState.Cancelled;
            scores[r] = 2 * _award(r + 1);
            if (!open.isNoArgs) continue;
            // At most 2 * 30% of the fee (setArgumentsWait): within the balance, nothing was paid yet.
            unchecked {
                t.balance -= uint128(amount);
                _counters.totalEscrowed -= uint112(amount);
            }
            emit TaskNodeCompensated(taskId, open.node, amount);
            _pay(open.node, amount);
        }
        _endOpenRounds(taskId, t, outcomes, scores);
        _dispatchQueued();
    }

    function discloseTaskResult(uint256 taskId, uint256 round, bytes calldata result, bytes32 nonce) external {
        TaskInfo storage t = _runningTask(taskId);
        if (t.status != TaskStatus.CommitmentsReady) revert CommitmentsNotReady(taskId, t.numCommits);
        Round storage rd = _callerRound(t, taskId, round);
        if (rd.disclosePos != 0) revert AlreadyDisclosed(taskId, round);
        if (result.length > MAX_RESULT_BYTES) revert ResultTooLong(result.length, MAX_RESULT_BYTES);
        if (keccak256(abi.encodePacked(result, nonce, msg.sender)) != _seals[msg.sender]) {
            revert CommitmentMismatch(taskId, round);
        }
        _seals[msg.sender] = keccak256(result);
        if (t.taskType == TaskType.SD) _images[msg.sender] = result;
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

    /// @inheritdoc ITask
    function onNodesAvailable() external {
        if (msg.sender != address(node)) revert NotNode(msg.sender);
        _dispatchQueued();
    }

    /// @inheritdoc ITask
    /// @dev The join pays for the slots the node's tasks reuse: a placeholder (which no keccak256 result
    /// can equal) makes every later write 2,900 gas instead of 20,000, so no task pays for a node's first.
    function onNodeJoined(address account) external {
        if (msg.sender != address(node)) revert NotNode(msg.sender);
        if (_seals[account] == 0) _seals[account] = UNWRITTEN_SEAL;
        if (_expected[account] == 0) _expected[account] = UNWRITTEN_SEAL;
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
        TaskInfo storage t = _tasks[taskId];
        Round storage rd = t.rounds[round];
        if (rd.commitPos == 0 || rd.isError || rd.state != RoundState.Pending) return 0;
        return _seals[rd.node];
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

    /// @notice Tasks created, waiting in the queue, running, succeeded and aborted.
    function taskCounts()
        external
        view
        returns (uint256 total, uint256 queued, uint256 running, uint256 succeeded, uint256 aborted)
    {
        Counters memory c = _counters;
        total = c.nextTaskId - 1;
        queued = c.numQueued;
        succeeded = c.numSucceeded;
        aborted = c.numAborted;
        running = total - queued - succeeded - aborted;
    }

    /*//////////////////////////////////////////////////////////////
                          DECISION AND SETTLEMENT
    //////////////////////////////////////////////////////////////*/

    function _afterCommit(uint256 taskId, TaskInfo storage t) internal {
        if (t.numCommits == NUM_ROUNDS) {
            t.status = TaskStatus.CommitmentsReady;
            emit TaskResultCommitmentsReady(taskId);
        }
    }

    /// @dev The decision rules, in disclosure order d1, d2, d3: d1 ~ d2 decides at once; otherwise d3
    /// decides with d1 (checked first: the earlier discloser wins a tie of the non-transitive SD rule) or
    /// d2, or nothing matches ("Task result illegal"). After a decision each later disclosure is
    /// compared with the decided result: a match is settled, a mismatch slashed. `result`: the bytes just
    /// disclosed (empty for an error report).
    function _afterDisclosure(uint256 taskId, TaskInfo storage t, uint256 round, bytes memory result) internal {
        if (t.decision != Decision.None) {
            bool isMatch = _isDecidedMatch(t, t.rounds[round]);
            _endRound(taskId, t, round, isMatch ? RoundState.Settled : RoundState.Slashed, _positionScore(t.rounds[round]));
            return;
        }
        uint256 numDisclosed = t.numDisclosed;
        if (numDisclosed == 2) {
            uint256 first = _roundAt(t, 1);
            if (_isMatch(t, first, round)) _decide(taskId, t, first, round, result);
        } else if (numDisclosed == 3) {
            uint256 first = _roundAt(t, 1);
            uint256 second = _roundAt(t, 2);
            if (_isMatch(t, first, round)) {
                _decide(taskId, t, first, round, result);
                _endRound(taskId, t, second, RoundState.Slashed, _positionScore(t.rounds[second]));
            } else if (_isMatch(t, second, round)) {
                _decide(taskId, t, second, round, result);
                _endRound(taskId, t, first, RoundState.Slashed, _positionScore(t.rounds[first]));
            } else {
                _end(taskId, t, false, REASON_RESULT_ILLEGAL);
                // Nobody is slashed or paid: the rounds end Cancelled with their earned QoS scores and the
                // last one refunds the whole fee.
                for (uint256 r; r < NUM_ROUNDS; ++r) {
                    _endRound(taskId, t, r, RoundState.Cancelled, _positionScore(t.rounds[r]));
                }
            }
        }
    }

    /// @dev `winner` (the earlier discloser of the matching pair) and `partner` (the round that just
    /// disclosed `result`) agree. The decided result is kept for a disclosure still to come: the
    /// winner's seal and images are its node's, reused once the node is released.
    function _decide(uint256 taskId, TaskInfo storage t, uint256 winner, uint256 partner, bytes memory result)
        internal
    {
        t.resultRound = uint8(winner);
        Round storage w = t.rounds[winner];
        // The round still to disclose, if any (exactly one is left when two have disclosed).
        address later = t.numDisclosed < NUM_ROUNDS ? t.rounds[_roundAt(t, 0)].node : address(0);
        if (later != address(0) && t.taskType == TaskType.GPT) _expected[later] = _resultHashOf(w);
        if (w.isError) {
            t.decision = Decision.ErrorReported;
            _end(taskId, t, false, REASON_ERROR_REPORTED);
            _endRound(taskId, t, winner, RoundState.Settled, _positionScore(w));
        } else {
            t.decision = Decision.Success;
            if (t.taskType == TaskType.SD) {
                bytes memory images = _images[w.node];
                if (later != address(0)) _expectedImages[later] = images;
                emit TaskSuccess(taskId, images, w.node);
            } else {
                // GPT results match byte for byte: the partner disclosed the winner's bytes, or reported
                // an error, which matches only an empty result.
                emit TaskSuccess(taskId, result, w.node);
            }
        }
        _endRound(taskId, t, partner, RoundState.Settled, _positionScore(t.rounds[partner]));
    }

    /// @dev Ends one round. Settled: QoS records `taskScore`, the node is paid its share and released.
    /// Slashed: its share goes back to the creator, its QoS history is reset, its stake slashed.
    /// Cancelled: QoS records `taskScore`, nothing is paid. The last round ends the task: the fee left
    /// is refunded and the storage deleted.
    function _endRound(uint256 taskId, TaskInfo storage t, uint256 round, RoundState outcome, uint256 taskScore)
        internal
    {
        Round storage rd = t.rounds[round];
        rd.state = outcome;
        address account = rd.node;
        bool isLast = ++t.numEnded == NUM_ROUNDS;
        if (outcome == RoundState.Slashed) {
            uint256 share = _takeShare(t, taskScore, isLast);
            qos.resetHistory(account);
            node.slash(account);
            emit TaskNodeSlashed(taskId, account);
            _refund(taskId, t.creator, share);
        } else {
            node.finishTask(account, qos.recordTaskScore(account, taskScore));
            if (outcome == RoundState.Settled) {
                uint256 share = _takeShare(t, taskScore, isLast);
                emit TaskNodeSuccess(taskId, account, share);
                _pay(account, share);
            } else {
                emit TaskNodeCancelled(taskId, account);
            }
        }
        if (isLast) {
            uint256 leftover = t.balance;
            address creator = t.creator;
            delete _tasks[taskId];
            _counters.totalEscrowed -= uint112(leftover);
            _refund(taskId, creator, leftover);
        }
    }

    /// @dev fee * taskScore / 50, at most the balance; the last round takes the whole balance (the
    /// rounding remainder, < 3 wei, when the other two were paid by the formula).
    function _takeShare(TaskInfo storage t, uint256 taskScore, bool isLast) internal returns (uint256 share) {
        uint256 balance = t.balance;
        share = isLast ? balance : (uint256(t.fee) * taskScore) / SCORE_DENOMINATOR;
        if (share > balance) share = balance;
        // share <= balance <= totalEscrowed.
        unchecked {
            t.balance = uint128(balance - share);
            _counters.totalEscrowed -= uint112(share);
        }
    }

    /// @dev Two disclosed rounds of an undecided task (both nodes still hold it). An error report counts
    /// as an empty disclosed result (PROTOCOL.md, step 4): it matches another error report and an empty
    /// GPT result; an empty SD result is never valid, so it matches no SD result. GPT results are
    /// compared by their hashes (equal bytes, equal keccak256).
    function _isMatch(TaskInfo storage t, uint256 a, uint256 b) internal view returns (bool) {
        Round storage ra = t.rounds[a];
        Round storage rb = t.rounds[b];
        if (ra.isError && rb.isError) return true;
        if (t.taskType == TaskType.GPT) return _resultHashOf(ra) == _resultHashOf(rb);
        if (ra.isError || rb.isError) return false;
        return _images[ra.node].isSimilarImageHashes(_images[rb.node], distanceThreshold);
    }

    /// @dev A round disclosed after the decision, against the decided result.
    function _isDecidedMatch(TaskInfo storage t, Round storage rd) internal view returns (bool) {
        if (t.taskType == TaskType.GPT) return _resultHashOf(rd) == _expected[rd.node];
        bool isErrorDecided = t.decision == Decision.ErrorReported;
        if (isErrorDecided || rd.isError) return isErrorDecided && rd.isError;
        return _images[rd.node].isSimilarImageHashes(_expectedImages[rd.node], distanceThreshold);
    }

    function _resultHashOf(Round storage rd) internal view returns (bytes32) {
        return rd.isError ? EMPTY_RESULT_HASH : _seals[rd.node];
    }

    /// @dev Ends the rounds still Pending with the given outcomes and scores. The last _endRound deletes
    /// the task: the rounds to end are read before any ends.
    function _endOpenRounds(
        uint256 taskId,
        TaskInfo storage t,
        RoundState[3] memory outcomes,
        uint256[3] memory scores
    ) internal {
        bool[3] memory isOpen;
        for (uint256 r; r < NUM_ROUNDS; ++r) {
            isOpen[r] = t.rounds[r].state == RoundState.Pending;
        }
        for (uint256 r; r < NUM_ROUNDS; ++r) {
            if (isOpen[r]) _endRound(taskId, t, r, outcomes[r], scores[r]);
        }
    }

    /*//////////////////////////////////////////////////////////////
                            START AND QUEUE
    //////////////////////////////////////////////////////////////*/

    /// @dev Selects the task's nodes if the available ones can take it now: false (nothing written) if not.
    function _start(uint256 taskId, TaskInfo storage t, bytes32 taskHash, bytes32 dataHash) internal returns (bool) {
        TaskType taskType = t.taskType;
        address[3] memory selected = node.selectNodes(taskId, taskType, t.vramLimit, taskHash);
        if (selected[0] == address(0)) return false;
        t.status = TaskStatus.Started;
        t.deadline = uint64(block.timestamp + taskTimeout);
        t.startedAt = uint64(block.timestamp);
        address creator = t.creator;
        for (uint256 r; r < NUM_ROUNDS; ++r) {
            t.rounds[r].node = selected[r];
            emit TaskStarted(taskId, taskType, creator, selected[r], taskHash, dataHash, r);
        }
        return true;
    }

    /// @dev Starts queued tasks, highest value first, while the available nodes can take one, at most
    /// MAX_STARTS_PER_CALL: a call's cost never grows with the number of nodes freed or tasks queued.
    function _dispatchQueued() internal {
        for (uint256 i; i < MAX_STARTS_PER_CALL && _counters.numQueued != 0; ++i) {
            uint256 taskId = queue.popRunnable();
            if (taskId == 0) return;
            --_counters.numQueued;
            TaskInfo storage t = _tasks[taskId];
            bytes32 taskHash = t.taskHash;
            bytes32 dataHash = t.dataHash;
            delete t.taskHash;
            delete t.dataHash;
            // popRunnable checked the capacity: the selection finds the nodes.
            if (!_start(taskId, t, taskHash, dataHash)) revert TaskCannotRun(t.taskType, t.vramLimit);
        }
    }

    function _abortQueued(uint256 taskId, string memory reason) internal {
        TaskInfo storage t = _tasks[taskId];
        uint256 amount = t.balance;
        address creator = t.creator;
        delete _tasks[taskId];
        Counters storage c = _counters;
        --c.numQueued;
        ++c.numAborted;
        c.totalEscrowed -= uint112(amount);
        emit TaskAborted(taskId, reason);
        _refund(taskId, creator, amount);
    }

    /*//////////////////////////////////////////////////////////////
                                INTERNALS
    //////////////////////////////////////////////////////////////*/

    /// @dev The running task ended: succeeded, or aborted for `reason`.
    function _end(uint256 taskId, TaskInfo storage t, bool isSuccess, string memory reason) internal {
        t.isEnded = true;
        if (isSuccess) {
            ++_counters.numSucceeded;
        } else {
            ++_counters.numAborted;
            emit TaskAborted(taskId, reason);
        }
    }

    function _refund(uint256 taskId, address creator, uint256 amount) internal {
        if (amount == 0) return;
        emit TaskFeeRefunded(taskId, creator, amount);
        _pay(creator, amount);
    }

    function _runningTask(uint256 taskId) internal view returns (TaskInfo storage t) {
        t = _tasks[taskId];
        if (t.status != TaskStatus.Started && t.status != TaskStatus.CommitmentsReady) {
            revert TaskNotRunning(taskId, t.status);
        }
    }

    function _callerRound(TaskInfo storage t, uint256 taskId, uint256 round) internal view returns (Round storage rd) {
        if (round >= NUM_ROUNDS) revert InvalidRound(round);
        rd = t.rounds[round];
        if (rd.node != msg.sender) revert NotSelectedNode(taskId, round, msg.sender);
    }

    function _isParticipant(TaskInfo storage t, address account) internal view returns (bool) {
        return account == t.creator || account == t.rounds[0].node || account == t.rounds[1].node
            || account == t.rounds[2].node;
    }

    /// @dev The round that disclosed at `position` (1-based); one exists for every position <= numDisclosed.
    function _roundAt(TaskInfo storage t, uint256 position) internal view returns (uint256 r) {
        while (t.rounds[r].disclosePos != position) ++r;
    }

    function _award(uint256 position) internal pure returns (uint256) {
        return (POSITION_AWARDS >> (8 * (NUM_ROUNDS - position))) & 0xff;
    }

    function _positionScore(Round storage rd) internal view returns (uint256) {
        return _award(rd.commitPos) + _award(rd.disclosePos);
    }
}
