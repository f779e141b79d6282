// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {TaskType} from "../lib/Types.sol";

/// @title What Task calls on TaskQueue.
/// @notice Every change returns the queue's floor: the lowest vramLimit among the queued tasks (NO_FLOOR
/// when none is queued). Only a node with at least that much VRAM becoming available can make a queued
/// task runnable, so Task asks the queue nothing when a smaller one does.
interface ITaskQueue {
    /// @notice Queues a task; when the queue is full it evicts the lowest-value task (returned, else 0)
    /// or reverts when the new task's value is not higher.
    function push(uint256 taskId, TaskType taskType, uint256 vramLimit, uint256 cap, uint256 fee)
        external
        returns (uint256 evictedTaskId, uint256 floor);

    /// @notice Removes and returns the highest-value task the available nodes can take now, 0 if none.
    function popRunnable() external returns (uint256 taskId, uint256 floor);

    /// @notice Removes a queued task (its creator cancelled it).
    function remove(uint256 taskId) external returns (uint256 floor);
}
