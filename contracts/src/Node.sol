// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Owned} from "./lib/Owned.sol";
import {Payouts} from "./lib/Payouts.sol";
import {NodeInfo, NodeStatus, TaskType} from "./lib/Types.sol";
import {INode} from "./interfaces/INode.sol";
import {ITask} from "./interfaces/ITask.sol";
import {IQoS} from "./interfaces/IQoS.sol";
import {INetworkStats} from "./interfaces/INetworkStats.sol";

/// @title Node: the nodes' stakes, statuses and the weighted random selection of the nodes of a task.
/// @notice Nodes join with `msg.value == nodeStake` and hold it here until they quit (refund), are
/// kicked out by QoS (refund) or are slashed (the whole stake goes to the treasury, the owner).
/// Available nodes are kept in card-model groups (one group per keccak256(abi.encode(gpuName,
/// gpuVramGB, runtime))); each member slot packs the node's address with its selection weight, read from
/// QoS when the node becomes available (a node's score only changes while it is busy).
/// Invariants:
/// - a node is a member of its card-model group iff its status is Available;
/// - a group's `totalWeight` is the sum of its members' weights; `_activeGroups` lists exactly the
///   groups with at least one member;
/// - `address(this).balance >= totalStaked + totalCredits`, `totalStaked` = sum of the stakes of the
///   nodes whose status is not Quit.
contract Node is Owned, Payouts, INode {
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
    /// @dev gpuVramGB must be in 1..2**32-1.
    error InvalidVram(uint256 gpuVramGB);
    /// @dev The node stake must be positive and fit in 128 bits.
    error InvalidNodeStake(uint256 nodeStake);
    /// @dev A card model cannot have more than 2**24 - 1 available nodes.
    error CardModelFull(bytes32 cardModelKey);
    /// @dev Selection found no eligible available node (Task checks `canRun` first, so this is a bug guard).
    error NotEnoughNodes(TaskType taskType, uint256 vramLimit);

    /*//////////////////////////////////////////////////////////////
                                 STORAGE
    //////////////////////////////////////////////////////////////*/

    /// @dev The available nodes of one card model. `members[i]` = address | weight << 160.
    struct CardGroup {
        uint32 gpuVramGB;
        uint32 activeIndex; // 1-based position in `_activeGroups`, 0 when the group has no member
        uint64 totalWeight;
        uint256[] members;
    }

    uint256 public nodeStake = 400 ether;
    uint256 public totalStaked;
    uint256 public numAvailableNodes;

    address public task;
    IQoS public qos;
    INetworkStats public stats;

    mapping(address => NodeInfo) internal _nodes;
    mapping(bytes32 => CardGroup) internal _groups;
    bytes32[] internal _activeGroups;
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
        if (nodeStake_ == 0 || nodeStake_ > type(uint128).max) revert InvalidNodeStake(nodeStake_);
        nodeStake = nodeStake_;
        emit NodeStakeSet(nodeStake_);
    }

    /*//////////////////////////////////////////////////////////////
                              NODE ACTIONS
    //////////////////////////////////////////////////////////////*/

    function join(string calldata gpuName, uint256 gpuVramGB, string calldata runtime) external payable {
        NodeInfo storage n = _nodes[msg.sender];
        if (n.status != NodeStatus.Quit) revert NodeAlreadyJoined(msg.sender, n.status);
        if (msg.value != nodeStake) revert IncorrectStake(msg.value, nodeStake);
        uint256 nameBytes = bytes(gpuName).length;
        uint256 runtimeBytes = bytes(runtime).length;
        if (nameBytes == 0 || nameBytes > MAX_STRING_BYTES || runtimeBytes > MAX_STRING_BYTES) {
            revert InvalidNodeName(nameBytes, runtimeBytes);
        }
        if (gpuVramGB == 0 || gpuVramGB > type(uint32).max) revert InvalidVram(gpuVramGB);

        bytes32 key = keccak256(abi.encode(gpuName, gpuVramGB, runtime));
        n.gpuName = gpuName;
        n.runtime = runtime;
        n.gpuVramGB = uint32(gpuVramGB);
        n.cardModelKey = key;
        // msg.value == nodeStake <= type(uint128).max (setNodeStake); the sum of all stakes is ETH supply.
        n.stake = uint128(msg.value);
        totalStaked += msg.value;
        CardGroup storage g = _groups[key];
        if (g.gpuVramGB == 0) g.gpuVramGB = uint32(gpuVramGB);
        emit NodeJoined(msg.sender, key, gpuName, gpuVramGB, runtime, msg.value);

        _setStatus(msg.sender, n, NodeStatus.Available);
        ITask(task).onNodesAvailable();
    }

    /// @notice Available -> Paused; Busy -> PendingPause (paused when its task ends).
    function pause() external {
        NodeInfo storage n = _nodes[msg.sender];
        if (n.status == NodeStatus.Available) _setStatus(msg.sender, n, NodeStatus.Paused);
        else if (n.status == NodeStatus.Busy) _setStatus(msg.sender, n, NodeStatus.PendingPause);
        else revert InvalidNodeStatus(msg.sender, n.status);
        emit NodePaused(msg.sender);
    }

    /// @notice Paused -> Available.
    function resume() external {
        NodeInfo storage n = _nodes[msg.sender];
        if (n.status != NodeStatus.Paused) revert InvalidNodeStatus(msg.sender, n.status);
        _setStatus(msg.sender, n, NodeStatus.Available);
        emit NodeResumed(msg.sender);
        ITask(task).onNodesAvailable();
    }

    /// @notice Available / Paused -> Quit with the stake refunded; Busy / PendingPause -> PendingQuit
    /// (refunded when its task ends).
    function quit() external {
        NodeInfo storage n = _nodes[msg.sender];
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
    /// @dev SD: three draws, each a card-model group with VRAM >= vramLimit weighted by its summed
    /// weight, then a member weighted by its weight. GPT: one group with VRAM >= vramLimit and >= 3
    /// members, then three members of it. A drawn node leaves its group, so draws are without replacement.
    function selectNodes(uint256 taskId, TaskType taskType, uint256 vramLimit, bytes32 taskHash)
        external
        onlyTask
        returns (address[3] memory selected)
    {
        bytes32 key;
        if (taskType == TaskType.GPT) key = _drawGroup(taskType, vramLimit, NODES_PER_TASK, taskHash);
        for (uint256 i; i < NODES_PER_TASK; ++i) {
            if (taskType == TaskType.SD) key = _drawGroup(taskType, vramLimit, 1, taskHash);
            address chosen = _drawMember(_groups[key], taskHash);
            NodeInfo storage n = _nodes[chosen];
            n.taskId = uint64(taskId);
            _setStatus(chosen, n, NodeStatus.Busy);
            selected[i] = chosen;
        }
    }

    /// @inheritdoc INode
    function finishTask(address node, bool isKickedOut) external onlyTask {
        NodeInfo storage n = _nodes[node];
        NodeStatus status = _requireInTask(node, n);
        n.taskId = 0;
        if (isKickedOut) {
            _setStatus(node, n, NodeStatus.Quit);
            emit NodeKickedOut(node);
            _refundStake(node, n);
        } else if (status == NodeStatus.Busy) {
            _setStatus(node, n, NodeStatus.Available);
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
        NodeInfo storage n = _nodes[node];
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

    /// @inheritdoc INode
    function canRun(TaskType taskType, uint256 vramLimit) external view returns (bool) {
        (bool canRunSd, uint256 maxSdVramLimit, bool canRunGpt, uint256 maxGptVramLimit) = capacity();
        if (taskType == TaskType.GPT) return canRunGpt && vramLimit <= maxGptVramLimit;
        return canRunSd && vramLimit <= maxSdVramLimit;
    }

    /// @inheritdoc INode
    /// @dev SD needs 3 available nodes with VRAM >= vramLimit: the limit can be at most the 3rd largest
    /// VRAM among the available nodes. GPT needs one group of >= 3: at most the largest VRAM of such a
    /// group. One pass over the card-model groups that have available nodes.
    function capacity()
        public
        view
        returns (bool canRunSd, uint256 maxSdVramLimit, bool canRunGpt, uint256 maxGptVramLimit)
    {
        uint256 numGroups = _activeGroups.length;
        // The 3 largest VRAMs of available nodes, with multiplicity: top1 >= top2 >= top3.
        uint256 top1;
        uint256 top2;
        uint256 top3;
        for (uint256 i; i < numGroups; ++i) {
            CardGroup storage g = _groups[_activeGroups[i]];
            uint256 vram = g.gpuVramGB;
            uint256 size = g.members.length;
            if (size >= NODES_PER_TASK && (!canRunGpt || vram > maxGptVramLimit)) {
                canRunGpt = true;
                maxGptVramLimit = vram;
            }
            for (uint256 k; k < size && k < NODES_PER_TASK; ++k) {
                if (vram > top1) (top1, top2, top3) = (vram, top1, top2);
                else if (vram > top2) (top2, top3) = (vram, top2);
                else if (vram > top3) top3 = vram;
            }
        }
        canRunSd = numAvailableNodes >= NODES_PER_TASK;
        maxSdVramLimit = top3;
    }

    /// @inheritdoc INode
    function nodeInfo(address node) external view returns (NodeInfo memory) {
        return _nodes[node];
    }

    function nodeStatus(address node) external view returns (NodeStatus) {
        return _nodes[node].status;
    }

    /// @notice The card-model groups that have available nodes.
    function activeCardModels() external view returns (bytes32[] memory) {
        return _activeGroups;
    }

    /// @notice The available nodes of a card model and their selection weights.
    function availableNodesOf(bytes32 cardModelKey)
        external
        view
        returns (address[] memory nodes, uint256[] memory weights, uint256 gpuVramGB)
    {
        CardGroup storage g = _groups[cardModelKey];
        uint256 size = g.members.length;
        nodes = new address[](size);
        weights = new uint256[](size);
        for (uint256 i; i < size; ++i) {
            uint256 packed = g.members[i];
            nodes[i] = address(uint160(packed));
            weights[i] = packed >> 160;
        }
        gpuVramGB = g.gpuVramGB;
    }

    /*//////////////////////////////////////////////////////////////
                                INTERNALS
    //////////////////////////////////////////////////////////////*/

    function _requireInTask(address node, NodeInfo storage n) internal view returns (NodeStatus status) {
        status = n.status;
        if (status != NodeStatus.Busy && status != NodeStatus.PendingPause && status != NodeStatus.PendingQuit) {
            revert InvalidNodeStatus(node, status);
        }
    }

    function _setStatus(address node, NodeInfo storage n, NodeStatus to) internal {
        NodeStatus from = n.status;
        if (from == NodeStatus.Available) _leaveGroup(n);
        n.status = to;
        if (to == NodeStatus.Available) _enterGroup(node, n);
        emit NodeStatusChanged(node, from, to);
        stats.nodeStatusChanged(node, from, to);
    }

    function _refundStake(address node, NodeInfo storage n) internal {
        uint256 amount = n.stake;
        n.stake = 0;
        totalStaked -= amount;
        emit NodeStakeRefunded(node, amount);
        _pay(node, amount);
    }

    function _enterGroup(address node, NodeInfo storage n) internal {
        bytes32 key = n.cardModelKey;
        CardGroup storage g = _groups[key];
        uint256 w = qos.weight(node);
        g.members.push(uint256(uint160(node)) | (w << 160));
        if (g.members.length > type(uint24).max) revert CardModelFull(key);
        n.memberIndex = uint24(g.members.length);
        // Weights are QoS scores (<= 20) and there is at most one member per node: no overflow.
        unchecked {
            g.totalWeight += uint64(w);
            ++numAvailableNodes;
        }
        if (g.activeIndex == 0) {
            _activeGroups.push(key);
            g.activeIndex = uint32(_activeGroups.length);
        }
    }

    function _leaveGroup(NodeInfo storage n) internal {
        CardGroup storage g = _groups[n.cardModelKey];
        uint256 index = n.memberIndex - 1;
        uint256 lastIndex = g.members.length - 1;
        uint256 w = g.members[index] >> 160;
        if (index != lastIndex) {
            uint256 moved = g.members[lastIndex];
            g.members[index] = moved;
            _nodes[address(uint160(moved))].memberIndex = uint24(index + 1);
        }
        g.members.pop();
        n.memberIndex = 0;
        // The member's weight is part of totalWeight, and the node was counted as available.
        unchecked {
            g.totalWeight -= uint64(w);
            --numAvailableNodes;
        }
        if (lastIndex == 0) _deactivate(g);
    }

    function _deactivate(CardGroup storage g) internal {
        uint256 index = g.activeIndex - 1;
        uint256 lastIndex = _activeGroups.length - 1;
        if (index != lastIndex) {
            bytes32 movedKey = _activeGroups[lastIndex];
            _activeGroups[index] = movedKey;
            _groups[movedKey].activeIndex = uint32(index + 1);
        }
        _activeGroups.pop();
        g.activeIndex = 0;
    }

    /// @dev A card-model group with VRAM >= vramLimit and >= minMembers members, weighted by totalWeight.
    function _drawGroup(TaskType taskType, uint256 vramLimit, uint256 minMembers, bytes32 taskHash)
        internal
        returns (bytes32)
    {
        uint256 numGroups = _activeGroups.length;
        uint256 total;
        for (uint256 i; i < numGroups; ++i) {
            CardGroup storage g = _groups[_activeGroups[i]];
            if (g.gpuVramGB >= vramLimit && g.members.length >= minMembers) total += g.totalWeight;
        }
        if (total == 0) revert NotEnoughNodes(taskType, vramLimit);
        uint256 r = _random(taskHash) % total;
        for (uint256 i; i < numGroups; ++i) {
            bytes32 key = _activeGroups[i];
            CardGroup storage g = _groups[key];
            if (g.gpuVramGB < vramLimit || g.members.length < minMembers) continue;
            if (r < g.totalWeight) return key;
            r -= g.totalWeight;
        }
        // r < total = the sum of the eligible weights walked above.
        assert(false);
        return bytes32(0);
    }

    /// @dev A member of a non-empty group, weighted by its weight.
    function _drawMember(CardGroup storage g, bytes32 taskHash) internal returns (address) {
        uint256 r = _random(taskHash) % g.totalWeight;
        uint256 size = g.members.length;
        for (uint256 i; i < size; ++i) {
            uint256 packed = g.members[i];
            uint256 w = packed >> 160;
            if (r < w) return address(uint160(packed));
            r -= w;
        }
        // r < totalWeight = the sum of the members' weights.
        assert(false);
        return address(0);
    }

    /// @dev keccak256(prevrandao, or the previous block's hash where prevrandao is 0, taskHash, counter).
    function _random(bytes32 taskHash) internal returns (uint256) {
        uint256 entropy = block.prevrandao;
        if (entropy == 0) entropy = uint256(blockhash(block.number - 1));
        return uint256(keccak256(abi.encode(entropy, taskHash, _drawCounter++)));
    }
}
