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
/// highest first, equal values first come first served. The non-empty groups are bits of a bitmap
/// ordered by (type, vramLimit), so a dequeue reads only the groups the available nodes can take: groups
/// that no available node could run (held "runnable" by paused nodes) cost a dispatch nothing. The
/// queue holds the order only: fees stay in Task, which alone may change the queue.
/// Invariants: `size` = the number of queued tasks = the sum of the groups' sizes; a group's bit in
/// `_groupBits` is set iff the group is non-empty, and a word's bit in `_groupWords` iff the word is
/// non-zero; every list is sorted by non-increasing value; every queued vramLimit is <= MAX_VRAM_LIMIT.
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
    /// @dev No node can have more VRAM than MAX_VRAM_LIMIT: Task never queues such a task.
    error InvalidVramLimit(uint256 vramLimit);

    /*//////////////////////////////////////////////////////////////
                                CONSTANTS
    //////////////////////////////////////////////////////////////*/

    /// @notice The floor when no task is queued.
    uint256 public constant NO_FLOOR = type(uint256).max;
    /// @dev Node.MAX_VRAM_GB: Task queues only tasks that three joined nodes could run.
    uint256 internal constant MAX_VRAM_LIMIT = 4095;

    /*//////////////////////////////////////////////////////////////
                                 STORAGE
    //////////////////////////////////////////////////////////////*/

    struct Item {
        uint128 fee;
        uint64 estimatedMs;
        uint64 next; // toward lower values, 0 at the tail
        uint64 prev; // toward higher values, 0 at the head
        uint16 groupKey; // taskType << 12 | vramLimit
        bool isQueued;
    }

    struct Group {
        uint64 head;
        uint64 tail;
    }

    address public task;
    INode public node;
    uint256 public size;
    uint256 public sizeLimit = 50;
    /// @notice Estimated run time of a task: baseMs[type] + perUnitMs[type] * cap (cap = images or tokens).
    uint64[2] public baseMs = [uint64(20_000), uint64(10_000)];
    uint64[2] public perUnitMs = [uint64(30_000), uint64(50)];

    mapping(uint256 => Item) internal _items;
    mapping(uint256 => Group) internal _groups;
    /// @dev The non-empty groups: bit `key & 255` of word `key >> 8`, key = taskType << 12 | vramLimit
    /// (words 0..15 SD, 16..31 GPT, each over 256 vram limits in order).
    mapping(uint256 => uint256) internal _groupBits;
    /// @dev Bit w set iff word w of `_groupBits` is non-zero.
    uint256 internal _groupWords;

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
        returns (uint256 evictedTaskId, uint256 floor)
    {
        if (_items[taskId].isQueued) revert TaskAlreadyQueued(taskId);
        if (vramLimit > MAX_VRAM_LIMIT) revert InvalidVramLimit(vramLimit);
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
        // Task bounds fee to 128 bits; vramLimit <= MAX_VRAM_LIMIT; ms < 2**64 (estimatedMs).
        uint256 key = _groupKey(uint256(taskType), vramLimit);
        Item storage item = _items[taskId];
        item.fee = uint128(fee);
        item.estimatedMs = uint64(ms);
        item.groupKey = uint16(key);
        item.isQueued = true;
        _insertSorted(taskId, key, fee, ms);
        ++size;
        emit TaskQueued(taskId, taskType, vramLimit, fee, ms);
        floor = _floor();
    }

    /// @inheritdoc ITaskQueue
    /// @dev One Node.capacity call, then the heads of the groups whose vramLimit the available nodes can
    /// take, found from the bitmap: a group above the capacity is not read at all.
    function popRunnable() external onlyTask returns (uint256 taskId, uint256 floor) {
        (bool canRunSd, uint256 maxSdVramLimit, bool canRunGpt, uint256 maxGptVramLimit) = node.capacity();
        if (canRunSd) taskId = _bestHead(uint256(TaskType.SD), maxSdVramLimit, 0);
        if (canRunGpt) taskId = _bestHead(uint256(TaskType.GPT), maxGptVramLimit, taskId);
        if (taskId != 0) {
            _unlink(taskId);
            emit TaskDequeued(taskId);
        }
        floor = _floor();
    }

    /// @inheritdoc ITaskQueue
    function remove(uint256 taskId) external onlyTask returns (uint256 floor) {
        if (!_items[taskId].isQueued) revert TaskNotQueued(taskId);
        _unlink(taskId);
        emit TaskRemoved(taskId);
        floor = _floor();
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

    /// @notice Every queued task id: group after group (SD, then GPT, by vramLimit), each highest value
    /// first.
    function queuedTaskIds() external view returns (uint256[] memory ids) {
        ids = new uint256[](size);
        uint256 n;
        for (uint256 words = _groupWords; words != 0; words &= words - 1) {
            uint256 w = _lowestBit(words);
            for (uint256 bits = _groupBits[w]; bits != 0; bits &= bits - 1) {
                for (uint256 id = _groups[(w << 8) | _lowestBit(bits)].head; id != 0; id = _items[id].next) {
                    ids[n++] = id;
                }
            }
        }
    }

    /// @notice The lowest vramLimit among the queued tasks, NO_FLOOR when none is queued.
    function queueFloor() external view returns (uint256) {
        return _floor();
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

    /// @dev The task that runs last: the lowest of the groups' tails (every group: a full queue's push).
    function _lowest() internal view returns (uint256 lowest) {
        for (uint256 words = _groupWords; words != 0; words &= words - 1) {
            uint256 w = _lowestBit(words);
            for (uint256 bits = _groupBits[w]; bits != 0; bits &= bits - 1) {
                uint256 tail = _groups[(w << 8) | _lowestBit(bits)].tail;
                if (lowest == 0 || _isBefore(lowest, tail)) lowest = tail;
            }
        }
    }

    /// @dev The best of `best` and the heads of the groups of `taskType` with vramLimit <= maxVramLimit.
    function _bestHead(uint256 taskType, uint256 maxVramLimit, uint256 best) internal view returns (uint256) {
        if (maxVramLimit > MAX_VRAM_LIMIT) maxVramLimit = MAX_VRAM_LIMIT;
        uint256 last = _groupKey(taskType, maxVramLimit);
        uint256 firstWord = taskType << 4;
        // The type's words up to the last one's: bits firstWord..last >> 8 (last >> 8 < 32).
        uint256 words = (_groupWords >> firstWord) & (type(uint256).max >> (255 - ((last >> 8) - firstWord)));
        for (; words != 0; words &= words - 1) {
            uint256 w = firstWord + _lowestBit(words);
            uint256 bits = _groupBits[w];
            if (w == last >> 8) bits &= type(uint256).max >> (255 - (last & 255));
            for (; bits != 0; bits &= bits - 1) {
                uint256 head = _groups[(w << 8) | _lowestBit(bits)].head;
                if (best == 0 || _isBefore(head, best)) best = head;
            }
        }
        return best;
    }

    /// @dev The lowest vramLimit among the queued tasks of both types, NO_FLOOR when none is queued.
    function _floor() internal view returns (uint256 lowest) {
        lowest = NO_FLOOR;
        uint256 words = _groupWords;
        for (uint256 taskType; taskType < 2; ++taskType) {
            uint256 typeWords = (words >> (taskType << 4)) & 0xffff;
            if (typeWords == 0) continue;
            uint256 w = (taskType << 4) + _lowestBit(typeWords);
            uint256 vramLimit = (((w << 8) | _lowestBit(_groupBits[w])) & MAX_VRAM_LIMIT);
            if (vramLimit < lowest) lowest = vramLimit;
        }
    }

    function _groupKey(uint256 taskType, uint256 vramLimit) internal pure returns (uint256) {
        return (taskType << 12) | vramLimit;
    }

    /// @dev The index of the lowest set bit of x (x != 0).
    function _lowestBit(uint256 x) internal pure returns (uint256 r) {
        // x != 0, so ~x + 1 cannot overflow; x & -x keeps the lowest set bit alone.
        unchecked {
            x &= ~x + 1;
        }
        if (x >> 128 != 0) (x, r) = (x >> 128, r | 128);
        if (x >> 64 != 0) (x, r) = (x >> 64, r | 64);
        if (x >> 32 != 0) (x, r) = (x >> 32, r | 32);
        if (x >> 16 != 0) (x, r) = (x >> 16, r | 16);
        if (x >> 8 != 0) (x, r) = (x >> 8, r | 8);
        if (x >> 4 != 0) (x, r) = (x >> 4, r | 4);
        if (x >> 2 != 0) (x, r) = (x >> 2, r | 2);
        if (x >> 1 != 0) r |= 1;
    }

    function _insertSorted(uint256 taskId, uint256 key, uint256 fee, uint256 ms) internal {
        Group storage g = _groups[key];
        if (g.head == 0) {
            uint256 w = key >> 8;
            _groupBits[w] |= 1 << (key & 255);
            _groupWords |= 1 << w;
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
        uint256 key = item.groupKey;
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
            uint256 w = key >> 8;
            uint256 bits = _groupBits[w] & ~(1 << (key & 255));
            _groupBits[w] = bits;
            if (bits == 0) _groupWords &= ~(1 << w);
        }
    }
}
