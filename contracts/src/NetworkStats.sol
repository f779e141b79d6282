// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Owned} from "./lib/Owned.sol";
import {NodeInfo, NodeStatus} from "./lib/Types.sol";
import {INode} from "./interfaces/INode.sol";
import {ITask} from "./interfaces/ITask.sol";
import {INetworkStats} from "./interfaces/INetworkStats.sol";

/// @title NetworkStats: counters of nodes and tasks, and a paged list of the nodes, for dashboards.
/// @notice The counters are Node's and Task's, read through: they derive them from storage they write
/// anyway, so a task costs no call and no write here (it used to cost eight calls). Node reports each
/// join, for the list. Node counters: total = status != Quit, busy = Busy + PendingPause + PendingQuit
/// (each holds a task). Task counters: total = queued + running + succeeded + aborted.
/// Invariant: `_knownNodes` lists every address that ever joined, once, in order of first join (stable
/// pages).
contract NetworkStats is Owned, INetworkStats {
    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    event Wired(address node, address task);

    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @dev Only the Node contract reports node statuses.
    error NotNode(address caller);
    /// @dev `wire` was already called: the wiring is set once.
    error AlreadyWired();

    /*//////////////////////////////////////////////////////////////
                                 STORAGE
    //////////////////////////////////////////////////////////////*/

    /// @notice One entry of the paged node list.
    struct NodeView {
        address account;
        string gpuName;
        uint256 gpuVramGB;
        string runtime;
        NodeStatus status;
    }

    INode public node;
    address public task;

    address[] internal _knownNodes;
    mapping(address => bool) public isKnownNode;

    constructor(address initialOwner) Owned(initialOwner) {}

    /*//////////////////////////////////////////////////////////////
                                 WIRING
    //////////////////////////////////////////////////////////////*/

    function wire(INode node_, address task_) external onlyOwner {
        if (task != address(0)) revert AlreadyWired();
        if (address(node_) == address(0) || task_ == address(0)) revert ZeroAddress();
        node = node_;
        task = task_;
        emit Wired(address(node_), task_);
    }

    /*//////////////////////////////////////////////////////////////
                                 REPORTS
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc INetworkStats
    function nodeJoined(address account) external {
        if (msg.sender != address(node)) revert NotNode(msg.sender);
        if (isKnownNode[account]) return;
        isKnownNode[account] = true;
        _knownNodes.push(account);
    }

    /*//////////////////////////////////////////////////////////////
                                  VIEWS
    //////////////////////////////////////////////////////////////*/

    function nodeCounters() external view returns (uint256 total, uint256 available, uint256 busy, uint256 paused) {
        return node.nodeCounts();
    }

    function taskCounters()
        external
        view
        returns (uint256 total, uint256 queued, uint256 running, uint256 succeeded, uint256 aborted)
    {
        return ITask(task).taskCounts();
    }

    function numKnownNodes() external view returns (uint256) {
        return _knownNodes.length;
    }

    /// @notice Up to `limit` nodes from position `offset` of the join order, with their current info
    /// (status Quit for nodes that left).
    function getNodes(uint256 offset, uint256 limit) external view returns (NodeView[] memory page) {
        uint256 numKnown = _knownNodes.length;
        uint256 end = offset >= numKnown ? offset : (limit > numKnown - offset ? numKnown : offset + limit);
        page = new NodeView[](end - offset);
        for (uint256 i = offset; i < end; ++i) {
            address account = _knownNodes[i];
            NodeInfo memory info = node.nodeInfo(account);
            page[i - offset] = NodeView(account, info.gpuName, info.gpuVramGB, info.runtime, info.status);
        }
    }
}
