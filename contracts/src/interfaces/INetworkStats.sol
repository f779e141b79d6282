// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {NodeStatus, TaskPhase} from "../lib/Types.sol";

/// @title What Node and Task report to NetworkStats.
interface INetworkStats {
    function nodeStatusChanged(address node, NodeStatus from, NodeStatus to) external;

    function taskPhaseChanged(TaskPhase from, TaskPhase to) external;
}
