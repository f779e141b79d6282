// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title What Node calls on Task.
interface ITask {
    /// @notice Nodes became available (a node joined or resumed): start the queued tasks they can take.
    function onNodesAvailable() external;

    /// @notice A node joined (and is available): writes its seal slots once, then as onNodesAvailable.
    function onNodeJoined(address node) external;

    /// @notice Tasks created, waiting in the queue, running, succeeded and aborted.
    function taskCounts()
        external
        view
        returns (uint256 total, uint256 queued, uint256 running, uint256 succeeded, uint256 aborted);
}
