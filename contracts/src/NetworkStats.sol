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

    /// @dev The counters are packed, nodes in one slot and tasks in another: a report is one storage
    /// write, not two to four (every task changes six node statuses and two task phases).
    struct NodeCounts {
        uint64 total;
        uint64 available;
        uint64 busy;
        uint64 paused;
    }

    struct TaskCounts {
        uint48 total;
        uint48 queued;
        uint48 running;
        uint48 succeeded;
        uint48 aborted;
    }

    NodeCounts internal _nodeCounts;
    TaskCounts internal _taskCounts;

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
        // Only a join (from Quit) can bring an address never seen.
        if (from == NodeStatus.Quit && !isKnownNode[account]) {
            isKnownNode[account] = true;
            _knownNodes.push(account);
        }
        NodeCounts memory c = _nodeCounts;
        _countNode(c, from, false);
        _countNode(c, to, true);
        _nodeCounts = c;
    }

    /// @inheritdoc INetworkStats
    function taskPhaseChanged(TaskPhase from, TaskPhase to) external {
        if (msg.sender != task) revert NotTask(msg.sender);
        TaskCounts memory c = _taskCounts;
        if (from == TaskPhase.None) ++c.total;
        else if (from == TaskPhase.Queued) --c.queued;
        else if (from == TaskPhase.Running) --c.running;
        if (to == TaskPhase.Queued) ++c.queued;
        else if (to == TaskPhase.Running) ++c.running;
        else if (to == TaskPhase.Succeeded) ++c.succeeded;
        else if (to == TaskPhase.Aborted) ++c.aborted;
        _taskCounts = c;
    }

    /*//////////////////////////////////////////////////////////////
                                  VIEWS
    //////////////////////////////////////////////////////////////*/

    function nodeCounters() external view returns (uint256 total, uint256 available, uint256 busy, uint256 paused) {
        NodeCounts memory c = _nodeCounts;
        return (c.total, c.available, c.busy, c.paused);
    }

    function taskCounters()
        external
        view
        returns (uint256 total, uint256 queued, uint256 running, uint256 succeeded, uint256 aborted)
    {
        TaskCounts memory c = _taskCounts;
        return (c.total, c.queued, c.running, c.succeeded, c.aborted);
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

    /// @dev Counts below 2**64 (nodes) and 2**48 (tasks): checked arithmetic guards them anyway.
    function _countNode(NodeCounts memory c, NodeStatus status, bool isEntering) internal pure {
        if (status == NodeStatus.Quit) return;
        if (isEntering) ++c.total;
        else --c.total;
        if (status == NodeStatus.Available) {
            if (isEntering) ++c.available;
            else --c.available;
        } else if (status == NodeStatus.Paused) {
            if (isEntering) ++c.paused;
            else --c.paused;
        } else {
            if (isEntering) ++c.busy;
            else --c.busy;
        }
    }
}
