// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Owned} from "./lib/Owned.sol";
import {NodeInfo, NodeStatus, TaskPhase} from "./lib/Types.sol";
import {INode} from "./interfaces/INode.sol";
import {INetworkStats} from "./interfaces/INetworkStats.sol";

/// @title NetworkStats: counters of nodes and tasks, and a paged list of the nodes, for dashboards.
/// @notice Node reports every change of a node's status and Task every change of a task's phase; the
/// counters are derived from those reports and emit no events of their own (Node's and Task's events
/// already say what changed). Node counters: total = status != Quit, busy = Busy + PendingPause +
/// PendingQuit (each holds a task). Task counters: total = queued + running + succeeded + aborted.
/// Invariants: the counters equal those sums over the current statuses and phases; `_knownNodes` lists
/// every address that ever joined, once, in order of first join (stable pages).
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
    /// @dev Only the Task contract reports task phases.
    error NotTask(address caller);
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

    uint256 public totalNodes;
    uint256 public availableNodes;
    uint256 public busyNodes;
    uint256 public pausedNodes;

    uint256 public totalTasks;
    uint256 public queuedTasks;
    uint256 public runningTasks;
    uint256 public succeededTasks;
    uint256 public abortedTasks;

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
    function nodeStatusChanged(address account, NodeStatus from, NodeStatus to) external {
        if (msg.sender != address(node)) revert NotNode(msg.sender);
        if (!isKnownNode[account]) {
            isKnownNode[account] = true;
            _knownNodes.push(account);
        }
        _countNode(from, false);
        _countNode(to, true);
    }

    /// @inheritdoc INetworkStats
    function taskPhaseChanged(TaskPhase from, TaskPhase to) external {
        if (msg.sender != task) revert NotTask(msg.sender);
        if (from == TaskPhase.None) ++totalTasks;
        else if (from == TaskPhase.Queued) --queuedTasks;
        else if (from == TaskPhase.Running) --runningTasks;
        if (to == TaskPhase.Queued) ++queuedTasks;
        else if (to == TaskPhase.Running) ++runningTasks;
        else if (to == TaskPhase.Succeeded) ++succeededTasks;
        else if (to == TaskPhase.Aborted) ++abortedTasks;
    }

    /*//////////////////////////////////////////////////////////////
                                  VIEWS
    //////////////////////////////////////////////////////////////*/

    function nodeCounters() external view returns (uint256 total, uint256 available, uint256 busy, uint256 paused) {
        return (totalNodes, availableNodes, busyNodes, pausedNodes);
    }

    function taskCounters()
        external
        view
        returns (uint256 total, uint256 queued, uint256 running, uint256 succeeded, uint256 aborted)
    {
        return (totalTasks, queuedTasks, runningTasks, succeededTasks, abortedTasks);
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

    /*//////////////////////////////////////////////////////////////
                                INTERNALS
    //////////////////////////////////////////////////////////////*/

    function _countNode(NodeStatus status, bool isEntering) internal {
        if (status == NodeStatus.Quit) return;
        if (isEntering) ++totalNodes;
        else --totalNodes;
        if (status == NodeStatus.Available) {
            if (isEntering) ++availableNodes;
            else --availableNodes;
        } else if (status == NodeStatus.Paused) {
            if (isEntering) ++pausedNodes;
            else --pausedNodes;
        } else {
            if (isEntering) ++busyNodes;
            else --busyNodes;
        }
    }
}
