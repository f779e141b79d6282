// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {TaskType} from "../lib/Types.sol";

/// @title What Task calls on TaskQueue.
interface ITaskQueue {
    /// @notice Queues a task; when the queue is full it evicts the lowest-value task (returned, else 0)
    /// or reverts when the new task's value is not higher.
    function push(uint256 taskId, TaskType taskType, uint256 vramLimit, uint256 cap, uint256 fee)
        external
        returns (uint256 evictedTaskId);

    /// @notice Removes and returns the highest-value task the available nodes can take now, 0 if none.
    function popRunnable() external returns (uint256 taskId);

    /// @notice Removes a queued task (its creator cancelled it).
    function remove(uint256 taskId) external;
}
