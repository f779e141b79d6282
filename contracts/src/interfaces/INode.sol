// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {NodeInfo, TaskType} from "../lib/Types.sol";

/// @title What the other contracts call on Node.
interface INode {
    /// @notice Whether the joined nodes (whatever their status now) could ever take such a task: three
    /// with VRAM >= vramLimit for SD, three of one card model for GPT. A task failing this is refused.
    function canEverRun(TaskType taskType, uint256 vramLimit) external view returns (bool);

    /// @notice The largest vramLimit of an SD task / of a GPT task that three available nodes can take now.
    function capacity()
        external
        view
        returns (bool canRunSd, uint256 maxSdVramLimit, bool canRunGpt, uint256 maxGptVramLimit);

    /// @notice Selects three nodes for `taskId` (Task only) and makes them Busy; three zero addresses
    /// (nothing changed) when the available nodes cannot take the task now.
    function selectNodes(uint256 taskId, TaskType taskType, uint256 vramLimit, bytes32 taskHash)
        external
        returns (address[3] memory selected);

    /// @notice Selects `count` (1 or 2) nodes for `taskId` (Task only) and makes them Busy: a sampled
    /// task's one node, or an audit's two (of `sameModelAs`'s card model for GPT, any with VRAM >=
    /// vramLimit for SD); zero addresses (nothing changed) when the available nodes cannot take it now.
    function selectNodesFor(
        uint256 taskId,
        TaskType taskType,
        uint256 vramLimit,
        bytes32 taskHash,
        uint256 count,
        address sameModelAs
    ) external returns (address[3] memory selected);

    /// @notice What a node pays to join (bounds a sampled task's run pay: docs/protocol-decisions.md).
    function nodeStake() external view returns (uint256);

    /// @notice Ends a node's task (Task only): back to Available / Paused / Quit, or kicked out. Returns
    /// the node's VRAM when it became Available (only then can a queued task have become runnable), else 0.
    function finishTask(address node, bool isKickedOut) external returns (uint256 availableVram);

    /// @notice Slashes a node that holds a task (Task only): its stake goes to the treasury.
    function slash(address node) external;

    function nodeInfo(address node) external view returns (NodeInfo memory);

    /// @notice Nodes in the network (not Quit), available, holding a task, paused.
    function nodeCounts() external view returns (uint256 total, uint256 available, uint256 busy, uint256 paused);
}
