// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Owned} from "./lib/Owned.sol";
import {Payouts} from "./lib/Payouts.sol";
import {TaskType} from "./lib/Types.sol";
import {INode} from "./interfaces/INode.sol";
import {IQoS} from "./interfaces/IQoS.sol";
import {ITask} from "./interfaces/ITask.sol";
import {ITaskQueue} from "./interfaces/ITaskQueue.sol";
import {TaskArguments} from "./TaskArguments.sol";

/// @title TaskCore: Task's storage and the internals that Task and TaskAudits (run by Task's delegatecall,
/// in Task's storage) share. Task (Task.sol) states the contract's invariants; this holds no entry point.
/// @dev Neither Task nor TaskAudits declares storage of its own: the layout is this contract's, so that
/// a delegatecall from Task to TaskAudits reads and writes Task's tasks, pool and counters.
abstract contract TaskCore is Payouts, TaskArguments {
    /*//////////////////////////////////////////////////////////////
                                CONSTANTS
    //////////////////////////////////////////////////////////////*/

    /// @notice Each of the two orders hands out 10 + 9 + 6 (TaskSeals.POSITION_AWARDS): the three task
    /// scores always sum to 50.
    uint256 public constant SCORE_DENOMINATOR = 50;

    string public constant REASON_RESULT_ILLEGAL = "Task result illegal";
    string public constant REASON_ERROR_REPORTED = "Task error reported";
    string public constant REASON_CANCELLED = "Task Cancelled";
    string public constant REASON_FEE_TOO_LOW = "Task fee is too low";
    /// @notice At most this many queued tasks start in one call; `dispatchQueued` starts more.
    uint256 public constant MAX_STARTS_PER_CALL = 2;
    uint256 internal constant NO_FLOOR = type(uint256).max;

    /*//////////////////////////////////////////////////////////////
                                 STORAGE
    //////////////////////////////////////////////////////////////*/

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

    Counters internal _counters = Counters({
        nextTaskId: 1, numQueued: 0, numSucceeded: 0, numAborted: 0, totalEscrowed: 0
    });
    mapping(uint256 => TaskInfo) internal _tasks;
    /// @dev The lowest vramLimit among the queued tasks, as TaskQueue last reported it: a node with less
    /// VRAM becoming available cannot make a queued task runnable, so the queue is not asked.
    uint256 internal _queueFloor = NO_FLOOR;
    /// @dev The largest VRAM of a node that this transaction made available (0: none yet).
    uint256 internal transient _freedVram;
    /// @notice What pays audits: sampled tasks' premiums, the owner's funding, slashed auditors' pay.
    uint256 public auditPool;

    constructor(address initialOwner) Owned(initialOwner) {}

    /// @dev `rate`: 0 for Full validation, else the sampled task's audit rate.
    function _create(
        uint8 taskType,
        bytes32 taskHash,
        bytes32 dataHash,
        uint256 vramLimit,
        uint256 cap,
        uint256 rate,
        bool resultAfterAudit
    ) internal returns (uint256 taskId) {
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
        uint256 queueValue = msg.value;
        if (rate != 0) queueValue = _sampledTerms(taskId, t, rate, resultAfterAudit);

        if (_start(taskId, t, taskHash, dataHash)) {
            _counters = c;
            return taskId;
        }
        if (!node.canEverRun(TaskType(taskType), vramLimit)) revert TaskCannotRun(TaskType(taskType), vramLimit);
        t.taskHash = taskHash;
        if (dataHash != 0) t.dataHash = dataHash; // reserved, zero today: no write
        t.status = TaskStatus.Queued;
        t.startedAt = uint64(block.timestamp); // while queued: when it was queued (its rent runs from it)
        ++c.numQueued;
        _counters = c;
        uint256 evictedTaskId;
        (evictedTaskId, _queueFloor) = queue.push(taskId, TaskType(taskType), vramLimit, cap, queueValue);
        if (evictedTaskId != 0) _abortQueued(evictedTaskId, REASON_FEE_TOO_LOW);
    }

    /*//////////////////////////////////////////////////////////////
                           ITASK (NODE, STATS)
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc ITask
    function onNodesAvailable(uint256 gpuVramGB) external {
        if (msg.sender != address(node)) revert NotNode(msg.sender);
        _freedVram = gpuVramGB;
        _dispatchQueued();
    }

    /// @inheritdoc ITask
    /// @dev The join pays for the seal slots the node's tasks reuse (TaskSeals._writeSealSlots).
    function onNodeJoined(address account, uint256 gpuVramGB) external {
        if (msg.sender != address(node)) revert NotNode(msg.sender);
        _writeSealSlots(account);
        _freedVram = gpuVramGB;
        _dispatchQueued();
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
                               SETTLEMENT
    //////////////////////////////////////////////////////////////*/

    /// @dev Ends one round. Settled: QoS records `taskScore`, the node is paid its share and released.
    /// Slashed: its share goes back to the creator, its QoS history is reset, its stake slashed.
    /// Cancelled: QoS records `taskScore`, nothing is paid. The last round ends the task: the fee left
    /// is refunded and the storage deleted.
    function _endRound(uint256 taskId, TaskInfo storage t, uint256 round, RoundState outcome, uint256 taskScore)
        internal
        override
    {
        Round storage rd = t.rounds[round];
        rd.state = outcome;
        address account = rd.node;
        bool isLast = ++t.numEnded == _numRounds(t);
        // An auditor's pay came from the pool: unpaid, it goes back there.
        bool isAuditor = round != 0 && t.auditRate != 0;
        if (outcome == RoundState.Slashed) {
            uint256 share = _takeShare(t, taskScore, isLast);
            qos.resetHistory(account);
            node.slash(account);
            emit TaskNodeSlashed(taskId, account);
            if (isAuditor) {
                auditPool += share;
            } else {
                _refund(taskId, t.creator, share);
                // An audit showed the first node wrong: the premium is refunded too.
                if (t.isAudited) _refund(taskId, t.creator, _takeFromPool(_premium(t.fee, t.auditRate)));
            }
        } else {
            uint256 availableVram = node.finishTask(account, qos.recordTaskScore(account, taskScore));
            if (availableVram > _freedVram) _freedVram = availableVram;
            if (outcome == RoundState.Settled) {
                uint256 share = _takeShare(t, taskScore, isLast);
                emit TaskNodeSuccess(taskId, account, share);
                _pay(account, share);
            } else {
                emit TaskNodeCancelled(taskId, account);
                if (isAuditor) auditPool += _takeShare(t, 0, false);
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
    /// A sampled task's round (the first node, an auditor) takes one run's pay, fee less premium.
    function _takeShare(TaskInfo storage t, uint256 taskScore, bool isLast) internal returns (uint256) {
        uint256 rate = t.auditRate;
        if (rate != 0) return _takeFromBalance(t, t.fee - _premium(t.fee, rate));
        return _takeFromBalance(t, isLast ? t.balance : (uint256(t.fee) * taskScore) / SCORE_DENOMINATOR);
    }

    /// @dev Takes `amount` from the task's balance, at most the balance; returns what it took.
    function _takeFromBalance(TaskInfo storage t, uint256 amount) internal returns (uint256) {
        uint256 balance = t.balance;
        if (amount > balance) amount = balance;
        // amount <= balance <= totalEscrowed.
        unchecked {
            t.balance = uint128(balance - amount);
            _counters.totalEscrowed -= uint112(amount);
        }
        return amount;
    }

    /// @dev Takes `amount` from the audit pool, at most the pool; returns what it took.
    function _takeFromPool(uint256 amount) internal returns (uint256) {
        uint256 pool = auditPool;
        if (amount > pool) amount = pool;
        auditPool = pool - amount;
        return amount;
    }

    /// @dev The decision aborts the task: two error reports matched, or no two of three disclosures did.
    function _abortAtDecision(uint256 taskId, TaskInfo storage t, bool isErrorReported) internal override {
        _end(taskId, t, false, isErrorReported ? REASON_ERROR_REPORTED : REASON_RESULT_ILLEGAL);
    }

    /// @dev argumentsCompensationBps of the fee (at most 3 * 30%: within the balance, which only rent has
    /// touched before any compensation; clamped to it all the same).
    function _compensate(uint256 taskId, TaskInfo storage t, address account) internal override {
        uint256 amount = _takeFromBalance(t, (uint256(t.fee) * argumentsCompensationBps) / BPS);
        emit TaskNodeCompensated(taskId, account, amount);
        _pay(account, amount);
    }

    /// @dev What a queued task owes the treasury for its time in the queue, taken from its fee (so the
    /// shares of the nodes that run it are of the fee less the rent) and paid at once.
    function _chargeQueueRent(uint256 taskId, TaskInfo storage t) internal {
        // fee < 2**96, seconds < 2**64, rate <= 100,000: the product fits.
        uint256 rent = (uint256(t.fee) * (block.timestamp - t.startedAt) * queueRentBpsPerHour) / (BPS * 1 hours);
        if (rent == 0) return;
        rent = _takeFromBalance(t, rent);
        t.fee -= uint128(rent); // rent <= balance == fee: nothing else was taken from a queued task
        address treasury = owner;
        emit QueueRentPaid(taskId, treasury, rent);
        _pay(treasury, rent);
    }


    /*//////////////////////////////////////////////////////////////
                            START AND QUEUE
    //////////////////////////////////////////////////////////////*/

    /// @dev Selects the task's nodes if the available ones can take it now: false (nothing written) if not.
    function _start(uint256 taskId, TaskInfo storage t, bytes32 taskHash, bytes32 dataHash) internal returns (bool) {
        TaskType taskType = t.taskType;
        bool isSampled = t.auditRate != 0;
        address[3] memory selected =
            node.selectNodesFor(taskId, taskType, t.vramLimit, taskHash, isSampled ? 1 : NUM_ROUNDS, address(0));
        if (selected[0] == address(0)) return false;
        t.status = TaskStatus.Started;
        t.deadline = uint64(block.timestamp + taskTimeout);
        t.startedAt = uint64(block.timestamp);
        address creator = t.creator;
        uint256 numRounds = isSampled ? 1 : NUM_ROUNDS;
        for (uint256 r; r < numRounds; ++r) {
            t.rounds[r].node = selected[r];
            emit TaskStarted(taskId, taskType, creator, selected[r], taskHash, dataHash, r);
        }
        return true;
    }

    /// @dev Starts queued tasks, highest value first, while the available nodes can take one, at most
    /// MAX_STARTS_PER_CALL: a call's cost never grows with the number of nodes freed or tasks queued.
    /// Only when this transaction made a node available with VRAM at least the queue's floor: a smaller
    /// one cannot have made a queued task runnable (every other was not runnable when it was queued, or
    /// when the last node was freed), so tasks no available node could run cost the call nothing.
    function _dispatchQueued() internal override {
        uint256 freedVram = _freedVram;
        if (freedVram == 0) return;
        _freedVram = 0;
        // The counters' slot is warm (a round's end wrote the escrow); the floor's is read only when
        // something is queued.
        if (_counters.numQueued == 0 || freedVram < _queueFloor) return;
        for (uint256 i; i < MAX_STARTS_PER_CALL && _counters.numQueued != 0; ++i) {
            uint256 taskId;
            (taskId, _queueFloor) = queue.popRunnable();
            if (taskId == 0) return;
            --_counters.numQueued;
            TaskInfo storage t = _tasks[taskId];
            _chargeQueueRent(taskId, t);
            bytes32 taskHash = t.taskHash;
            bytes32 dataHash = t.dataHash;
            delete t.taskHash;
            delete t.dataHash;
            // popRunnable checked the capacity: the selection finds the nodes.
            if (!_start(taskId, t, taskHash, dataHash)) revert TaskCannotRun(t.taskType, t.vramLimit);
        }
    }

    /// @dev A queued task leaves the queue without starting (cancelled, evicted): it pays its rent, the
    /// rest is refunded.
    function _abortQueued(uint256 taskId, string memory reason) internal {
        TaskInfo storage t = _tasks[taskId];
        _chargeQueueRent(taskId, t);
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
                             SAMPLED AUDITS
    //////////////////////////////////////////////////////////////*/

    /// @dev The premium of a sampled task's fee: fee * 2 (1 + m) / (N + 2 (1 + m)), so that the run pay
    /// (fee less premium) times 2 (1 + m) / N is the premium. fee < 2**96: no overflow.
    function _premium(uint256 fee, uint256 rate) internal pure returns (uint256) {
        uint256 twiceMargin = 2 * (BPS + AUDIT_MARGIN_BPS);
        return (fee * twiceMargin) / (rate * BPS + twiceMargin);
    }

    /// @dev A sampled task's terms at creation (TaskAudits: createTaskWithValidation): returns the value
    /// the queue ranks it by.
    function _sampledTerms(uint256 taskId, TaskInfo storage t, uint256 rate, bool resultAfterAudit)
        internal
        virtual
        returns (uint256 queueValue);

    /*//////////////////////////////////////////////////////////////
                                INTERNALS
    //////////////////////////////////////////////////////////////*/

    /// @dev The running task ended: succeeded, or aborted for `reason`.
    function _end(uint256 taskId, TaskInfo storage t, bool isSuccess, string memory reason) internal override {
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

    function _runningTask(uint256 taskId) internal view override returns (TaskInfo storage t) {
        t = _tasks[taskId];
        if (t.status != TaskStatus.Started && t.status != TaskStatus.CommitmentsReady) {
            revert TaskNotRunning(taskId, t.status);
        }
    }

    function _isParticipant(TaskInfo storage t, address account) internal view returns (bool) {
        return account == t.creator || account == t.rounds[0].node || account == t.rounds[1].node
            || account == t.rounds[2].node;
    }
}
