// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Owned} from "./lib/Owned.sol";
import {TaskType} from "./lib/Types.sol";
import {INode} from "./interfaces/INode.sol";
import {ITaskQueue} from "./interfaces/ITaskQueue.sol";

/// @title TaskQueue: the tasks waiting for nodes, ordered by value (fee per estimated second).
/// @notice value = fee / estimatedMs with estimatedMs = baseMs[type] + perUnitMs[type] * cap, fixed at
/// enqueue time. Values are compared exactly by cross-multiplication (feeA * msB vs feeB * msA), never
/// divided. Tasks are grouped by (type, vramLimit); each group is a doubly linked list sorted by value,
/// highest first, equal values first come first served. The queue holds the order only: fees stay in
/// Task, which alone may change the queue.
/// Invariants: `size` = the number of queued tasks = the sum of the groups' sizes; `_activeGroups` lists
/// exactly the non-empty groups; every list is sorted by non-increasing value.
contract TaskQueue is Owned, ITaskQueue {
    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    event Wired(address task, address node);
    event SizeLimitSet(uint256 sizeLimit);
    event PriceEstimateSet(TaskType indexed taskType, uint256 baseMs, uint256 perUnitMs);
    event TaskQueued(uint256 indexed taskId, TaskType taskType, uint256 vramLimit, uint256 fee, uint256 estimatedMs);
    /// @notice The task left the queue to start.
    event TaskDequeued(uint256 indexed taskId);
    /// @notice The task left the queue without starting (cancelled, or evicted by a higher-value task).
    event TaskRemoved(uint256 indexed taskId);

    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @dev Only the Task contract changes the queue.
    error NotTask(address caller);
    /// @dev `wire` was already called: the wiring is set once.
    error AlreadyWired();
    /// @dev "Task fee is too low": the queue is full and the new task's value is not higher than the
    /// lowest queued one (values are fee / estimatedMs).
    error TaskFeeTooLow(uint256 fee, uint256 estimatedMs, uint256 lowestFee, uint256 lowestEstimatedMs);
    /// @dev The task is not in the queue.
    error TaskNotQueued(uint256 taskId);
    /// @dev The task id is already queued.
    error TaskAlreadyQueued(uint256 taskId);
    /// @dev The size limit must be at least 1.
    error InvalidSizeLimit(uint256 sizeLimit);
    /// @dev baseMs must be >= 1 (a task never takes no time) and both must fit in 64 bits.
    error InvalidPriceEstimate(uint256 baseMs, uint256 perUnitMs);
    /// @dev baseMs + perUnitMs * cap does not fit in 64 bits.
    error EstimateTooLarge(TaskType taskType, uint256 cap);

    /*//////////////////////////////////////////////////////////////
                                 STORAGE
    //////////////////////////////////////////////////////////////*/

    struct Item {
        uint128 fee;
        uint64 estimatedMs;
        uint64 next; // toward lower values, 0 at the tail
        uint64 prev; // toward higher values, 0 at the head
        uint72 groupKey; // taskType << 64 | vramLimit
        bool isQueued;
    }

    struct Group {
        uint64 head;
        uint64 tail;
        uint32 activeIndex; // 1-based position in `_activeGroups`, 0 when empty
    }

    address public task;
    INode public node;
    uint256 public size;
    uint256 public sizeLimit = 50;
    /// @notice Estimated run time of a task: baseMs[type] + perUnitMs[type] * cap (cap = images or tokens).
    uint64[2] public baseMs = [uint64(20_000), uint64(10_000)];
    uint64[2] public perUnitMs = [uint64(30_000), uint64(50)];

    mapping(uint256 => Item) internal _items;
    mapping(uint72 => Group) internal _groups;
    uint72[] internal _activeGroups;

    modifier onlyTask() {
        if (msg.sender != task) revert NotTask(msg.sender);
        _;
    }

    constructor(address initialOwner) Owned(initialOwner) {}

    /*//////////////////////////////////////////////////////////////
                            WIRING AND SETTINGS
    //////////////////////////////////////////////////////////////*/

    function wire(address task_, INode node_) external onlyOwner {
        if (task != address(0)) revert AlreadyWired();
        if (task_ == address(0) || address(node_) == address(0)) revert ZeroAddress();
        task = task_;
        node = node_;
        emit Wired(task_, address(node_));
    }

    /// @notice A lower limit than the current size evicts nothing: the queue drains down to it.
    function setSizeLimit(uint256 sizeLimit_) external onlyOwner {
        if (sizeLimit_ == 0) revert InvalidSizeLimit(sizeLimit_);
        sizeLimit = sizeLimit_;
        emit SizeLimitSet(sizeLimit_);
    }

    /// @notice Applies to tasks queued afterwards; queued tasks keep the estimate they were ranked by.
    function setPriceEstimate(TaskType taskType, uint256 baseMs_, uint256 perUnitMs_) external onlyOwner {
        if (baseMs_ == 0 || baseMs_ > type(uint64).max || perUnitMs_ > type(uint64).max) {
            revert InvalidPriceEstimate(baseMs_, perUnitMs_);
        }
        baseMs[uint256(taskType)] = uint64(baseMs_);
        perUnitMs[uint256(taskType)] = uint64(perUnitMs_);
        emit PriceEstimateSet(taskType, baseMs_, perUnitMs_);
    }

    /*//////////////////////////////////////////////////////////////
                               TASK HOOKS
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc ITaskQueue
    function push(uint256 taskId, TaskType taskType, uint256 vramLimit, uint256 cap, uint256 fee)
        external
        onlyTask
        returns (uint256 evictedTaskId)
    {
        if (_items[taskId].isQueued) revert TaskAlreadyQueued(taskId);
        uint256 ms = estimatedMs(taskType, cap);
        if (size >= sizeLimit) {
            evictedTaskId = _lowest();
            Item storage low = _items[evictedTaskId];
            if (!_isHigher(fee, ms, low.fee, low.estimatedMs)) {
                revert TaskFeeTooLow(fee, ms, low.fee, low.estimatedMs);
            }
            _unlink(evictedTaskId);
            emit TaskRemoved(evictedTaskId);
        }
        // Task bounds fee to 128 bits and vramLimit to 64 bits; ms < 2**64 (estimatedMs).
        uint72 key = (uint72(uint8(taskType)) << 64) | uint72(vramLimit);
        Item storage item = _items[taskId];
        item.fee = uint128(fee);
        item.estimatedMs = uint64(ms);
        item.groupKey = key;
        item.isQueued = true;
        _insertSorted(taskId, key, fee, ms);
        ++size;
        emit TaskQueued(taskId, taskType, vramLimit, fee, ms);
    }

    /// @inheritdoc ITaskQueue
    /// @dev One Node.capacity call, then one pass over the non-empty groups, comparing their heads: the
    /// cost is bounded by the number of queued tasks (sizeLimit), whatever their vram limits.
    function popRunnable() external onlyTask returns (uint256 taskId) {
        (bool canRunSd, uint256 maxSdVramLimit, bool canRunGpt, uint256 maxGptVramLimit) = node.capacity();
        if (!canRunSd && !canRunGpt) return 0;
        uint256 numGroups = _activeGroups.length;
        for (uint256 i; i < numGroups; ++i) {
            uint72 key = _activeGroups[i];
            uint256 vramLimit = uint64(key);
            bool isRunnable = TaskType(uint8(key >> 64)) == TaskType.GPT
                ? canRunGpt && vramLimit <= maxGptVramLimit
                : canRunSd && vramLimit <= maxSdVramLimit;
            if (!isRunnable) continue;
            uint256 head = _groups[key].head;
            if (taskId == 0 || _isBefore(head, taskId)) taskId = head;
        }
        if (taskId != 0) {
            _unlink(taskId);
            emit TaskDequeued(taskId);
        }
    }

    /// @inheritdoc ITaskQueue
    function remove(uint256 taskId) external onlyTask {
        if (!_items[taskId].isQueued) revert TaskNotQueued(taskId);
        _unlink(taskId);
        emit TaskRemoved(taskId);
    }

    /*//////////////////////////////////////////////////////////////
                                  VIEWS
    //////////////////////////////////////////////////////////////*/

    function estimatedMs(TaskType taskType, uint256 cap) public view returns (uint256 ms) {
        uint256 t = uint256(taskType);
        ms = uint256(baseMs[t]) + uint256(perUnitMs[t]) * cap;
        if (cap > type(uint64).max || ms > type(uint64).max) revert EstimateTooLarge(taskType, cap);
    }

    function isQueued(uint256 taskId) external view returns (bool) {
        return _items[taskId].isQueued;
    }

    /// @notice Every queued task id: group after group (in no particular order), each highest value first.
    function queuedTaskIds() external view returns (uint256[] memory ids) {
        ids = new uint256[](size);
        uint256 n;
        for (uint256 i; i < _activeGroups.length; ++i) {
            for (uint256 id = _groups[_activeGroups[i]].head; id != 0; id = _items[id].next) {
                ids[n++] = id;
            }
        }
    }

    /*//////////////////////////////////////////////////////////////
                                INTERNALS
    //////////////////////////////////////////////////////////////*/

    /// @dev feeA / msA > feeB / msB, exactly: fees < 2**128 and estimates < 2**64, products < 2**192.
    function _isHigher(uint256 feeA, uint256 msA, uint256 feeB, uint256 msB) internal pure returns (bool) {
        return feeA * msB > feeB * msA;
    }

    /// @dev Whether queued task a runs before queued task b: higher value, or equal value and older.
    function _isBefore(uint256 a, uint256 b) internal view returns (bool) {
        Item storage x = _items[a];
        Item storage y = _items[b];
        uint256 lhs = uint256(x.fee) * y.estimatedMs;
        uint256 rhs = uint256(y.fee) * x.estimatedMs;
        return lhs > rhs || (lhs == rhs && a < b);
    }

    /// @dev The task that runs last: the lowest of the groups' tails.
    function _lowest() internal view returns (uint256 lowest) {
        uint256 numGroups = _activeGroups.length;
        for (uint256 i; i < numGroups; ++i) {
            uint256 tail = _groups[_activeGroups[i]].tail;
            if (lowest == 0 || _isBefore(lowest, tail)) lowest = tail;
        }
    }

    function _insertSorted(uint256 taskId, uint72 key, uint256 fee, uint256 ms) internal {
        Group storage g = _groups[key];
        if (g.head == 0) {
            _activeGroups.push(key);
            g.activeIndex = uint32(_activeGroups.length);
        }
        // Walk from the tail toward higher values: stop after the first item that is not lower.
        uint256 prev = g.tail;
        while (prev != 0) {
            Item storage p = _items[prev];
            if (!_isHigher(fee, ms, p.fee, p.estimatedMs)) break;
            prev = p.prev;
        }
        Item storage item = _items[taskId];
        // Task ids come from a counter far below 2**64.
        item.prev = uint64(prev);
        uint256 next = prev == 0 ? g.head : _items[prev].next;
        item.next = uint64(next);
        if (prev == 0) g.head = uint64(taskId);
        else _items[prev].next = uint64(taskId);
        if (next == 0) g.tail = uint64(taskId);
        else _items[next].prev = uint64(taskId);
    }

    function _unlink(uint256 taskId) internal {
        Item storage item = _items[taskId];
        uint72 key = item.groupKey;
        Group storage g = _groups[key];
        uint64 prev = item.prev;
        uint64 next = item.next;
        if (prev == 0) g.head = next;
        else _items[prev].next = next;
        if (next == 0) g.tail = prev;
        else _items[next].prev = prev;
        delete _items[taskId];
        --size;
        if (g.head == 0) {
            uint256 index = g.activeIndex - 1;
            uint256 lastIndex = _activeGroups.length - 1;
            if (index != lastIndex) {
                uint72 movedKey = _activeGroups[lastIndex];
                _activeGroups[index] = movedKey;
                _groups[movedKey].activeIndex = uint32(index + 1);
            }
            _activeGroups.pop();
            g.activeIndex = 0;
        }
    }
}
