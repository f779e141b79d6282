// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ResultMatch} from "./lib/ResultMatch.sol";
import {TaskType} from "./lib/Types.sol";
import {TaskSettings} from "./TaskSettings.sol";

/// @title TaskSeals: each node's sealed result, and the rules that decide from the results how rounds end.
/// @notice Each of a task's three rounds commits keccak256(result, nonce, node) or reports an error; once
/// all committed, each discloses; the first two matching disclosures decide (PROTOCOL.md, Task lifecycle
/// step 6; the match rules: Hashes, lib/ResultMatch.sol). A node holds one task at a time, so its
/// commitment, then its disclosed result's hash, live in a slot of its own that every task it runs reuses
/// (`_seals`): a slot written once costs 2,900 gas to write again, a fresh task slot 20,000
/// (docs/contracts.md, "Seals"). The rules here say how each round ends (Settled, Slashed or Cancelled,
/// with its task score from its commit and disclosure positions), at a disclosure or after the deadline
/// (TaskArguments: when the arguments were reported missing); Task carries the ends out (`_endRound`,
/// `_abortAtDecision`): payments, QoS, the nodes' release. A step the nodes could not foresee (the last
/// commitment, the success) moves the deadline so that the next step has `responseWindow` at least.
/// Invariants:
/// - a joined node's `_seals` and `_expected` slots are never zero (UNWRITTEN_SEAL until its first task);
/// - while a node holds a task and has committed a result for it, `_seals[node]` is that commitment until
///   the node discloses, then keccak256 of the result (`_images[node]`: the SD result itself);
/// - a task is decided at most once, by two matching disclosures; a disclosure after the decision is
///   judged against the decided result, kept in its own node's `_expected` / `_expectedImages` at the
///   decision, since the deciding nodes may be sealing a new task by then;
/// - a round is slashed for withholding only when `responseWindow` has passed since the commitments
///   were all in (the deadline is at least that).
abstract contract TaskSeals is TaskSettings {
    using ResultMatch for bytes;

    /*//////////////////////////////////////////////////////////////
                                CONSTANTS
    //////////////////////////////////////////////////////////////*/

    uint256 internal constant NUM_ROUNDS = 3;
    /// @dev Position awards [10, 9, 6] for 1st / 2nd / 3rd, one byte each; position 0 (none) awards 0.
    uint256 internal constant POSITION_AWARDS = 0x0a0906;
    uint256 public constant MAX_RESULT_BYTES = 1024;
    /// @dev keccak256 of the empty result: what an error report counts as (PROTOCOL.md, step 4).
    bytes32 internal constant EMPTY_RESULT_HASH = keccak256("");
    /// @dev A node's seal slots before its first task (written at its join).
    bytes32 internal constant UNWRITTEN_SEAL = bytes32(uint256(1));

    /*//////////////////////////////////////////////////////////////
                                 STORAGE
    //////////////////////////////////////////////////////////////*/

    /// @dev A selected node's commitment until it discloses, then keccak256 of its result. A node holds
    /// one task at a time: its seal always belongs to the task it holds (or held last).
    mapping(address => bytes32) internal _seals;
    /// @dev A node's last disclosed SD result (the perceptual hashes that SD matching compares).
    mapping(address => bytes) internal _images;
    /// @dev What a node that discloses after its task's decision must match: the decided result's hash
    /// (GPT; an error decision: the empty result's) or its images (SD). Written for the one round left at
    /// the decision; the winner's own seal is its node's, reused once the node is released.
    mapping(address => bytes32) internal _expected;
    mapping(address => bytes) internal _expectedImages;

    /*//////////////////////////////////////////////////////////////
                                  SEALS
    //////////////////////////////////////////////////////////////*/

    /// @dev At a node's join: a placeholder (which no keccak256 result can equal) in its seal slots makes
    /// every later write 2,900 gas instead of 20,000, so no task pays for a node's first.
    function _writeSealSlots(address account) internal {
        if (_seals[account] == 0) _seals[account] = UNWRITTEN_SEAL;
        if (_expected[account] == 0) _expected[account] = UNWRITTEN_SEAL;
    }

    /// @dev Seals the caller's commitment for round `round` of the task it holds.
    function _seal(uint256 taskId, uint256 round, bytes32 commitment) internal {
        if (commitment == bytes32(0)) revert EmptyCommitment(taskId, round);
        _seals[msg.sender] = commitment;
    }

    /// @dev A round committed (or reported an error): once all three have, disclosures open, for
    /// responseWindow at least.
    function _afterCommit(uint256 taskId, TaskInfo storage t) internal {
        if (t.numCommits == _numRounds(t)) {
            t.status = TaskStatus.CommitmentsReady;
            emit TaskResultCommitmentsReady(taskId);
            _giveResponseWindow(taskId, t);
        }
    }

    /// @dev The next step gets responseWindow from now: the deadline moves out if it is nearer.
    function _giveResponseWindow(uint256 taskId, TaskInfo storage t) internal {
        uint256 until = block.timestamp + responseWindow;
        if (until > t.deadline) _moveDeadline(taskId, t, until);
    }

    function _moveDeadline(uint256 taskId, TaskInfo storage t, uint256 deadline) internal {
        // block.timestamp + a window of at most 2**32 s fits in 64 bits.
        t.deadline = uint64(deadline);
        emit TaskDeadlineMoved(taskId, deadline);
    }

    /// @dev Opens the caller's seal: `result` and `nonce` must be what it committed. The seal becomes
    /// keccak256(result), and an SD result is kept whole for the distance comparison.
    function _openSeal(uint256 taskId, uint256 round, TaskType taskType, bytes calldata result, bytes32 nonce)
        internal
    {
        _checkSeal(taskId, round, result, nonce);
        _seals[msg.sender] = keccak256(result);
        if (taskType == TaskType.SD) _images[msg.sender] = result;
    }

    /// @dev `result` and `nonce` are what the caller committed (reverts otherwise).
    function _checkSeal(uint256 taskId, uint256 round, bytes calldata result, bytes32 nonce) internal view {
        if (result.length > MAX_RESULT_BYTES) revert ResultTooLong(result.length, MAX_RESULT_BYTES);
        if (keccak256(abi.encodePacked(result, nonce, msg.sender)) != _seals[msg.sender]) {
            revert CommitmentMismatch(taskId, round);
        }
    }

    /// @dev A round's seal while it is its node's: committed with a result (not an error report) and not
    /// ended (the node may be sealing another task by then); zero otherwise.
    function _sealOf(Round storage rd) internal view returns (bytes32) {
        if (rd.commitPos == 0 || rd.isError || rd.state != RoundState.Pending) return 0;
        return _seals[rd.node];
    }

    /*//////////////////////////////////////////////////////////////
                                DECISION
    //////////////////////////////////////////////////////////////*/

    /// @dev The decision rules, in disclosure order d1, d2, d3: d1 ~ d2 decides at once; otherwise d3
    /// decides with d1 (checked first: the earlier discloser wins a tie of the non-transitive SD rule) or
    /// d2, or nothing matches ("Task result illegal"). After a decision each later disclosure is
    /// compared with the decided result: a match is settled, a mismatch slashed. `result`: the bytes just
    /// disclosed (empty for an error report).
    function _afterDisclosure(uint256 taskId, TaskInfo storage t, uint256 round, bytes memory result) internal {
        if (t.decision != Decision.None) {
            bool isMatch = _isDecidedMatch(t, t.rounds[round]);
            _endRound(taskId, t, round, isMatch ? RoundState.Settled : RoundState.Slashed, _positionScore(t.rounds[round]));
            return;
        }
        uint256 numDisclosed = t.numDisclosed;
        if (numDisclosed == 2) {
            uint256 first = _roundAt(t, 1);
            if (_isMatch(t, first, round)) _decide(taskId, t, first, round, result);
        } else if (numDisclosed == 3) {
            uint256 first = _roundAt(t, 1);
            uint256 second = _roundAt(t, 2);
            if (_isMatch(t, first, round)) {
                _decide(taskId, t, first, round, result);
                _endRound(taskId, t, second, RoundState.Slashed, _positionScore(t.rounds[second]));
            } else if (_isMatch(t, second, round)) {
                _decide(taskId, t, second, round, result);
                _endRound(taskId, t, first, RoundState.Slashed, _positionScore(t.rounds[first]));
            } else {
                _abortAtDecision(taskId, t, false);
                // Nobody is slashed or paid: the rounds end Cancelled with their earned QoS scores and the
                // last one refunds the whole fee.
                for (uint256 r; r < NUM_ROUNDS; ++r) {
                    _endRound(taskId, t, r, RoundState.Cancelled, _positionScore(t.rounds[r]));
                }
            }
        }
    }

    /// @dev `winner` (the earlier discloser of the matching pair) and `partner` (the round that just
    /// disclosed `result`) agree. The decided result is kept for a disclosure still to come: the
    /// winner's seal and images are its node's, reused once the node is released.
    function _decide(uint256 taskId, TaskInfo storage t, uint256 winner, uint256 partner, bytes memory result)
        internal
    {
        t.resultRound = uint8(winner);
        Round storage w = t.rounds[winner];
        // The round still to disclose, if any (exactly one is left when two have disclosed).
        address later = t.numDisclosed < NUM_ROUNDS ? t.rounds[_roundAt(t, 0)].node : address(0);
        if (later != address(0) && t.taskType == TaskType.GPT) _expected[later] = _resultHashOf(w);
        if (w.isError) {
            t.decision = Decision.ErrorReported;
            _abortAtDecision(taskId, t, true);
            _endRound(taskId, t, winner, RoundState.Settled, _positionScore(w));
        } else {
            t.decision = Decision.Success;
            if (t.taskType == TaskType.SD) {
                bytes memory images = _images[w.node];
                if (later != address(0)) _expectedImages[later] = images;
                emit TaskSuccess(taskId, images, w.node);
            } else {
                // GPT results match byte for byte: the partner disclosed the winner's bytes, or reported
                // an error, which matches only an empty result.
                emit TaskSuccess(taskId, result, w.node);
            }
            // The result node uploads, the third node discloses: a cancel may not cut them short.
            _giveResponseWindow(taskId, t);
        }
        _endRound(taskId, t, partner, RoundState.Settled, _positionScore(t.rounds[partner]));
    }

    /// @dev A started task cancelled after its deadline (`status`: before the cancel): ends the rounds
    /// still open. Cancel compensation (QoS only, nobody is paid): when no round committed, each scores as
    /// if it had finished in its round position; otherwise only the committed rounds score, in commit
    /// order. Once all committed, a round that has not disclosed withheld its result: it is slashed like a
    /// wrong one, so that withholding never pays better than disclosing (docs/protocol-decisions.md).
    function _endAfterDeadline(uint256 taskId, TaskInfo storage t, TaskStatus status) internal {
        bool isNoneCommitted = t.numCommits == 0;
        bool couldDisclose = status == TaskStatus.CommitmentsReady;
        RoundState[3] memory outcomes;
        uint256[3] memory scores;
        for (uint256 r; r < NUM_ROUNDS; ++r) {
            Round storage rd = t.rounds[r];
            if (rd.state != RoundState.Pending) continue;
            if (couldDisclose && rd.disclosePos == 0) {
                outcomes[r] = RoundState.Slashed;
            } else {
                outcomes[r] = RoundState.Cancelled;
                // A lone node that never committed scores 0: the compensation is for three that waited
                // on one another.
                if (!isNoneCommitted || _numRounds(t) != 1) {
                    scores[r] = 2 * _award(isNoneCommitted ? r + 1 : rd.commitPos);
                }
            }
        }
        _endOpenRounds(taskId, t, outcomes, scores);
    }

    /// @dev Ends the rounds still Pending with the given outcomes and scores. The last _endRound deletes
    /// the task: the rounds to end are read before any ends.
    function _endOpenRounds(
        uint256 taskId,
        TaskInfo storage t,
        RoundState[3] memory outcomes,
        uint256[3] memory scores
    ) internal {
        bool[3] memory isOpen;
        for (uint256 r; r < NUM_ROUNDS; ++r) {
            // A sampled task's rounds 1 and 2 have no node until an audit.
            isOpen[r] = t.rounds[r].state == RoundState.Pending && t.rounds[r].node != address(0);
        }
        for (uint256 r; r < NUM_ROUNDS; ++r) {
            if (isOpen[r]) _endRound(taskId, t, r, outcomes[r], scores[r]);
        }
    }

    /*//////////////////////////////////////////////////////////////
                                MATCHING
    //////////////////////////////////////////////////////////////*/

    /// @dev Two disclosed rounds of an undecided task (both nodes still hold it). An error report counts
    /// as an empty disclosed result (PROTOCOL.md, step 4): it matches another error report and an empty
    /// GPT result; an empty SD result is never valid, so it matches no SD result. GPT results are
    /// compared by their hashes (equal bytes, equal keccak256).
    function _isMatch(TaskInfo storage t, uint256 a, uint256 b) internal view returns (bool) {
        Round storage ra = t.rounds[a];
        Round storage rb = t.rounds[b];
        if (ra.isError && rb.isError) return true;
        if (t.taskType == TaskType.GPT) return _resultHashOf(ra) == _resultHashOf(rb);
        if (ra.isError || rb.isError) return false;
        return _images[ra.node].isSimilarImageHashes(_images[rb.node], distanceThreshold);
    }

    /// @dev A round disclosed after the decision, against the decided result.
    function _isDecidedMatch(TaskInfo storage t, Round storage rd) internal view returns (bool) {
        if (t.taskType == TaskType.GPT) return _resultHashOf(rd) == _expected[rd.node];
        bool isErrorDecided = t.decision == Decision.ErrorReported;
        if (isErrorDecided || rd.isError) return isErrorDecided && rd.isError;
        return _images[rd.node].isSimilarImageHashes(_expectedImages[rd.node], distanceThreshold);
    }

    function _resultHashOf(Round storage rd) internal view returns (bytes32) {
        return rd.isError ? EMPTY_RESULT_HASH : _seals[rd.node];
    }

    /*//////////////////////////////////////////////////////////////
                                 ROUNDS
    //////////////////////////////////////////////////////////////*/

    /// @dev Commitments and reports are taken until the deadline.
    function _requireBeforeDeadline(uint256 taskId, TaskInfo storage t) internal view {
        uint256 deadline = t.deadline;
        if (block.timestamp > deadline) revert DeadlinePassed(taskId, deadline, block.timestamp);
    }

    /// @dev The caller's round `round` of the task.
    function _callerRound(TaskInfo storage t, uint256 taskId, uint256 round) internal view returns (Round storage rd) {
        if (round >= NUM_ROUNDS) revert InvalidRound(round);
        rd = t.rounds[round];
        if (rd.node != msg.sender) revert NotSelectedNode(taskId, round, msg.sender);
    }

    /*//////////////////////////////////////////////////////////////
                                POSITIONS
    //////////////////////////////////////////////////////////////*/

    /// @dev The rounds a task runs now: 1 for a sampled task before its audit, else 3.
    function _numRounds(TaskInfo storage t) internal view returns (uint256) {
        return t.auditRate != 0 && !t.isAudited ? 1 : NUM_ROUNDS;
    }

    /// @dev The round that disclosed at `position` (1-based); one exists for every position <= numDisclosed.
    function _roundAt(TaskInfo storage t, uint256 position) internal view returns (uint256 r) {
        while (t.rounds[r].disclosePos != position) ++r;
    }

    function _award(uint256 position) internal pure returns (uint256) {
        return (POSITION_AWARDS >> (8 * (NUM_ROUNDS - position))) & 0xff;
    }

    /// @dev A round's task score: the awards of its commit and disclosure positions.
    function _positionScore(Round storage rd) internal view returns (uint256) {
        return _award(rd.commitPos) + _award(rd.disclosePos);
    }

    /*//////////////////////////////////////////////////////////////
                           SETTLEMENT (IN TASK)
    //////////////////////////////////////////////////////////////*/

    /// @dev Ends round `round` of a task with `outcome`, QoS recording `taskScore`; the last round to end
    /// ends the task and deletes its storage.
    function _endRound(uint256 taskId, TaskInfo storage t, uint256 round, RoundState outcome, uint256 taskScore)
        internal
        virtual;

    /// @dev The decision aborts the task: two error reports matched (`isErrorReported`), or no two of the
    /// three disclosures did.
    function _abortAtDecision(uint256 taskId, TaskInfo storage t, bool isErrorReported) internal virtual;
}
