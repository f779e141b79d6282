// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Owned} from "./lib/Owned.sol";
import {Payouts} from "./lib/Payouts.sol";
import {NodeInfo, NodeStatus, TaskType} from "./lib/Types.sol";
import {INode} from "./interfaces/INode.sol";
import {ITask} from "./interfaces/ITask.sol";
import {IQoS} from "./interfaces/IQoS.sol";
import {INetworkStats} from "./interfaces/INetworkStats.sol";
import {NodeSelection} from "./NodeSelection.sol";

/// @title Node: the nodes' stakes, statuses and the weighted random selection of the nodes of a task.
/// @notice Nodes join with `msg.value == nodeStake` and hold it here until they quit (refund), are
/// kicked out by QoS (refund) or are slashed (the whole stake goes to the treasury, the owner).
/// Available nodes are kept in card-model groups (one group per keccak256(abi.encode(gpuName,
/// gpuVramGB, runtime))) and in VRAM-indexed pools (NodeSelection), with their selection weight read
/// from QoS when the node becomes available (a node's score only changes while it is busy). No call's
/// cost depends on the number of nodes or card models.
/// Invariants:
/// - a node is in its group's lists and in one pool iff its status is Available;
/// - a group's `totalWeight` is the sum of its available members' weights, `size` their number,
///   `joined` the number of its nodes whose status is not Quit;
/// - `address(this).balance >= totalStaked + totalCredits`, `totalStaked` = sum of the stakes of the
///   nodes whose status is not Quit.
contract Node is Owned, Payouts, NodeSelection, INode {
    /*//////////////////////////////////////////////////////////////
                                CONSTANTS
    //////////////////////////////////////////////////////////////*/

    uint256 public constant MAX_STRING_BYTES = 128;
    uint256 internal constant NODES_PER_TASK = 3;

    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    event Wired(address task, address qos, address stats);
    event NodeStakeSet(uint256 nodeStake);
    event NodeJoined(
        address indexed node,
        bytes32 indexed cardModelKey,
        string gpuName,
        uint256 gpuVramGB,
        string runtime,
        uint256 stake
    );
    /// @notice Emitted on every change of a node's status, beside the named events below.
    event NodeStatusChanged(address indexed node, NodeStatus from, NodeStatus to);
    event NodePaused(address indexed node);
    event NodeResumed(address indexed node);
    event NodeQuit(address indexed node);
    event NodeKickedOut(address indexed node);
    event NodeSlashed(address indexed node, address indexed treasury, uint256 amount);
    event NodeStakeRefunded(address indexed node, uint256 amount);

    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @dev Only the Task contract starts, ends and slashes nodes' tasks.
    error NotTask(address caller);
    /// @dev `wire` was already called: the wiring is set once.
    error AlreadyWired();
    /// @dev `join` needs exactly `nodeStake` as msg.value.
    error IncorrectStake(uint256 sent, uint256 required);
    /// @dev The node has already joined (its status is not Quit).
    error NodeAlreadyJoined(address node, NodeStatus status);
    /// @dev The action is not allowed from the node's current status.
    error InvalidNodeStatus(address node, NodeStatus status);
    /// @dev gpuName must be 1..128 bytes and runtime at most 128 bytes.
    error InvalidNodeName(uint256 gpuNameBytes, uint256 runtimeBytes);
    /// @dev gpuVramGB must be in 1..MAX_VRAM_GB (4,095: a 3-level tree of 16 indexes VRAM).
    error InvalidVram(uint256 gpuVramGB);
    /// @dev The node stake must be positive and fit in 96 bits (79 billion CNX).
    error InvalidNodeStake(uint256 nodeStake);

    /*//////////////////////////////////////////////////////////////
                                 STORAGE
    //////////////////////////////////////////////////////////////*/

    uint256 public nodeStake = 400 ether;
    uint256 public totalStaked;
    /// @notice Nodes whose status is Paused (the other counts follow from the selection's trees).
    uint256 public numPaused;

    address public task;
    IQoS public qos;
    INetworkStats public stats;

    /// @dev Counter of the random draws: two draws in one block and for one task still differ.
    uint256 internal _drawCounter;

    modifier onlyTask() {
        if (msg.sender != task) revert NotTask(msg.sender);
        _;
    }

    constructor(address initialOwner) Owned(initialOwner) {}

    /*//////////////////////////////////////////////////////////////
                            WIRING AND SETTINGS
    //////////////////////////////////////////////////////////////*/

    function wire(address task_, IQoS qos_, INetworkStats stats_) external onlyOwner {
        if (task != address(0)) revert AlreadyWired();
        if (task_ == address(0) || address(qos_) == address(0) || address(stats_) == address(0)) {
            revert ZeroAddress();
        }
        task = task_;
        qos = qos_;
        stats = stats_;
        emit Wired(task_, address(qos_), address(stats_));
    }

    /// @notice Applies to nodes that join afterwards; a node always gets back exactly what it paid.
    function setNodeStake(uint256 nodeStake_) external onlyOwner {
        if (nodeStake_ == 0 || nodeStake_ > type(uint96).max) revert InvalidNodeStake(nodeStake_);
        nodeStake = nodeStake_;
        emit NodeStakeSet(nodeStake_);
    }

    /*//////////////////////////////////////////////////////////////
                              NODE ACTIONS
    //////////////////////////////////////////////////////////////*/

    function join(string calldata gpuName, uint256 gpuVramGB, string calldata runtime) external payable {
        NodeRecord storage n = _nodes[msg.sender];
        if (n.status != NodeStatus.Quit) revert NodeAlreadyJoined(msg.sender, n.status);
        if (msg.value != nodeStake) revert IncorrectStake(msg.value, nodeStake);
        uint256 nameBytes = bytes(gpuName).length;
        uint256 runtimeBytes = bytes(runtime).length;
        if (nameBytes == 0 || nameBytes > MAX_STRING_BYTES || runtimeBytes > MAX_STRING_BYTES) {
            revert InvalidNodeName(nameBytes, runtimeBytes);
        }
        if (gpuVramGB == 0 || gpuVramGB > MAX_VRAM_GB) revert InvalidVram(gpuVramGB);

        bytes32 key = keccak256(abi.encode(gpuName, gpuVramGB, runtime));
        n.gpuName = gpuName;
        n.runtime = runtime;
        n.gpuVramGB = uint16(gpuVramGB);
        n.cardModelKey = key;
        // msg.value == nodeStake <= type(uint96).max (setNodeStake); the sum of all stakes is ETH supply.
        n.stake = uint96(msg.value);
        totalStaked += msg.value;
        CardGroup storage g = _groups[key];
        if (g.gpuVramGB == 0) g.gpuVramGB = uint32(gpuVramGB);
        emit NodeJoined(msg.sender, key, gpuName, gpuVramGB, runtime, msg.value);

        _setStatus(msg.sender, n, NodeStatus.Available);
        ITask(task).onNodeJoined(msg.sender, gpuVramGB);
    }

    /// @notice Available -> Paused; Busy -> PendingPause (paused when its task ends).
    function pause() external {
        NodeRecord storage n = _nodes[msg.sender];
        if (n.status == NodeStatus.Available) _setStatus(msg.sender, n, NodeStatus.Paused);
        else if (n.status == NodeStatus.Busy) _setStatus(msg.sender, n, NodeStatus.PendingPause);
        else revert InvalidNodeStatus(msg.sender, n.status);
        emit NodePaused(msg.sender);
    }

    /// @notice Paused -> Available.
    function resume() external {
        NodeRecord storage n = _nodes[msg.sender];
        if (n.status != NodeStatus.Paused) revert InvalidNodeStatus(msg.sender, n.status);
        _setStatus(msg.sender, n, NodeStatus.Available);
        emit NodeResumed(msg.sender);
        ITask(task).onNodesAvailable(n.gpuVramGB);
    }

    /// @notice Available / Paused -> Quit with the stake refunded; Busy / PendingPause -> PendingQuit
    /// (refunded when its task ends).
    function quit() external {
        NodeRecord storage n = _nodes[msg.sender];
        NodeStatus status = n.status;
        if (status == NodeStatus.Available || status == NodeStatus.Paused) {
            _setStatus(msg.sender, n, NodeStatus.Quit);
            emit NodeQuit(msg.sender);
            _refundStake(msg.sender, n);
        } else if (status == NodeStatus.Busy || status == NodeStatus.PendingPause) {
            _setStatus(msg.sender, n, NodeStatus.PendingQuit);
            emit NodeQuit(msg.sender);
        } else {
            revert InvalidNodeStatus(msg.sender, status);
        }
    }

    /*//////////////////////////////////////////////////////////////
                               TASK HOOKS
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc INode
    /// @dev SD: three draws, each a node with VRAM >= vramLimit by weight among all available nodes (a
    /// card-model group by its summed weight, then a member by its weight, in one step). GPT: one node of
    /// a group with VRAM >= vramLimit and >= 3 available members, by weight (its group is thereby drawn by
    /// summed weight), then two more members of that group by weight. A drawn node leaves its group and
    /// pool, so draws are without replacement. One storage write of the draw counter per selection.
    /// Three zero addresses when the available nodes cannot take the task: Task then queues it.
    function selectNodes(uint256 taskId, TaskType taskType, uint256 vramLimit, bytes32 taskHash)
        external
        onlyTask
        returns (address[3] memory selected)
    {
        if (vramLimit > MAX_VRAM_GB) return selected;
        return taskType == TaskType.SD ? _selectSd(taskId, vramLimit, taskHash) : _selectGpt(taskId, vramLimit, taskHash);
    }

    function _selectSd(uint256 taskId, uint256 vramLimit, bytes32 taskHash) internal returns (address[3] memory selected) {
        (uint256 small, uint256 trio) = _poolSumsFrom(vramLimit);
        if ((small >> COUNT_SHIFT) + (trio >> COUNT_SHIFT) < NODES_PER_TASK) return selected;
        uint256 seed = _random(taskHash);
        for (uint256 i; i < NODES_PER_TASK; ++i) {
            if (i != 0) (small, trio) = _poolSumsFrom(vramLimit);
            address chosen = _drawAny(vramLimit, small, trio, uint256(keccak256(abi.encode(seed, i))));
            NodeRecord storage n = _nodes[chosen];
            n.taskId = uint64(taskId);
            _setStatus(chosen, n, NodeStatus.Busy);
            selected[i] = chosen;
        }
    }

    function _selectGpt(uint256 taskId, uint256 vramLimit, bytes32 taskHash) internal returns (address[3] memory selected) {
        uint256 trioWeight = _sumFrom(POOL_TRIO, vramLimit) & WEIGHT_MASK;
        if (trioWeight == 0) return selected;
        uint256 seed = _random(taskHash);
        selected[0] = _drawFrom(POOL_TRIO, vramLimit, uint256(keccak256(abi.encode(seed, 0))) % trioWeight);
        NodeRecord storage first = _nodes[selected[0]];
        bytes32 key = first.cardModelKey;
        uint256 vram = first.gpuVramGB;
        uint256 sizeBefore = _groups[key].size;
        _leaveGroup(selected[0], key, vram, false);
        for (uint256 i = 1; i < NODES_PER_TASK; ++i) {
            selected[i] = _drawInGroup(key, uint256(keccak256(abi.encode(seed, i))));
            _leaveGroup(selected[i], key, vram, false);
        }
        _leaveAsTrio(key, vram, selected, sizeBefore);
        for (uint256 i; i < NODES_PER_TASK; ++i) {
            NodeRecord storage n = _nodes[selected[i]];
            n.taskId = uint64(taskId);
            _recordStatus(selected[i], n, NodeStatus.Available, NodeStatus.Busy);
        }
    }

    /// @inheritdoc INode
    /// @dev A sampled task's node (`count` 1, `sameModelAs` 0): SD one node with VRAM >= vramLimit by
    /// weight; GPT one node of pool TRIO by weight (its card model has two more available, so its audit
    /// can likely find them at once). An audit (`count` 2, `sameModelAs` the first node, which still holds
    /// the task and so is not available): SD any two with VRAM >= vramLimit, GPT two of the first node's
    /// card model, by weight. Each drawn node leaves its lists as a status change does (a group falling
    /// below 3 changes pool then), so draws are without replacement.
    function selectNodesFor(
        uint256 taskId,
        TaskType taskType,
        uint256 vramLimit,
        bytes32 taskHash,
        uint256 count,
        address sameModelAs
    ) external onlyTask returns (address[3] memory selected) {
        if (vramLimit > MAX_VRAM_GB) return selected;
        if (count == NODES_PER_TASK) {
            return taskType == TaskType.SD ? _selectSd(taskId, vramLimit, taskHash) : _selectGpt(taskId, vramLimit, taskHash);
        }
        bool isSd = taskType == TaskType.SD;
        bytes32 key = _nodes[sameModelAs].cardModelKey;
        uint256 trioWeight;
        if (isSd) {
            (uint256 small, uint256 trio) = _poolSumsFrom(vramLimit);
            if ((small >> COUNT_SHIFT) + (trio >> COUNT_SHIFT) < count) return selected;
        } else if (sameModelAs == address(0)) {
            trioWeight = _sumFrom(POOL_TRIO, vramLimit) & WEIGHT_MASK;
            if (trioWeight == 0) return selected;
        } else if (_groups[key].size < count) {
            return selected;
        }
        uint256 seed = _random(taskHash);
        for (uint256 i; i < count; ++i) {
            uint256 random = uint256(keccak256(abi.encode(seed, i)));
            address chosen;
            if (isSd) {
                (uint256 small, uint256 trio) = _poolSumsFrom(vramLimit);
                chosen = _drawAny(vramLimit, small, trio, random);
            } else if (sameModelAs == address(0)) {
                chosen = _drawFrom(POOL_TRIO, vramLimit, random % trioWeight);
            } else {
                chosen = _drawInGroup(key, random);
            }
            NodeRecord storage n = _nodes[chosen];
            n.taskId = uint64(taskId);
            _setStatus(chosen, n, NodeStatus.Busy);
            selected[i] = chosen;
        }
    }

    /// @inheritdoc INode
    function finishTask(address node, bool isKickedOut) external onlyTask returns (uint256 availableVram) {
        NodeRecord storage n = _nodes[node];
        NodeStatus status = _requireInTask(node, n);
        n.taskId = 0;
        if (isKickedOut) {
            _setStatus(node, n, NodeStatus.Quit);
            emit NodeKickedOut(node);
            _refundStake(node, n);
        } else if (status == NodeStatus.Busy) {
            _setStatus(node, n, NodeStatus.Available);
            availableVram = n.gpuVramGB;
        } else if (status == NodeStatus.PendingPause) {
            _setStatus(node, n, NodeStatus.Paused);
        } else {
            _setStatus(node, n, NodeStatus.Quit);
            _refundStake(node, n);
        }
    }

    /// @inheritdoc INode
    /// @dev A PendingPause / PendingQuit request dies with the node: a slashed node gets nothing back.
    function slash(address node) external onlyTask {
        NodeRecord storage n = _nodes[node];
        _requireInTask(node, n);
        n.taskId = 0;
        uint256 amount = n.stake;
        n.stake = 0;
        totalStaked -= amount;
        _setStatus(node, n, NodeStatus.Quit);
        address treasury = owner;
        emit NodeSlashed(node, treasury, amount);
        _pay(treasury, amount);
    }

    /*//////////////////////////////////////////////////////////////
                                  VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @notice Whether three available nodes can take a task of this type and VRAM need right now (a view
    /// for tools: `selectNodes` makes the same check itself).
    function canRun(TaskType taskType, uint256 vramLimit) external view returns (bool) {
        (uint256 any, uint256 trio) = _availableFrom(vramLimit);
        return taskType == TaskType.GPT ? trio != 0 : any >= NODES_PER_TASK;
    }

    /// @inheritdoc INode
    function canEverRun(TaskType taskType, uint256 vramLimit) external view returns (bool) {
        (uint256 nodes, uint256 trios) = _joinedFrom(vramLimit);
        return taskType == TaskType.GPT ? trios != 0 : nodes >= NODES_PER_TASK;
    }

    /// @inheritdoc INode
    /// @dev SD needs 3 available nodes with VRAM >= vramLimit: the limit can be at most the 3rd largest
    /// VRAM among the available nodes. GPT needs one group of >= 3: at most the largest VRAM of such a
    /// group. Two walks down the VRAM tree from its largest end.
    function capacity()
        public
        view
        returns (bool canRunSd, uint256 maxSdVramLimit, bool canRunGpt, uint256 maxGptVramLimit)
    {
        (canRunSd, maxSdVramLimit) = _kthLargest(true, NODES_PER_TASK);
        (canRunGpt, maxGptVramLimit) = _kthLargest(false, 1);
    }

    /// @notice The nodes that can be selected now (summed from the VRAM trees: no counter to keep).
    function numAvailableNodes() external view returns (uint256 any) {
        (any,) = _availableFrom(0);
    }

    /// @notice The nodes in the network (status not Quit), available, holding a task (Busy, PendingPause,
    /// PendingQuit) and paused. Read from the selection's trees and one counter: a task's status changes
    /// write no counter.
    function nodeCounts() external view returns (uint256 total, uint256 available, uint256 busy, uint256 paused) {
        (total,) = _joinedFrom(0);
        (available,) = _availableFrom(0);
        paused = numPaused;
        busy = total - available - paused;
    }

    /// @inheritdoc INode
    function nodeInfo(address node) external view returns (NodeInfo memory) {
        NodeRecord storage n = _nodes[node];
        return NodeInfo(n.status, n.gpuVramGB, n.taskId, n.stake, n.cardModelKey, n.gpuName, n.runtime);
    }

    function nodeStatus(address node) external view returns (NodeStatus) {
        return _nodes[node].status;
    }

    /// @notice A card model: its VRAM, its available nodes and their summed weight, its joined nodes.
    function cardModel(bytes32 cardModelKey)
        external
        view
        returns (uint256 gpuVramGB, uint256 numAvailable, uint256 totalWeight, uint256 numJoined)
    {
        CardGroup storage g = _groups[cardModelKey];
        return (g.gpuVramGB, g.size, g.totalWeight, g.joined);
    }

    /// @notice The available nodes of a card model and their selection weights (a view for tools: it
    /// walks the card model's nodes).
    function availableNodesOf(bytes32 cardModelKey)
        external
        view
        returns (address[] memory nodes, uint256[] memory weights, uint256 gpuVramGB)
    {
        CardGroup storage g = _groups[cardModelKey];
        nodes = new address[](g.size);
        weights = new uint256[](g.size);
        uint256 k;
        for (uint256 w = 1; w <= MAX_WEIGHT; ++w) {
            uint256 n = _classCount(_groupClassCounts[cardModelKey], w);
            for (uint256 pos = 1; pos <= n; ++pos) {
                nodes[k] = _groupMembers[cardModelKey][(w << 32) | pos];
                weights[k++] = w;
            }
        }
        gpuVramGB = g.gpuVramGB;
    }

    /*//////////////////////////////////////////////////////////////
                                INTERNALS
    //////////////////////////////////////////////////////////////*/

    function _requireInTask(address node, NodeRecord storage n) internal view returns (NodeStatus status) {
        status = n.status;
        if (status != NodeStatus.Busy && status != NodeStatus.PendingPause && status != NodeStatus.PendingQuit) {
            revert InvalidNodeStatus(node, status);
        }
    }

    function _setStatus(address node, NodeRecord storage n, NodeStatus to) internal {
        NodeStatus from = n.status;
        if (from == NodeStatus.Available) _leavePools(node, n.cardModelKey, n.gpuVramGB);
        _recordStatus(node, n, from, to);
    }

    /// @dev The status change once the node left its pools (when it was Available): the joined counts,
    /// the paused count, the entry into the pools (when it becomes Available), the events; a join is
    /// also told to NetworkStats (its list of nodes).
    function _recordStatus(address node, NodeRecord storage n, NodeStatus from, NodeStatus to) internal {
        if (from == NodeStatus.Quit) _countJoined(n.cardModelKey, n.gpuVramGB);
        else if (to == NodeStatus.Quit) _uncountJoined(n.cardModelKey, n.gpuVramGB);
        if (from == NodeStatus.Paused) --numPaused;
        else if (to == NodeStatus.Paused) ++numPaused;
        n.status = to;
        if (to == NodeStatus.Available) {
            _enterPools(node, n.cardModelKey, n.gpuVramGB, qos.weight(node));
        }
        emit NodeStatusChanged(node, from, to);
        if (from == NodeStatus.Quit) stats.nodeJoined(node);
    }

    function _refundStake(address node, NodeRecord storage n) internal {
        uint256 amount = n.stake;
        n.stake = 0;
        totalStaked -= amount;
        emit NodeStakeRefunded(node, amount);
        _pay(node, amount);
    }

    /// @dev keccak256(prevrandao, or the previous block's hash where prevrandao is 0, taskHash, counter).
    function _random(bytes32 taskHash) internal returns (uint256) {
        uint256 entropy = block.prevrandao;
        if (entropy == 0) entropy = uint256(blockhash(block.number - 1));
        return uint256(keccak256(abi.encode(entropy, taskHash, _drawCounter++)));
    }
}
