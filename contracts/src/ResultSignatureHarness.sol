// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ResultSignature} from "./ResultSignature.sol";

/// @title Exposes ResultSignature's pure functions so tests can check them
/// against the golden file. Holds no state; not part of a deployment.
contract ResultSignatureHarness {
    function domainSeparator(uint256 chainId, address verifyingContract)
        external
        pure
        returns (bytes32)
    {
        return ResultSignature.domainSeparator(chainId, verifyingContract);
    }

    function digest(
        bytes32 separator,
        bytes32 orderKey,
        bytes32 requestHash,
        bytes32 responseHash,
        uint256 status
    ) external pure returns (bytes32) {
        return ResultSignature.digest(separator, orderKey, requestHash, responseHash, status);
    }

    function recover(bytes32 hash, bytes calldata signature) external pure returns (address) {
        return ResultSignature.recover(hash, signature);
    }

    function resultTypeHash() external pure returns (bytes32) {
        return ResultSignature.RESULT_TYPEHASH;
    }
}
