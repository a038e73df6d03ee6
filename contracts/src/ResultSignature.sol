// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title The on-chain result signature of tcbridge (EIP-712).
/// @notice One definition shared with enclave_bridge/result_signature.py and
/// frozen in contracts/golden/result-signature.json. A worker signs
/// WorkOrderResult(orderKey, requestHash, responseHash, status) in the domain
/// (name, version, chainId, verifyingContract) of the registry holding the
/// order, so a signature binds one order, one response, one contract and one
/// chain.
library ResultSignature {
    bytes32 internal constant DOMAIN_TYPEHASH = keccak256(
        "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    );
    bytes32 internal constant RESULT_TYPEHASH = keccak256(
        "WorkOrderResult(bytes32 orderKey,bytes32 requestHash,bytes32 responseHash,uint256 status)"
    );
    bytes32 internal constant NAME_HASH = keccak256("tcbridge WorkOrderRegistry");
    bytes32 internal constant VERSION_HASH = keccak256("1");

    /// @dev secp256k1 order divided by two: a larger s is the malleable twin.
    uint256 internal constant HALF_ORDER =
        0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    function domainSeparator(uint256 chainId, address verifyingContract)
        internal
        pure
        returns (bytes32)
    {
        return keccak256(
            abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, chainId, verifyingContract)
        );
    }

    function digest(
        bytes32 separator,
        bytes32 orderKey,
        bytes32 requestHash,
        bytes32 responseHash,
        uint256 status
    ) internal pure returns (bytes32 result) {
        bytes32 structHash =
            keccak256(abi.encode(RESULT_TYPEHASH, orderKey, requestHash, responseHash, status));
        // keccak256("\x19\x01" ‖ separator ‖ structHash) without abi.encodePacked's
        // extra memory copy: 2 + 32 + 32 bytes at the free memory pointer.
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, hex"1901")
            mstore(add(ptr, 0x02), separator)
            mstore(add(ptr, 0x22), structHash)
            result := keccak256(ptr, 0x42)
        }
    }

    /// @notice The signer of a 65-byte r ‖ s ‖ v signature, or address(0) when the
    /// signature is malformed, has a high s, has v outside {27, 28}, or does not
    /// recover. Callers must treat address(0) as "no valid signer".
    function recover(bytes32 hash, bytes calldata signature) internal pure returns (address) {
        if (signature.length != 65) return address(0);
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly {
            r := calldataload(signature.offset)
            s := calldataload(add(signature.offset, 0x20))
            v := byte(0, calldataload(add(signature.offset, 0x40)))
        }
        if (uint256(s) > HALF_ORDER || uint256(s) == 0) return address(0);
        if (v != 27 && v != 28) return address(0);
        return ecrecover(hash, v, r, s);
    }
}
