// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title What a requesting contract implements to receive results by callback.
/// @notice The WorkOrderRegistry calls it once, after the result is verified and
/// stored, with exactly the callback gas the requester chose at submit. A
/// revert here does not undo the completion.
interface IWorkOrderConsumer {
    function onWorkOrderResult(
        bytes32 orderKey,
        bytes32 workOrderId,
        uint256 status,
        bytes calldata response
    ) external;
}
