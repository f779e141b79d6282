// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {TaskType} from "./lib/Types.sol";
import {TaskCore} from "./TaskCore.sol";

/// @title TaskAudits: the steps of sampled tasks that Task runs by delegatecall, in Task's storage.
/// @notice A sampled task (createTaskWithValidation, auditRate N > 1) goes to one node. Its node commits;
/// the draw, keccak256(blockhash(c + 1), taskId) % N == 0 with c the commitment's block, is read from
/// block c + 2 on (at the node's disclosure, startAudit or a cancel): not audited, the disclosure pays
/// the node and ends the task; audited, two more nodes run the task as rounds 1 and 2 and the three
/// results are compared as a Full task's (TaskSeals), the audit's two runs paid from the audit pool
/// (docs/protocol-decisions.md, "Sampled audits"). Called directly (not through Task), this contract
/// works on its own empty storage and holds nothing.
/// Invariant (with Task's): `address(Task).balance >= totalEscrowed + totalCredits + auditPool`.
contract TaskAudits is TaskCore {
    constructor(address initialOwner) TaskCore(initialOwner) {}

    /*//////////////////////////////////////////////////////////////
                              APPLICATIONS
    //////////////////////////////////////////////////////////////*/

    /// @notice createTask with the validation chosen: Full is createTask; Sampled (with auditRate > 1)
    /// gives the task to one node, audited by two more with probability 1 / auditRate, for a fee that
    /// pays one run and the premium 2 (1 + AUDIT_MARGIN_BPS / BPS) / auditRate of it to the audit pool.
    function createTaskWithValidation(
        uint8 taskType,
        bytes32 taskHash,
        bytes32 dataHash,
        uint256 vramLimit,
        uint256 cap,
        uint8 validation
    ) external payable returns (uint256 taskId) {
        if (validation > uint8(Validation.SampledResultAfterAudit)) revert InvalidValidation(validation);
        uint256 rate = validation == uint8(Validation.Full) ? 1 : auditRate;
        return _create(taskType, taskHash, dataHash, vramLimit, cap, rate == 1 ? 0 : rate, validation == 2);
    }

    /// @notice Starts the audit of a sampled task whose draw says audited (anyone, from the block after
    /// the draw's): the premium goes to the audit pool, which moves the audit's two runs into the task;
    /// two more nodes (GPT: of the first node's card model) become rounds 1 and 2 and the task gets a
    /// fresh deadline. The first node keeps holding the task (its stake stays locked) until it ends.
    function startAudit(uint256 taskId) external {
        TaskInfo storage t = _tasks[taskId];
        if (_numRounds(t) != 1 || t.status != TaskStatus.CommitmentsReady || !_isDrawnAudited(taskId, t)) {
            revert TaskNotAudited(taskId);
        }
        _startAudit(taskId, t);
    }

    /// @notice Adds msg.value to the audit pool (its reserve: docs/protocol-decisions.md, "Sampled audits").
    function fundAuditPool() external payable {
        auditPool += msg.value;
        emit AuditPoolFunded(msg.sender, msg.value);
    }

    /// @notice The owner takes `amount` of the audit pool (what exceeds the reserve it wants).
    function withdrawAuditPool(uint256 amount) external onlyOwner {
        auditPool -= amount;
        emit AuditPoolWithdrawn(msg.sender, amount);
        _pay(msg.sender, amount);
    }

    /*//////////////////////////////////////////////////////////////
                       ROUTED BY TASK (SAMPLED, ALONE)
    //////////////////////////////////////////////////////////////*/

    /// @notice Task.discloseTaskResult of a sampled task's lone node (Task checked the round, the caller,
    /// the status): the draw must be readable and say "not audited".
    function discloseTaskResult(uint256 taskId, uint256 round, bytes calldata result, bytes32 nonce) external {
        TaskInfo storage t = _tasks[taskId];
        _discloseAlone(taskId, t, t.rounds[round], result, nonce);
    }

    /// @notice Task.cancelTask of a sampled task whose node committed and did not disclose by the deadline
    /// (Task checked the caller and the deadline): audited, the audit starts (waiting never escapes it);
    /// not audited, the node withheld a result it could disclose and is slashed.
    function cancelTask(uint256 taskId) external {
        TaskInfo storage t = _tasks[taskId];
        if (_isDrawnAudited(taskId, t)) return _startAudit(taskId, t);
        _end(taskId, t, false, REASON_CANCELLED);
        _endAfterDeadline(taskId, t, TaskStatus.CommitmentsReady);
        _dispatchQueued();
    }

    /*//////////////////////////////////////////////////////////////
                                  VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @notice A sampled task's draw: whether it can be read yet (its node committed and the block after
    /// the commitment's exists) and whether it audits the task (true once its audit started).
    function auditDraw(uint256 taskId) external view returns (bool isDrawn, bool isAudited) {
        TaskInfo storage t = _tasks[taskId];
        if (t.isAudited) return (true, true);
        if (t.auditRate == 0 || t.rounds[0].commitPos == 0) return (false, false);
        return _draw(taskId, t);
    }

    /*//////////////////////////////////////////////////////////////
                                INTERNALS
    //////////////////////////////////////////////////////////////*/

    /// @dev Stores the task's sampling and checks the stake bound: a run pay above nodeStake / (2 N) would
    /// make garbage pay for a node that escapes half of its audits (docs/protocol-decisions.md, "Sampled
    /// audits", 10).
    function _sampledTerms(uint256 taskId, TaskInfo storage t, uint256 rate, bool resultAfterAudit)
        internal
        override
        returns (uint256 queueValue)
    {
        t.auditRate = uint16(rate);
        t.resultAfterAudit = resultAfterAudit;
        uint256 runPay = msg.value - _premium(msg.value, rate);
        uint256 maxRunPay = node.nodeStake() / (2 * rate);
        if (runPay > maxRunPay) revert SampledFeeTooHigh(runPay, maxRunPay);
        emit TaskSampled(taskId, rate, resultAfterAudit);
        // The queue ranks by value per node held: a sampled task holds one node for its run pay.
        return 3 * runPay;
    }

    /// @dev Whether the sampled task's draw (readable: its node committed) audits it; reverts before the
    /// block after the commitment's exists.
    function _isDrawnAudited(uint256 taskId, TaskInfo storage t) internal view returns (bool) {
        (bool isDrawn, bool isAudited) = _draw(taskId, t);
        if (!isDrawn) revert AuditNotDrawn(taskId, uint256(t.rounds[0].commitBlock) + 2);
        return isAudited;
    }

    /// @dev keccak256(blockhash(c + 1), taskId) % N == 0, c the commitment's block: a hash that did not
    /// exist when the commitment was sent. A zero hash (older than 256 blocks) audits: waiting for it
    /// never helps the node, which alone controls when the draw is read (docs/protocol-decisions.md).
    function _draw(uint256 taskId, TaskInfo storage t) internal view returns (bool isDrawn, bool isAudited) {
        uint256 next = uint256(t.rounds[0].commitBlock) + 1;
        if (block.number <= next) return (false, false);
        bytes32 hash = blockhash(next);
        return (true, hash == 0 || uint256(keccak256(abi.encode(hash, taskId))) % t.auditRate == 0);
    }

    /// @dev The lone node discloses a task the draw does not audit: the premium goes to the pool, the
    /// task ends (an empty result is its sealed error report) and the node is paid its run.
    function _discloseAlone(uint256 taskId, TaskInfo storage t, Round storage rd, bytes calldata result, bytes32 nonce)
        internal
    {
        _checkSeal(taskId, 0, result, nonce);
        if (_isDrawnAudited(taskId, t)) revert TaskAudited(taskId);
        emit TaskAuditDrawn(taskId, false);
        auditPool += _takeFromBalance(t, _premium(t.fee, t.auditRate));
        rd.disclosePos = ++t.numDisclosed;
        emit TaskResultDisclosed(taskId, 0, msg.sender, result);
        if (result.length == 0) {
            _end(taskId, t, false, REASON_ERROR_REPORTED);
        } else {
            emit TaskSuccess(taskId, result, msg.sender);
            emit TaskResultUploaded(taskId);
            _end(taskId, t, true, "");
        }
        _endRound(taskId, t, 0, RoundState.Settled, _positionScore(rd));
        _dispatchQueued();
    }

    /// @dev The draw audits the task: see startAudit.
    function _startAudit(uint256 taskId, TaskInfo storage t) internal {
        uint256 premium = _premium(t.fee, t.auditRate);
        uint256 runPay = t.fee - premium;
        uint256 pool = auditPool + _takeFromBalance(t, premium);
        emit TaskAuditDrawn(taskId, true);
        uint256 auditCost = 2 * runPay;
        if (pool < auditCost) revert AuditPoolTooLow(pool, auditCost);
        address first = t.rounds[0].node;
        TaskType taskType = t.taskType;
        address[3] memory selected =
            node.selectNodesFor(taskId, taskType, t.vramLimit, bytes32(taskId), 2, first);
        if (selected[0] == address(0)) revert AuditNodesUnavailable(taskId);
        auditPool = pool - auditCost;
        // auditCost < 2**97 and the escrow holds fees < 2**96 each: no overflow of 112 / 128 bits.
        t.balance += uint128(auditCost);
        _counters.totalEscrowed += uint112(auditCost);
        t.isAudited = true;
        t.status = TaskStatus.Started;
        t.startedAt = uint64(block.timestamp);
        _moveDeadline(taskId, t, block.timestamp + taskTimeout);
        for (uint256 i; i < 2; ++i) {
            t.rounds[i + 1].node = selected[i];
            emit TaskStarted(taskId, taskType, t.creator, selected[i], 0, 0, i + 1);
        }
        emit TaskAuditStarted(taskId, first, selected[0], selected[1]);
    }
}
