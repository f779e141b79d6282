// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title ArgumentsReceipt: the relay's signed word that it stored a task's arguments (EIP-712).
/// @notice The relay signs, after storing the arguments of `taskId`, the typed data
/// `ArgumentsStored(uint256 taskId,uint256 storedAt)` (`storedAt`: its clock, Unix seconds) in the domain
/// {name "Helium Task", version "1", chainId, verifyingContract: the Task contract}, and returns it in
/// its answer to the upload. Whoever holds it can show the chain that the arguments were there
/// (Task.refuteNoArguments). cluster/protocol/receipts.py signs and checks the same bytes.
library ArgumentsReceipt {
    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 internal constant RECEIPT_TYPEHASH = keccak256("ArgumentsStored(uint256 taskId,uint256 storedAt)");
    /// @dev secp256k1's order / 2: a signature with a higher s is the malleable twin of a low-s one.
    uint256 internal constant HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    function domainSeparator(address verifyingContract) internal view returns (bytes32) {
        return keccak256(
            abi.encode(DOMAIN_TYPEHASH, keccak256("Helium Task"), keccak256("1"), block.chainid, verifyingContract)
        );
    }

    /// @dev The signer of the receipt, or the zero address when the signature is malformed (not 65
    /// bytes r || s || v, a high s, v not 27 or 28) or recovers nobody.
    function signer(bytes32 separator, uint256 taskId, uint256 storedAt, bytes calldata signature)
        internal
        pure
        returns (address)
    {
        if (signature.length != 65) return address(0);
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v < 27) v += 27; // a raw recovery id 0 / 1
        if (uint256(s) > HALF_ORDER || (v != 27 && v != 28)) return address(0);
        bytes32 structHash = keccak256(abi.encode(RECEIPT_TYPEHASH, taskId, storedAt));
        return ecrecover(keccak256(abi.encodePacked("\x19\x01", separator, structHash)), v, r, s);
    }
}
