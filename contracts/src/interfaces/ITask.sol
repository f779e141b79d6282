// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title What Node calls on Task.
interface ITask {
    /// @notice Nodes became available (a node joined or resumed): start the queued tasks they can take.
    function onNodesAvailable() external;
}
