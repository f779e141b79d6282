// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title What Node reports to NetworkStats: the joins, for its list of nodes. The counters are read
/// from Node and Task (their views `nodeCounts` and `taskCounts`), which keep them at no extra write.
interface INetworkStats {
    function nodeJoined(address node) external;
}
