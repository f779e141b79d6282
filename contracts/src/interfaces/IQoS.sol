// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title What Node and Task call on QoS.
interface IQoS {
    /// @notice Records a node's score for one task (Task only); true when the node must be kicked out.
    function recordTaskScore(address node, uint256 taskScore) external returns (bool isKickedOut);

    /// @notice Forgets a slashed node's history (Task only).
    function resetHistory(address node) external;

    /// @notice The node's selection weight: its QoS score, 0 counted as 1.
    function weight(address node) external view returns (uint256);
}
