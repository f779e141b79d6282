// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title ResultMatch: the match rules of PROTOCOL.md (Hashes) for two disclosed results.
/// @notice GPT results match when their bytes are equal. SD results match when they have the same
/// non-zero length, a multiple of 8, and every pair of 8-byte blocks (one 64-bit perceptual hash per
/// image) differs in fewer than `threshold` bits.
library ResultMatch {
    uint256 internal constant HASH_BYTES = 8;

    function isSameBytes(bytes memory a, bytes memory b) internal pure returns (bool) {
        return a.length == b.length && keccak256(a) == keccak256(b);
    }

    function isSimilarImageHashes(bytes memory a, bytes memory b, uint256 threshold) internal pure returns (bool) {
        uint256 length = a.length;
        if (length == 0 || length != b.length || length % HASH_BYTES != 0) return false;
        // offset < length <= memory size: the additions cannot overflow.
        unchecked {
            for (uint256 offset; offset < length; offset += HASH_BYTES) {
                uint256 x;
                uint256 y;
                /// @solidity memory-safe-assembly
                assembly {
                    // The 8 bytes at `offset`: the top 64 bits of the 32-byte word that starts there.
                    x := shr(192, mload(add(add(a, 0x20), offset)))
                    y := shr(192, mload(add(add(b, 0x20), offset)))
                }
                if (popCount64(x ^ y) >= threshold) return false;
            }
        }
        return true;
    }

    /// @dev Number of set bits of a value below 2**64 (SWAR: bit counts of 2, 4, 8 bits, then a byte sum).
    function popCount64(uint256 x) internal pure returns (uint256) {
        // x < 2**64, so every partial sum stays below 2**64 and the final product below 2**128.
        unchecked {
            x -= (x >> 1) & 0x5555555555555555;
            x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333);
            x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0f;
            return ((x * 0x0101010101010101) >> 56) & 0xff;
        }
    }
}
