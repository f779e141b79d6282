// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Owned} from "./lib/Owned.sol";
import {IQoS} from "./interfaces/IQoS.sol";

/// @title QoS: each node's quality of service, from the scores of the tasks it ran.
/// @notice A task score is the sum of the node's two position awards [10, 9, 6] (commit order and
/// disclosure order), so at most 20. A node's QoS score is the lifetime average of its task scores
/// (a node without history scores 20) and is its weight in the random selection (0 counts as 1).
/// Kick-out: after each task the last 3 task scores, missing ones counted as 20, are summed; a sum
/// <= `kickoutThreshold` kicks the node out.
/// Invariants: `numRecent <= 3`; every recorded score is <= 20, so `totalScore <= 20 * numTasks`;
/// only Task writes histories.
contract QoS is Owned, IQoS {
    /*//////////////////////////////////////////////////////////////
                                CONSTANTS
    //////////////////////////////////////////////////////////////*/

    uint256 public constant TASK_SCORE_LIMIT = 20;
    uint256 public constant NEW_NODE_SCORE = 20;
    uint256 public constant RECENT_WINDOW = 3;

    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    event Wired(address task);
    event KickoutThresholdSet(uint256 kickoutThreshold);
    event TaskScoreRecorded(address indexed node, uint256 taskScore, uint256 qosScore);
    event KickOutTriggered(address indexed node, uint256 recentScoreSum, uint256 kickoutThreshold);
    event HistoryReset(address indexed node);

    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @dev Only the Task contract records scores.
    error NotTask(address caller);
    /// @dev `wire` was already called: the wiring is set once.
    error AlreadyWired();
    /// @dev A task score above the sum of the two best position awards.
    error TaskScoreTooHigh(uint256 taskScore, uint256 limit);
    /// @dev A threshold that a node with perfect recent scores would already reach.
    error KickoutThresholdTooHigh(uint256 kickoutThreshold, uint256 maxThreshold);

    /*//////////////////////////////////////////////////////////////
                                 STORAGE
    //////////////////////////////////////////////////////////////*/

    /// @dev One slot per node. `recent` holds the last `numRecent` task scores, newest in the low byte.
    struct History {
        uint64 totalScore;
        uint64 numTasks;
        uint8 numRecent;
        uint24 recent;
    }

    address public task;
    uint256 public kickoutThreshold = 20;
    mapping(address => History) public histories;

    modifier onlyTask() {
        if (msg.sender != task) revert NotTask(msg.sender);
        _;
    }

    constructor(address initialOwner) Owned(initialOwner) {}

    /*//////////////////////////////////////////////////////////////
                                 WIRING
    //////////////////////////////////////////////////////////////*/

    function wire(address task_) external onlyOwner {
        if (task != address(0)) revert AlreadyWired();
        if (task_ == address(0)) revert ZeroAddress();
        task = task_;
        emit Wired(task_);
    }

    function setKickoutThreshold(uint256 kickoutThreshold_) external onlyOwner {
        uint256 maxThreshold = RECENT_WINDOW * TASK_SCORE_LIMIT - 1;
        if (kickoutThreshold_ > maxThreshold) revert KickoutThresholdTooHigh(kickoutThreshold_, maxThreshold);
        kickoutThreshold = kickoutThreshold_;
        emit KickoutThresholdSet(kickoutThreshold_);
    }

    /*//////////////////////////////////////////////////////////////
                                  LOGIC
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IQoS
    /// @dev A kick-out also clears the recent window (the lifetime average stays), so a node that joins
    /// again is judged on its next tasks and not kicked out again by the scores that removed it.
    function recordTaskScore(address node, uint256 taskScore) external onlyTask returns (bool isKickedOut) {
        if (taskScore > TASK_SCORE_LIMIT) revert TaskScoreTooHigh(taskScore, TASK_SCORE_LIMIT);
        History storage h = histories[node];
        // taskScore <= 20: a uint64 total would need more than 9e17 tasks to overflow.
        unchecked {
            h.totalScore += uint64(taskScore);
            h.numTasks += 1;
        }
        h.recent = uint24(((uint256(h.recent) << 8) | taskScore) & 0xffffff);
        if (h.numRecent < RECENT_WINDOW) h.numRecent += 1;
        emit TaskScoreRecorded(node, taskScore, h.totalScore / h.numTasks);

        uint256 recentSum = _recentScoreSum(h);
        if (recentSum <= kickoutThreshold) {
            h.numRecent = 0;
            h.recent = 0;
            emit KickOutTriggered(node, recentSum, kickoutThreshold);
            return true;
        }
        return false;
    }

    /// @inheritdoc IQoS
    function resetHistory(address node) external onlyTask {
        delete histories[node];
        emit HistoryReset(node);
    }

    /*//////////////////////////////////////////////////////////////
                                  VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @notice The lifetime average of the node's task scores, rounded down; 20 without history.
    function score(address node) public view returns (uint256) {
        History storage h = histories[node];
        return h.numTasks == 0 ? NEW_NODE_SCORE : h.totalScore / h.numTasks;
    }

    /// @inheritdoc IQoS
    function weight(address node) external view returns (uint256) {
        uint256 s = score(node);
        return s == 0 ? 1 : s;
    }

    /// @notice The kick-out sum: the last 3 task scores, missing ones counted as 20.
    function recentScoreSum(address node) external view returns (uint256) {
        return _recentScoreSum(histories[node]);
    }

    function _recentScoreSum(History storage h) internal view returns (uint256 sum) {
        uint256 numRecent = h.numRecent;
        uint256 recent = h.recent;
        // At most 3 terms of at most 20 each.
        unchecked {
            for (uint256 i; i < numRecent; ++i) {
                sum += (recent >> (8 * i)) & 0xff;
            }
            sum += (RECENT_WINDOW - numRecent) * NEW_NODE_SCORE;
        }
    }
}
