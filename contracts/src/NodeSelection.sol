// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {NodeStatus} from "./lib/Types.sol";

/// @title NodeSelection: the available nodes, indexed so that every draw and every update is bounded.
/// @notice The work of each function depends on constants only (20 weight classes, a 3-level tree of 16
/// over VRAM in GB), never on the number of nodes or card models: a network of 10,000 nodes selects at
/// the price of one of ten.
///
/// The weights are QoS weights, integers in 1..20. Every available node sits in two lists:
/// - its card-model group's list for its weight class (the draws inside one group);
/// - one pool's list for (its VRAM, its weight class): pool TRIO when its group has >= 3 available nodes
///   (the nodes a GPT task can start on), pool SMALL otherwise. A group crossing 3 moves <= 3 nodes.
/// A weight class of n nodes of weight w weighs n * w, so a weighted draw picks a class by its counts
/// (packed, 2 slots) and a node uniformly inside it. Per pool, a 16-ary tree of three levels sums
/// (count, weight) over VRAM 0..4095, so "the nodes with VRAM >= limit" is a walk of 3 levels.
/// Drawing a node by weight among the eligible nodes of every group is the protocol's "a group by its
/// summed weight, then a member by its weight" in one step (P = W_g / W * w / W_g = w / W).
/// Pool JOINED counts the nodes that have joined (any status but Quit) and, in its weight field, the
/// groups with >= 3 of them: whether a task could ever run, whatever the nodes are doing now.
///
/// Removing a node from a list moves the last one into its place; the vacated slot is left as it is
/// (its count says it is free), and count and tree slots keep a written-once mark, so that the next
/// node to enter writes a non-zero slot (2,900 gas) rather than a zero one (20,000). Limits: fewer than
/// 2**23 nodes under one tree entry, 2**24 - 1 in one list.
abstract contract NodeSelection {
    /*//////////////////////////////////////////////////////////////
                                CONSTANTS
    //////////////////////////////////////////////////////////////*/

    uint256 public constant MAX_VRAM_GB = 4095;
    uint256 internal constant MAX_WEIGHT = 20;
    uint256 internal constant POOL_SMALL = 0;
    uint256 internal constant POOL_TRIO = 1;
    uint256 internal constant POOL_JOINED = 2;
    uint256 internal constant TRIO = 3;

    /// @dev A tree entry: count << 40 | weight, 64 bits, four to a slot.
    uint256 internal constant COUNT_SHIFT = 40;
    uint256 internal constant WEIGHT_MASK = (1 << 40) - 1;
    /// @dev 63 bits: the slot's top bit is the written-once mark (count < 2**23 per entry).
    uint256 internal constant ENTRY_MASK = (1 << 63) - 1;
    uint256 internal constant ONE_NODE = 1 << 40;
    /// @dev A class count: 24 bits, ten to a slot.
    uint256 internal constant CLASS_MASK = (1 << 24) - 1;
    /// @dev Set in every count and tree slot once written and never cleared: a slot that empties keeps
    /// a non-zero value, so refilling it costs 2,900 gas, not 20,000. A sparse network would otherwise
    /// pay the zero-slot price each time a node returns to a VRAM or class nobody else holds.
    uint256 internal constant WRITTEN = 1 << 255;
    /// @dev A draw position past every weight: a walk with it only sums.
    uint256 internal constant NO_DRAW = type(uint256).max;

    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @dev More than 2**24 - 1 nodes of one weight class in one list.
    error ListFull(uint256 weightClass);
    /// @dev A draw found no node: callers check capacity first, so this guards against bugs.
    error NothingToDraw();

    /*//////////////////////////////////////////////////////////////
                                 STORAGE
    //////////////////////////////////////////////////////////////*/

    /// @dev A card model. `size` counts its available nodes, `joined` the nodes not Quit.
    struct CardGroup {
        uint32 gpuVramGB;
        uint32 size;
        uint32 joined;
        uint64 totalWeight;
    }

    /// @dev A node as Node stores it. The first slot holds what a status change reads and writes: the
    /// status, the task, and where an available node sits (1-based positions in its group's and its
    /// pool's class lists, its weight class, its pool), so that entering or leaving the lists writes one
    /// slot of the node, not two.
    struct NodeRecord {
        NodeStatus status;
        uint16 gpuVramGB; // <= MAX_VRAM_GB
        uint64 taskId; // the task the node holds, 0 when it holds none
        uint96 stake; // what the node paid to join (Node.setNodeStake keeps it below 2**96)
        uint24 groupPos;
        uint24 poolPos;
        uint8 weight;
        uint8 pool;
        bytes32 cardModelKey; // keccak256(abi.encode(gpuName, gpuVramGB, runtime))
        string gpuName;
        string runtime;
    }

    mapping(bytes32 => CardGroup) internal _groups;
    mapping(bytes32 => uint256[2]) internal _groupClassCounts;
    /// @dev group key => weight << 32 | position => node.
    mapping(bytes32 => mapping(uint256 => address)) internal _groupMembers;
    /// @dev pool << 32 | vram => class counts.
    mapping(uint256 => uint256[2]) internal _poolClassCounts;
    /// @dev pool << 96 | vram << 64 | weight << 32 | position => node.
    mapping(uint256 => address) internal _poolMembers;
    /// @dev pool << 24 | level << 16 | slot => four tree entries.
    mapping(uint256 => uint256) internal _tree;
    mapping(address => NodeRecord) internal _nodes;

    /*//////////////////////////////////////////////////////////////
                          ENTERING AND LEAVING
    //////////////////////////////////////////////////////////////*/

    function _enterPools(address node, bytes32 key, uint256 vram, uint256 weight) internal {
        CardGroup storage g = _groups[key];
        uint256 size = g.size + 1;
        g.size = uint32(size);
        // weight <= 20 and a group has < 2**32 members: no overflow of 64 bits.
        unchecked {
            g.totalWeight += uint64(weight);
        }
        uint256 groupPos = _incClass(_groupClassCounts[key], weight);
        _groupMembers[key][(weight << 32) | groupPos] = node;
        NodeRecord storage seat = _nodes[node];
        seat.groupPos = uint24(groupPos);
        seat.weight = uint8(weight);
        if (size == TRIO) _movePool(key, vram, POOL_SMALL, POOL_TRIO, node);
        _poolInsert(size >= TRIO ? POOL_TRIO : POOL_SMALL, vram, weight, node, seat);
    }

    function _leavePools(address node, bytes32 key, uint256 vram) internal {
        _leavePool(node, vram);
        _leaveGroup(node, key, vram, true);
    }

    /// @dev The three members a GPT task drew left their group's lists one by one (each draw excludes
    /// the ones before); now they leave their pool, and the group's other members change pool once if
    /// the group fell below 3. Moving them as each member left would also move the members drawn next.
    function _leaveAsTrio(bytes32 key, uint256 vram, address[3] memory members, uint256 sizeBefore) internal {
        for (uint256 i; i < TRIO; ++i) {
            _leavePool(members[i], vram);
        }
        if (sizeBefore - TRIO < TRIO && sizeBefore > TRIO) _movePool(key, vram, POOL_TRIO, POOL_SMALL, address(0));
    }

    function _leavePool(address node, uint256 vram) internal {
        NodeRecord storage seat = _nodes[node];
        _poolRemove(seat.pool, vram, seat.weight, seat.poolPos);
    }

    function _leaveGroup(address node, bytes32 key, uint256 vram, bool isMovingAtCrossing) internal {
        NodeRecord storage seat = _nodes[node];
        uint256 weight = seat.weight;
        uint256[2] storage counts = _groupClassCounts[key];
        uint256 last = _classCount(counts, weight);
        uint256 pos = seat.groupPos;
        if (pos != last) {
            address moved = _groupMembers[key][(weight << 32) | last];
            _groupMembers[key][(weight << 32) | pos] = moved;
            _nodes[moved].groupPos = uint24(pos);
        }
        _decClass(counts, weight);
        CardGroup storage g = _groups[key];
        uint256 size = g.size - 1;
        g.size = uint32(size);
        unchecked {
            g.totalWeight -= uint64(weight);
        }
        if (isMovingAtCrossing && size == TRIO - 1) _movePool(key, vram, POOL_TRIO, POOL_SMALL, address(0));
    }

    /// @dev The group crossed 3 available nodes: its other members (at most 2) change pool.
    function _movePool(bytes32 key, uint256 vram, uint256 from, uint256 to, address except) internal {
        uint256[2] storage counts = _groupClassCounts[key];
        for (uint256 w = 1; w <= MAX_WEIGHT; ++w) {
            uint256 n = _classCount(counts, w);
            for (uint256 pos = 1; pos <= n; ++pos) {
                address member = _groupMembers[key][(w << 32) | pos];
                if (member == except) continue;
                NodeRecord storage seat = _nodes[member];
                _poolRemove(from, vram, w, seat.poolPos);
                _poolInsert(to, vram, w, member, seat);
            }
        }
    }

    function _poolInsert(uint256 pool, uint256 vram, uint256 weight, address node, NodeRecord storage seat) internal {
        uint256 pos = _incClass(_poolClassCounts[(pool << 32) | vram], weight);
        _poolMembers[_poolKey(pool, vram, weight, pos)] = node;
        seat.pool = uint8(pool);
        seat.poolPos = uint24(pos);
        _treeAdd(pool, vram, ONE_NODE | weight);
    }

    function _poolRemove(uint256 pool, uint256 vram, uint256 weight, uint256 pos) internal {
        uint256[2] storage counts = _poolClassCounts[(pool << 32) | vram];
        uint256 last = _classCount(counts, weight);
        if (pos != last) {
            address moved = _poolMembers[_poolKey(pool, vram, weight, last)];
            _poolMembers[_poolKey(pool, vram, weight, pos)] = moved;
            _nodes[moved].poolPos = uint24(pos);
        }
        _decClass(counts, weight);
        _treeSub(pool, vram, ONE_NODE | weight);
    }

    /// @dev A node joined (status leaves Quit): counted in JOINED, with its group once it makes 3.
    function _countJoined(bytes32 key, uint256 vram) internal {
        CardGroup storage g = _groups[key];
        uint256 joined = g.joined + 1;
        g.joined = uint32(joined);
        _treeAdd(POOL_JOINED, vram, ONE_NODE | (joined == TRIO ? 1 : 0));
    }

    /// @dev A node left the network (status Quit).
    function _uncountJoined(bytes32 key, uint256 vram) internal {
        CardGroup storage g = _groups[key];
        uint256 joined = g.joined;
        g.joined = uint32(joined - 1);
        _treeSub(POOL_JOINED, vram, ONE_NODE | (joined == TRIO ? 1 : 0));
    }

    /*//////////////////////////////////////////////////////////////
                                  DRAWS
    //////////////////////////////////////////////////////////////*/

    /// @dev The (count, weight) sums of pools SMALL and TRIO over VRAM >= vramLimit.
    function _poolSumsFrom(uint256 vramLimit) internal view returns (uint256 small, uint256 trio) {
        return (_sumFrom(POOL_SMALL, vramLimit), _sumFrom(POOL_TRIO, vramLimit));
    }

    /// @dev An available node with VRAM >= vramLimit, by weight, from both pools (`small` and `trio`:
    /// their sums from _poolSumsFrom).
    function _drawAny(uint256 vramLimit, uint256 small, uint256 trio, uint256 random) internal view returns (address) {
        small &= WEIGHT_MASK;
        trio &= WEIGHT_MASK;
        if (small + trio == 0) revert NothingToDraw();
        uint256 r = random % (small + trio);
        return r < small ? _drawFrom(POOL_SMALL, vramLimit, r) : _drawFrom(POOL_TRIO, vramLimit, r - small);
    }

    /// @dev An available node of one group, by weight.
    function _drawInGroup(bytes32 key, uint256 random) internal view returns (address) {
        uint256 total = _groups[key].totalWeight;
        if (total == 0) revert NothingToDraw();
        (uint256 weight, uint256 pos) = _pickClass(_groupClassCounts[key], random % total);
        return _groupMembers[key][(weight << 32) | pos];
    }

    function _drawFrom(uint256 pool, uint256 vramLimit, uint256 r) internal view returns (address) {
        (uint256 vram, uint256 rest) = _treeFind(pool, vramLimit, r);
        (uint256 weight, uint256 pos) = _pickClass(_poolClassCounts[(pool << 32) | vram], rest);
        return _poolMembers[_poolKey(pool, vram, weight, pos)];
    }

    /// @dev The weight class holding the r-th unit of weight, and the position in it (1-based).
    /// A word of ten empty classes is skipped whole (most weights are high: 19 or 20).
    function _pickClass(uint256[2] storage counts, uint256 r) internal view returns (uint256, uint256) {
        // Counts < 2**24 and weights <= 20: no product or difference can wrap.
        unchecked {
            for (uint256 half; half < 2; ++half) {
                uint256 word = counts[half] & ~WRITTEN;
                for (uint256 w = half * 10 + 1; word != 0; ++w) {
                    uint256 classWeight = (word & CLASS_MASK) * w;
                    if (r < classWeight) return (w, r / w + 1);
                    r -= classWeight;
                    word >>= 24;
                }
            }
        }
        revert NothingToDraw();
    }

    /*//////////////////////////////////////////////////////////////
                            CAPACITY QUERIES
    //////////////////////////////////////////////////////////////*/

    /// @dev Available nodes with VRAM >= vramLimit, in both pools / in TRIO.
    function _availableFrom(uint256 vramLimit) internal view returns (uint256 any, uint256 trio) {
        if (vramLimit > MAX_VRAM_GB) return (0, 0);
        trio = _sumFrom(POOL_TRIO, vramLimit) >> COUNT_SHIFT;
        any = (_sumFrom(POOL_SMALL, vramLimit) >> COUNT_SHIFT) + trio;
    }

    /// @dev Joined nodes with VRAM >= vramLimit, and groups of >= 3 joined nodes among them.
    function _joinedFrom(uint256 vramLimit) internal view returns (uint256 nodes, uint256 trios) {
        if (vramLimit > MAX_VRAM_GB) return (0, 0);
        uint256 sum = _sumFrom(POOL_JOINED, vramLimit);
        return (sum >> COUNT_SHIFT, sum & WEIGHT_MASK);
    }

    /// @dev The largest VRAM v such that `need` nodes of the pools in `withSmall`/TRIO have VRAM >= v.
    function _kthLargest(bool withSmall, uint256 need) internal view returns (bool found, uint256 vram) {
        uint256 seen;
        uint256 index;
        for (uint256 level; level < 3; ++level) {
            // Children of `index` at this level, from the largest VRAM down.
            uint256 first = level == 0 ? 0 : index << 4;
            bool descended;
            for (uint256 i = first + 15;; --i) {
                uint256 n = _entry(POOL_TRIO, level, i) >> COUNT_SHIFT;
                if (withSmall) n += _entry(POOL_SMALL, level, i) >> COUNT_SHIFT;
                if (seen + n >= need && n != 0) {
                    index = i;
                    descended = true;
                    break;
                }
                seen += n;
                if (i == first) break;
            }
            if (!descended) return (false, 0);
        }
        return (true, index);
    }

    /*//////////////////////////////////////////////////////////////
                            THE VRAM TREE
    //////////////////////////////////////////////////////////////*/

    /// @dev Level 0: VRAM >> 8 (16 entries), level 1: VRAM >> 4 (256), level 2: VRAM (4,096).
    function _entry(uint256 pool, uint256 level, uint256 index) internal view returns (uint256) {
        uint256 word = _tree[(pool << 24) | (level << 16) | (index >> 2)];
        return (word >> ((index & 3) << 6)) & ENTRY_MASK;
    }

    function _treeAdd(uint256 pool, uint256 vram, uint256 packed) internal {
        for (uint256 level; level < 3; ++level) {
            uint256 index = vram >> (8 - 4 * level);
            uint256 key = (pool << 24) | (level << 16) | (index >> 2);
            _tree[key] = (_tree[key] + (packed << ((index & 3) << 6))) | WRITTEN;
        }
    }

    function _treeSub(uint256 pool, uint256 vram, uint256 packed) internal {
        for (uint256 level; level < 3; ++level) {
            uint256 index = vram >> (8 - 4 * level);
            _tree[(pool << 24) | (level << 16) | (index >> 2)] -= packed << ((index & 3) << 6);
        }
    }

    /// @dev The sum of the entries with VRAM >= from (from <= MAX_VRAM_GB).
    function _sumFrom(uint256 pool, uint256 from) internal view returns (uint256 sum) {
        (,,,, sum) = _climb(pool, from, NO_DRAW);
    }

    /// @dev The VRAM holding the r-th unit of weight among VRAM >= from (r < the weight of _sumFrom),
    /// and r's rest inside it.
    function _treeFind(uint256 pool, uint256 from, uint256 r) internal view returns (uint256, uint256) {
        (bool found, uint256 level, uint256 index, uint256 rest,) = _climb(pool, from, r);
        if (!found) revert NothingToDraw();
        return _descend(pool, level, index, rest);
    }

    /// @dev Walks the entries with VRAM >= from, climbing the tree: at each level, the entries left in the
    /// block of 16 that holds `from`'s position, then the parent level from the next block on; a position
    /// at the start of its block takes the parent entry instead (from = 0 reads level 0 only, 4 words). It
    /// stops at the entry where the r-th unit of weight falls (found: its level and index, and r's rest
    /// inside it); `sum` adds up the entries walked before (all of them for r = NO_DRAW).
    function _climb(uint256 pool, uint256 from, uint256 r)
        internal
        view
        returns (bool found, uint256 level, uint256 index, uint256 rest, uint256 sum)
    {
        uint256 lo = from;
        level = 2;
        while (true) {
            bool isTop = level == 0;
            if (isTop ? lo < 16 : lo & 15 != 0) {
                uint256 part;
                (found, index, r, part) = _scanRange(pool, level, lo, isTop ? 15 : lo | 15, r);
                sum += part;
                if (found) return (true, level, index, r, sum);
                lo = (lo >> 4) + 1;
            } else {
                lo >>= 4;
            }
            if (isTop) return (false, 0, 0, r, sum);
            --level;
        }
    }

    /// @dev From an entry down to its leaf: at each level, the child where r falls.
    function _descend(uint256 pool, uint256 level, uint256 index, uint256 r) internal view returns (uint256, uint256) {
        bool found;
        for (; level < 2; ++level) {
            (found, index, r,) = _scanRange(pool, level + 1, index << 4, (index << 4) | 15, r);
            if (!found) revert NothingToDraw();
        }
        return (index, r);
    }

    /// @dev The entries [from, to] of one level, inside one block of 16, each word read once and skipped
    /// when empty: the entry where the r-th unit of weight falls (and r's rest inside it), else r less
    /// the range's weight; `sum` adds up the entries before it (count and weight).
    function _scanRange(uint256 pool, uint256 level, uint256 from, uint256 to, uint256 r)
        internal
        view
        returns (bool, uint256, uint256, uint256 sum)
    {
        uint256 base = (pool << 24) | (level << 16);
        // At most 16 entries of < 2**63 each; r only decreases by weights it is not below.
        unchecked {
            for (uint256 w = from >> 2; w <= to >> 2; ++w) {
                uint256 word = _tree[base | w] & ~WRITTEN;
                if (word == 0) continue;
                word = _keepLanes(word, w == from >> 2 ? from & 3 : 0, w == to >> 2 ? to & 3 : 3);
                // The word's entries summed at once; entry by entry only in the word where r falls.
                uint256 wordSum = _sumLanes(word);
                if (r >= wordSum & WEIGHT_MASK) {
                    r -= wordSum & WEIGHT_MASK;
                    sum += wordSum;
                    continue;
                }
                for (uint256 lane; lane < 4; ++lane) {
                    uint256 entry = (word >> (lane << 6)) & ENTRY_MASK;
                    uint256 weight = entry & WEIGHT_MASK;
                    if (r < weight) return (true, (w << 2) | lane, r, sum);
                    r -= weight;
                    sum += entry;
                }
            }
        }
        return (false, 0, r, sum);
    }

    /// @dev The word's entries first..last, the others zeroed.
    function _keepLanes(uint256 word, uint256 first, uint256 last) internal pure returns (uint256 kept) {
        kept = (word >> (first << 6)) << (first << 6);
        if (last != 3) kept &= (1 << ((last + 1) << 6)) - 1;
    }

    /// @dev The four entries of a word summed (a weight is < 2**28 per entry: no entry's weight carries
    /// into its count). `word` has no written-once mark.
    function _sumLanes(uint256 word) internal pure returns (uint256) {
        unchecked {
            return (word & ENTRY_MASK) + ((word >> 64) & ENTRY_MASK) + ((word >> 128) & ENTRY_MASK) + (word >> 192);
        }
    }

    /*//////////////////////////////////////////////////////////////
                             CLASS COUNTS
    //////////////////////////////////////////////////////////////*/

    function _classCount(uint256[2] storage counts, uint256 weight) internal view returns (uint256) {
        return (counts[(weight - 1) / 10] >> (((weight - 1) % 10) * 24)) & CLASS_MASK;
    }

    /// @dev Adds one to the class and returns its new count: the newcomer's position.
    function _incClass(uint256[2] storage counts, uint256 weight) internal returns (uint256 n) {
        uint256 shift = ((weight - 1) % 10) * 24;
        uint256 word = counts[(weight - 1) / 10];
        n = ((word >> shift) & CLASS_MASK) + 1;
        if (n > CLASS_MASK) revert ListFull(weight);
        counts[(weight - 1) / 10] = (word + (1 << shift)) | WRITTEN;
    }

    function _decClass(uint256[2] storage counts, uint256 weight) internal {
        counts[(weight - 1) / 10] -= 1 << (((weight - 1) % 10) * 24);
    }

    function _poolKey(uint256 pool, uint256 vram, uint256 weight, uint256 pos) internal pure returns (uint256) {
        return (pool << 96) | (vram << 64) | (weight << 32) | pos;
    }
}
