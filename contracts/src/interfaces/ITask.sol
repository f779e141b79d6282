// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {TaskType} from "../lib/Types.sol";

/// @title ITask: Task's types, events and errors, and what Node and NetworkStats call on it.
/// @notice The enums' numeric values are part of the protocol: cluster/chain/contracts.py mirrors them
/// (tests/contracts/test_artifacts.py checks), so they must never be reordered. Off-chain code decodes
/// the events and errors by Task's ABI, which these declarations make.
interface ITask {
    /*//////////////////////////////////////////////////////////////
                                 TYPES
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

    /// @dev What an application asks at creation (createTaskWithValidation): three nodes (today's
    /// protocol, the three-node price), or one node audited by two more with probability 1 / auditRate,
    /// the result served at once or only after the task's decision (a relay's rule: the chain keeps it).
    enum Validation {
        Full,
        Sampled,
        SampledResultAfterAudit
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
        uint40 commitBlock; // a sampled task's first round: the block of its commitment (the draw's base)
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
        uint16 auditRate; // 0: Full validation (three rounds from the start); N >= 2: sampled, 1 in N audited
        bool isAudited; // a sampled task whose audit started: rounds 1 and 2 hold its auditors
        bool resultAfterAudit; // Validation.SampledResultAfterAudit
        uint128 fee;
        uint128 balance;
        uint64 vramLimit;
        uint64 cap;
        uint64 deadline; // start + taskTimeout, moved by TaskDeadlineMoved
        uint64 startedAt; // while queued: when it was queued (its rent runs from then)
        /// Kept only while the task waits in the queue (its start needs them); TaskPending and
        /// TaskStarted carry them. A task that starts at once never stores them.
        bytes32 taskHash;
        bytes32 dataHash;
        Round[3] rounds;
    }

    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    event Wired(address node, address qos, address queue);
    event TaskTimeoutSet(uint256 taskTimeout);
    event DistanceThresholdSet(uint256 distanceThreshold);
    event MinTaskFeeSet(uint256 minTaskFee);
    event ArgumentsWaitSet(uint256 argumentsWait, uint256 compensationBps);
    event ResponseWindowSet(uint256 responseWindow);
    event QueueRentSet(uint256 bpsPerHour);
    event RelaySignerSet(address relaySigner);

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
    /// @notice The task's deadline moved: a step its nodes could not foresee (the last commitment, the
    /// success, the second "no arguments" report) leaves the next step a full `responseWindow`.
    event TaskDeadlineMoved(uint256 indexed taskId, uint256 deadline);
    /// @notice The task paid the treasury for the time it held a place in the queue.
    event QueueRentPaid(uint256 indexed taskId, address indexed treasury, uint256 amount);
    /// @notice The relay's receipt shows the arguments were stored: the "no arguments" reports were false.
    event TaskNoArgumentsRefuted(uint256 indexed taskId, uint256 storedAt);
    /// @notice Tasks created afterwards with Validation.Sampled are audited with probability 1 / auditRate.
    event AuditRateSet(uint256 auditRate);
    /// @notice The task goes to one node; `auditRate` is its own (a later change does not touch it).
    event TaskSampled(uint256 indexed taskId, uint256 auditRate, bool resultAfterAudit);
    /// @notice The draw was read (at the disclosure or startAudit): the premium went to the audit pool.
    event TaskAuditDrawn(uint256 indexed taskId, bool isAudited);
    /// @notice Rounds 1 and 2 (TaskStarted, with zero hashes: TaskPending has them) audit round 0.
    event TaskAuditStarted(uint256 indexed taskId, address firstNode, address auditor1, address auditor2);
    event AuditPoolFunded(address indexed from, uint256 amount);
    event AuditPoolWithdrawn(address indexed to, uint256 amount);

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
    /// @dev Commitments, error reports and "no arguments" reports are taken until the deadline only.
    error DeadlinePassed(uint256 taskId, uint256 deadline, uint256 timestamp);
    /// @dev The response window must be in 1 s .. 2**32 s.
    error InvalidResponseWindow(uint256 responseWindow);
    /// @dev The queue rent must be at most 100,000 basis points of the fee per hour.
    error InvalidQueueRent(uint256 bpsPerHour);
    /// @dev The receipt is not signed by `relaySigner` (or no relay signer is set).
    error InvalidReceipt(uint256 taskId);
    /// @dev The receipt says the arguments were stored later than half the arguments wait after the start.
    error ReceiptTooLate(uint256 taskId, uint256 storedAt, uint256 latest);
    /// @dev No round of the task reported its arguments missing.
    error NothingToRefute(uint256 taskId);
    /// @dev The audit rate must be in 1..65,535 (1: every task is validated by three nodes).
    error InvalidAuditRate(uint256 auditRate);
    /// @dev validation must be 0 (Full), 1 (Sampled) or 2 (SampledResultAfterAudit).
    error InvalidValidation(uint256 validation);
    /// @dev The draw reads the hash of the block after the commitment's: it exists from `drawableAt` on.
    error AuditNotDrawn(uint256 taskId, uint256 drawableAt);
    /// @dev The draw audits this task: its first node discloses only once the auditors committed.
    error TaskAudited(uint256 taskId);
    /// @dev startAudit needs a sampled task whose node committed, drawn for an audit not started yet.
    error TaskNotAudited(uint256 taskId);
    /// @dev The available nodes cannot audit the task now: startAudit again once nodes are free.
    error AuditNodesUnavailable(uint256 taskId);
    /// @dev The audit pool cannot pay the audit's two runs: the owner funds it (fundAuditPool).
    error AuditPoolTooLow(uint256 auditPool, uint256 needed);
    /// @dev A sampled task's run pay must be at most nodeStake / (2 * auditRate): ask Full validation.
    error SampledFeeTooHigh(uint256 runPay, uint256 maxRunPay);
    /// @dev A sampled task's first round seals an error as a commitment to the empty result.
    error SampledErrorMustBeSealed(uint256 taskId);

    /*//////////////////////////////////////////////////////////////
                       CALLED BY NODE AND NETWORKSTATS
    //////////////////////////////////////////////////////////////*/

    /// @notice A node of `gpuVramGB` resumed: start the queued tasks the available nodes can take.
    function onNodesAvailable(uint256 gpuVramGB) external;

    /// @notice A node of `gpuVramGB` joined (and is available): writes its seal slots once, then as
    /// onNodesAvailable.
    function onNodeJoined(address node, uint256 gpuVramGB) external;

    /// @notice Tasks created, waiting in the queue, running, succeeded and aborted.
    function taskCounts()
        external
        view
        returns (uint256 total, uint256 queued, uint256 running, uint256 succeeded, uint256 aborted);
}
