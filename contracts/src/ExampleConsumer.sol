// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IWorkOrderConsumer} from "./IWorkOrderConsumer.sol";

interface IWorkOrderRegistry {
    function workOrderSubmit(
        bytes32 workOrderId,
        bytes32 workerId,
        bytes32 requesterId,
        bytes calldata request,
        uint64 deadline,
        uint32 callbackGas
    ) external returns (bytes32 orderKey);

    function workOrderCancel(bytes32 orderKey) external;
}

/// @title Example requester: asks for a computation and keeps the verified result.
/// @notice The registry calls onWorkOrderResult only after it checked the
/// worker's signature over this exact response, so what is stored here is
/// the worker's verified answer (still encrypted for the requester, as EEA
/// responses are).
contract ExampleConsumer is IWorkOrderConsumer {
    struct Result {
        bool received;
        uint256 status;
        bytes response;
    }

    IWorkOrderRegistry public immutable registry;
    address public immutable owner;
    mapping(bytes32 orderKey => Result) private results;

    event ComputationRequested(bytes32 indexed orderKey, bytes32 indexed workOrderId);
    event ResultReceived(bytes32 indexed orderKey, bytes32 indexed workOrderId, uint256 status);

    error NotOwner(address caller);
    error NotRegistry(address caller);

    constructor(address registry_) {
        registry = IWorkOrderRegistry(registry_);
        owner = msg.sender;
    }

    function requestComputation(
        bytes32 workOrderId,
        bytes32 workerId,
        bytes calldata request,
        uint64 deadline,
        uint32 callbackGas
    ) external returns (bytes32 orderKey) {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        bytes32 requesterId = bytes32(uint256(uint160(address(this))));
        orderKey = registry.workOrderSubmit(
            workOrderId, workerId, requesterId, request, deadline, callbackGas
        );
        emit ComputationRequested(orderKey, workOrderId);
    }

    function cancel(bytes32 orderKey) external {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        registry.workOrderCancel(orderKey);
    }

    function onWorkOrderResult(
        bytes32 orderKey,
        bytes32 workOrderId,
        uint256 status,
        bytes calldata response
    ) external {
        if (msg.sender != address(registry)) revert NotRegistry(msg.sender);
        results[orderKey] = Result({received: true, status: status, response: response});
        emit ResultReceived(orderKey, workOrderId, status);
    }

    function resultOf(bytes32 orderKey)
        external
        view
        returns (bool received, uint256 status, bytes memory response)
    {
        Result storage result = results[orderKey];
        return (result.received, result.status, result.response);
    }
}
