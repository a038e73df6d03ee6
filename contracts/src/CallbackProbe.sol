// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IWorkOrderConsumer} from "./IWorkOrderConsumer.sol";

interface IWorkOrderRegistryForProbe {
    function workOrderSubmit(
        bytes32 workOrderId,
        bytes32 workerId,
        bytes32 requesterId,
        bytes calldata request,
        uint64 deadline,
        uint32 callbackGas
    ) external returns (bytes32 orderKey);

    function workOrderComplete(
        bytes32 orderKey,
        uint256 status,
        bytes calldata response,
        bytes calldata signature
    ) external;

    function workOrderCancel(bytes32 orderKey) external;
}

/// @title TEST ONLY: a requester whose callback misbehaves on purpose.
/// @notice Modes: 0 records the gas it received, 1 reverts, 2 re-enters the
/// registry (completing the same order again, then cancelling it), 3 burns
/// all the gas it was given, 4 returns a large blob of data.
contract CallbackProbe is IWorkOrderConsumer {
    uint8 public constant MODE_RECORD = 0;
    uint8 public constant MODE_REVERT = 1;
    uint8 public constant MODE_REENTER = 2;
    uint8 public constant MODE_BURN = 3;
    uint8 public constant MODE_RETURN_BOMB = 4;

    IWorkOrderRegistryForProbe public immutable registry;
    uint8 public mode;
    bytes public replaySignature;

    uint256 public calls;
    uint256 public gasAtEntry;
    bytes32 public lastOrderKey;
    uint256 public lastStatus;
    bytes public lastResponse;
    bool public reentryCompleteSucceeded;
    bool public reentryCancelSucceeded;

    constructor(address registry_) {
        registry = IWorkOrderRegistryForProbe(registry_);
    }

    function setMode(uint8 mode_, bytes calldata replaySignature_) external {
        mode = mode_;
        replaySignature = replaySignature_;
    }

    function submit(
        bytes32 workOrderId,
        bytes32 workerId,
        bytes calldata request,
        uint64 deadline,
        uint32 callbackGas
    ) external returns (bytes32) {
        return registry.workOrderSubmit(
            workOrderId, workerId, bytes32(0), request, deadline, callbackGas
        );
    }

    function onWorkOrderResult(
        bytes32 orderKey,
        bytes32,
        uint256 status,
        bytes calldata response
    ) external {
        uint256 entryGas = gasleft();
        uint8 current = mode;
        if (current == MODE_REVERT) revert("probe: callback reverts");
        if (current == MODE_BURN) {
            while (true) {}
        }
        if (current == MODE_RETURN_BOMB) {
            assembly {
                return(0, 100000)
            }
        }
        calls += 1;
        gasAtEntry = entryGas;
        lastOrderKey = orderKey;
        lastStatus = status;
        lastResponse = response;
        if (current == MODE_REENTER) {
            try registry.workOrderComplete(orderKey, status, response, replaySignature) {
                reentryCompleteSucceeded = true;
            } catch {}
            try registry.workOrderCancel(orderKey) {
                reentryCancelSucceeded = true;
            } catch {}
        }
    }
}
