// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Owned} from "./lib/Owned.sol";
import {ArgumentsReceipt} from "./lib/ArgumentsReceipt.sol";
import {ITask} from "./interfaces/ITask.sol";

/// @title TaskSettings: the Task contract's owner-settable numbers, with their bounds.
/// @notice Each setter applies to what happens afterwards (a task started later, a report made later);
/// none changes what was already decided. The defaults are PROTOCOL.md's, and the project's decisions
/// where it is silent (docs/protocol-decisions.md, docs/contracts.md "Owner-settable numbers").
/// Invariant: every number is within the bounds its setter checks.
abstract contract TaskSettings is Owned, ITask {
    /*//////////////////////////////////////////////////////////////
                                CONSTANTS
    //////////////////////////////////////////////////////////////*/

    uint256 public constant MAX_DISTANCE_THRESHOLD = 64;
    uint256 public constant MAX_COMPENSATION_BPS = 3_000;
    uint256 public constant MAX_QUEUE_RENT_BPS_PER_HOUR = 100_000;
    uint256 internal constant BPS = 10_000;
    /// @notice The audit pool's drift: a sampled task's premium is 2 (1 + margin) / N of its run pay, the
    /// audits' expected cost 2 / N (docs/protocol-decisions.md, "Sampled audits", 2).
    uint256 public constant AUDIT_MARGIN_BPS = 1_000;

    /// @dev The EIP-712 domain of the relay's receipts: this contract on this chain.
    bytes32 internal immutable _receiptDomain;

    /*//////////////////////////////////////////////////////////////
                                 STORAGE
    //////////////////////////////////////////////////////////////*/

    uint256 public taskTimeout = 15 minutes;
    /// @notice SD results match when every pair of image hashes differs in fewer bits.
    uint256 public distanceThreshold = 5;
    /// @notice The smallest fee a task may pay.
    uint256 public minTaskFee = 0.001 ether;
    /// @notice Seconds after a task's start from which its nodes may report its arguments missing, and
    /// what each reporting node is paid when the reports stand, in basis points of the fee.
    uint256 public argumentsWait = 2 minutes;
    uint256 public argumentsCompensationBps = 1_000;
    /// @notice The least time a step the nodes could not foresee leaves the next one: to disclose once
    /// the last commitment came, to upload once the task succeeded, to refute "no arguments" reports.
    uint256 public responseWindow = 2 minutes;
    /// @notice What a queued task pays the treasury for its place, in basis points of its fee per hour
    /// in the queue, however it leaves it (started, cancelled, evicted).
    uint256 public queueRentBpsPerHour = 1_000;
    /// @notice The relay's signing address: its receipts refute false "no arguments" reports (none: 0).
    address public relaySigner;
    /// @notice N: a sampled task is audited with probability 1 / N; 1 = every task has three nodes.
    uint256 public auditRate = 1;

    constructor() {
        _receiptDomain = ArgumentsReceipt.domainSeparator(address(this));
    }

    /*//////////////////////////////////////////////////////////////
                                 SETTERS
    //////////////////////////////////////////////////////////////*/

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
        if (argumentsWait_ >= taskTimeout || compensationBps_ > MAX_COMPENSATION_BPS) {
            revert InvalidArgumentsWait(argumentsWait_, compensationBps_);
        }
        argumentsWait = argumentsWait_;
        argumentsCompensationBps = compensationBps_;
        emit ArgumentsWaitSet(argumentsWait_, compensationBps_);
    }

    /// @notice Applies to the steps taken afterwards.
    function setResponseWindow(uint256 responseWindow_) external onlyOwner {
        if (responseWindow_ == 0 || responseWindow_ > type(uint32).max) revert InvalidResponseWindow(responseWindow_);
        responseWindow = responseWindow_;
        emit ResponseWindowSet(responseWindow_);
    }

    /// @notice Applies to tasks leaving the queue afterwards, for their whole time in it.
    function setQueueRent(uint256 bpsPerHour) external onlyOwner {
        if (bpsPerHour > MAX_QUEUE_RENT_BPS_PER_HOUR) revert InvalidQueueRent(bpsPerHour);
        queueRentBpsPerHour = bpsPerHour;
        emit QueueRentSet(bpsPerHour);
    }

    /// @notice Applies to tasks created afterwards; 1 turns sampling off (every task Full).
    function setAuditRate(uint256 auditRate_) external onlyOwner {
        if (auditRate_ == 0 || auditRate_ > type(uint16).max) revert InvalidAuditRate(auditRate_);
        auditRate = auditRate_;
        emit AuditRateSet(auditRate_);
    }

    /// @notice The relay's signing key (its address); the zero address: no receipt refutes anything.
    function setRelaySigner(address relaySigner_) external onlyOwner {
        relaySigner = relaySigner_;
        emit RelaySignerSet(relaySigner_);
    }

    /// @notice The EIP-712 domain separator of the relay's receipts (lib/ArgumentsReceipt.sol).
    function receiptDomainSeparator() external view returns (bytes32) {
        return _receiptDomain;
    }
}
