// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IWorkOrderConsumer} from "./IWorkOrderConsumer.sol";
import {ResultSignature} from "./ResultSignature.sol";

/// @dev The one call this registry makes into the worker registry.
interface IWorkerSigner {
    function workerSigner(bytes32 workerId) external view returns (address signer, uint256 status);
}

/// @title EEA work-order registry that accepts only worker-signed results.
/// @notice Requesters submit work orders (the request travels in the event
/// data; only its keccak256 is stored). Anyone may relay a completion, but it
/// is accepted only with an EIP-712 signature (see ResultSignature) by the
/// worker signing address recorded at submit, over the stored request hash
/// and the keccak256 of the response bytes this contract emits.
///
/// Order keys are keccak256(abi.encode(requester, workOrderId)), so one
/// requester cannot squat another's work-order id.
///
/// States: 0 none, 1 pending, 2 completed, 3 cancelled.
/// Deadline: a unix time after which the requester may cancel a pending
/// order; 0 means no deadline (never cancellable).
/// Completion status: 0 a result, anything else an EEA error code.
/// CompletionSkipped reasons (batch only): 1 unknown order, 2 already
/// completed, 3 cancelled, 4 bad signature, 5 too little gas left for the
/// order's callback.
contract WorkOrderRegistry {
    uint8 internal constant STATE_NONE = 0;
    uint8 internal constant STATE_PENDING = 1;
    uint8 internal constant STATE_COMPLETED = 2;
    uint8 internal constant STATE_CANCELLED = 3;

    uint8 internal constant SKIP_UNKNOWN_ORDER = 1;
    uint8 internal constant SKIP_ALREADY_COMPLETED = 2;
    uint8 internal constant SKIP_CANCELLED = 3;
    uint8 internal constant SKIP_BAD_SIGNATURE = 4;
    uint8 internal constant SKIP_CALLBACK_GAS = 5;

    uint256 internal constant WORKER_ACTIVE = 1;
    /// @dev A deadline of 0 means none: the order waits for its result and
    /// can never be cancelled.
    uint64 internal constant NO_DEADLINE = 0;

    /// @dev Upper bound on what a completion spends besides the callback itself:
    /// storage writes, the event's fixed part, the calldata copy and the call.
    uint256 internal constant COMPLETION_RESERVE = 60_000;
    /// @dev Per response byte: 8 for log data, the rest for memory copies.
    uint256 internal constant COMPLETION_RESERVE_PER_BYTE = 16;
    /// @dev Gas kept back at the call itself: the CALL's own cost on a warm
    /// target and the CallbackFailed event afterwards.
    uint256 internal constant CALL_RESERVE = 5_000;

    /// @dev Six slots; submit writes five, completion rewrites two.
    struct Order {
        address signer;
        uint8 state;
        uint40 submittedAt;
        uint40 completedAt;
        address requester;
        uint64 deadline;
        uint32 callbackGas;
        bytes32 workerId;
        bytes32 requestHash;
        // The work-order id while the order is pending or cancelled; the
        // response hash once completed. No getter returns the id, and the
        // completion event (the id's last use) is emitted in the same call that
        // overwrites it, so sharing the slot saves a fresh 22,100-gas store.
        bytes32 workOrderIdOrResponseHash;
        // Written only for error results, so a plain result costs no store.
        uint256 status;
    }

    struct Completion {
        bytes32 orderKey;
        uint256 status;
        bytes response;
        bytes signature;
    }

    IWorkerSigner private immutable registryOfWorkers;
    uint32 private immutable callbackGasCap;
    uint256 private immutable cachedChainId;
    bytes32 private immutable cachedDomainSeparator;

    mapping(bytes32 orderKey => Order) private orders;

    event WorkOrderSubmitted(
        bytes32 indexed workOrderId,
        bytes32 indexed workerId,
        bytes32 indexed requesterId,
        bytes32 orderKey,
        address requester,
        uint32 callbackGas,
        bytes request
    );
    event WorkOrderCompleted(
        bytes32 indexed orderKey,
        bytes32 indexed workOrderId,
        bytes32 indexed workerId,
        uint256 status,
        bytes response
    );
    event WorkOrderCancelled(bytes32 indexed orderKey, bytes32 indexed workOrderId);
    event CompletionSkipped(bytes32 indexed orderKey, uint8 reason);
    event CallbackFailed(bytes32 indexed orderKey);

    error CallbackGasTooHigh(uint32 callbackGas, uint32 maxCallbackGas);
    error DeadlineNotInFuture(uint64 deadline);
    error DuplicateOrder(bytes32 orderKey);
    error UnknownWorker(bytes32 workerId);
    error WorkerNotActive(bytes32 workerId, uint256 status);
    error UnknownOrder(bytes32 orderKey);
    error AlreadyCompleted(bytes32 orderKey);
    error OrderCancelled(bytes32 orderKey);
    error BadSignature(bytes32 orderKey);
    error InsufficientCallbackGas(bytes32 orderKey, uint32 callbackGas);
    error NotRequester(bytes32 orderKey, address caller);
    error NotPending(bytes32 orderKey, uint8 state);
    error DeadlineNotPassed(bytes32 orderKey, uint64 deadline);

    constructor(address workerRegistry, uint32 maxCallbackGas) {
        registryOfWorkers = IWorkerSigner(workerRegistry);
        callbackGasCap = maxCallbackGas;
        cachedChainId = block.chainid;
        cachedDomainSeparator = ResultSignature.domainSeparator(block.chainid, address(this));
    }

    function workOrderSubmit(
        bytes32 workOrderId,
        bytes32 workerId,
        bytes32 requesterId,
        bytes calldata request,
        uint64 deadline,
        uint32 callbackGas
    ) external returns (bytes32 orderKey) {
        if (callbackGas > callbackGasCap) revert CallbackGasTooHigh(callbackGas, callbackGasCap);
        if (deadline != NO_DEADLINE && deadline <= block.timestamp) {
            revert DeadlineNotInFuture(deadline);
        }
        orderKey = keccak256(abi.encode(msg.sender, workOrderId));
        if (orders[orderKey].state != STATE_NONE) revert DuplicateOrder(orderKey);

        // The signer is copied now: a later change of the worker's signing
        // address cannot redirect an order already in flight.
        (address signer, uint256 workerStatus) = registryOfWorkers.workerSigner(workerId);
        if (signer == address(0)) revert UnknownWorker(workerId);
        if (workerStatus != WORKER_ACTIVE) revert WorkerNotActive(workerId, workerStatus);

        // Field by field, leaving completedAt and status unwritten: both are
        // zero already (a key is never reused), and a store of zero costs gas.
        Order storage order = orders[orderKey];
        order.signer = signer;
        order.state = STATE_PENDING;
        order.submittedAt = uint40(block.timestamp);
        order.requester = msg.sender;
        order.deadline = deadline;
        order.callbackGas = callbackGas;
        order.workerId = workerId;
        order.requestHash = keccak256(request);
        order.workOrderIdOrResponseHash = workOrderId;
        emit WorkOrderSubmitted(
            workOrderId, workerId, requesterId, orderKey, msg.sender, callbackGas, request
        );
    }

    function workOrderComplete(
        bytes32 orderKey,
        uint256 status,
        bytes calldata response,
        bytes calldata signature
    ) external {
        uint8 skip = _complete(orderKey, status, response, signature);
        if (skip == 0) return;
        if (skip == SKIP_UNKNOWN_ORDER) revert UnknownOrder(orderKey);
        if (skip == SKIP_ALREADY_COMPLETED) revert AlreadyCompleted(orderKey);
        if (skip == SKIP_CANCELLED) revert OrderCancelled(orderKey);
        if (skip == SKIP_BAD_SIGNATURE) revert BadSignature(orderKey);
        revert InsufficientCallbackGas(orderKey, orders[orderKey].callbackGas);
    }

    /// @notice Completes each item on its own; an item that cannot complete
    /// emits CompletionSkipped and the batch goes on. Because skipping is not
    /// failing, eth_estimateGas may settle on a limit at which items with a
    /// callback are skipped (reason 5): relayers add each item's callback gas
    /// to their limit and resend skipped items.
    function workOrderCompleteBatch(Completion[] calldata items) external {
        for (uint256 i; i < items.length; i++) {
            Completion calldata item = items[i];
            uint8 skip = _complete(item.orderKey, item.status, item.response, item.signature);
            if (skip != 0) emit CompletionSkipped(item.orderKey, skip);
        }
    }

    /// @notice Cancels a pending order; only its requester, only after its
    /// deadline (an order without a deadline cannot be cancelled).
    function workOrderCancel(bytes32 orderKey) external {
        Order storage order = orders[orderKey];
        uint8 state = order.state;
        if (state == STATE_NONE) revert UnknownOrder(orderKey);
        if (order.requester != msg.sender) revert NotRequester(orderKey, msg.sender);
        if (state != STATE_PENDING) revert NotPending(orderKey, state);
        uint64 deadline = order.deadline;
        if (deadline == NO_DEADLINE || block.timestamp <= deadline) {
            revert DeadlineNotPassed(orderKey, deadline);
        }

        order.state = STATE_CANCELLED;
        emit WorkOrderCancelled(orderKey, order.workOrderIdOrResponseHash);
    }

    function workOrderGet(bytes32 orderKey)
        external
        view
        returns (
            uint8 state,
            bytes32 workerId,
            address signer,
            address requester,
            bytes32 requestHash,
            bytes32 responseHash,
            uint256 status,
            uint64 submittedAt,
            uint64 completedAt,
            uint64 deadline
        )
    {
        Order storage order = orders[orderKey];
        state = order.state;
        if (state == STATE_COMPLETED) responseHash = order.workOrderIdOrResponseHash;
        return (
            state,
            order.workerId,
            order.signer,
            order.requester,
            order.requestHash,
            responseHash,
            order.status,
            order.submittedAt,
            order.completedAt,
            order.deadline
        );
    }

    function workerRegistry() external view returns (address) {
        return address(registryOfWorkers);
    }

    function maxCallbackGas() external view returns (uint32) {
        return callbackGasCap;
    }

    /// @notice The EIP-712 domain separator for the current chain id.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparator();
    }

    /// @return skip 0 when completed, else a CompletionSkipped reason.
    function _complete(
        bytes32 orderKey,
        uint256 status,
        bytes calldata response,
        bytes calldata signature
    ) private returns (uint8 skip) {
        Order storage order = orders[orderKey];
        uint8 state = order.state;
        if (state == STATE_NONE) return SKIP_UNKNOWN_ORDER;
        if (state == STATE_COMPLETED) return SKIP_ALREADY_COMPLETED;
        if (state == STATE_CANCELLED) return SKIP_CANCELLED;

        // The contract hashes the response itself, so a signature cannot be
        // paired with other bytes than the ones it emits.
        bytes32 responseHash = keccak256(response);
        bytes32 hash = ResultSignature.digest(
            _domainSeparator(), orderKey, order.requestHash, responseHash, status
        );
        address recovered = ResultSignature.recover(hash, signature);
        if (recovered == address(0) || recovered != order.signer) return SKIP_BAD_SIGNATURE;

        uint32 callbackGas = order.callbackGas;
        if (callbackGas != 0 && !_enoughGasForCallback(callbackGas, response.length)) {
            return SKIP_CALLBACK_GAS;
        }

        bytes32 workOrderId = order.workOrderIdOrResponseHash;
        order.state = STATE_COMPLETED;
        order.completedAt = uint40(block.timestamp);
        order.workOrderIdOrResponseHash = responseHash;
        if (status != 0) order.status = status;
        emit WorkOrderCompleted(orderKey, workOrderId, order.workerId, status, response);

        // State is final before the callback runs, so re-entry sees a completed order.
        if (callbackGas != 0) {
            _callback(order.requester, callbackGas, orderKey, workOrderId, status, response);
        }
        return 0;
    }

    /// @dev Conservative check done before any state is written, so a batch can
    /// skip the item cleanly; _callback re-checks exactly at the call.
    function _enoughGasForCallback(uint32 callbackGas, uint256 responseLength)
        private
        view
        returns (bool)
    {
        uint256 needed = uint256(callbackGas) + uint256(callbackGas) / 63 + COMPLETION_RESERVE
            + COMPLETION_RESERVE_PER_BYTE * responseLength;
        return gasleft() >= needed;
    }

    function _callback(
        address target,
        uint32 callbackGas,
        bytes32 orderKey,
        bytes32 workOrderId,
        uint256 status,
        bytes calldata response
    ) private {
        // Reading the code size also warms the target, so the CALL below costs
        // a fixed 100 and the reserve needs no cold-access margin.
        if (target.code.length == 0) {
            emit CallbackFailed(orderKey);
            return;
        }
        bytes memory data = abi.encodeCall(
            IWorkOrderConsumer.onWorkOrderResult, (orderKey, workOrderId, status, response)
        );
        bool exact;
        bool ok;
        assembly ("memory-safe") {
            // CALL forwards at most 63/64 of what is left after its own cost
            // (EIP-150). Unless that covers callbackGas, a relayer could starve
            // the callback by sending too little gas: refuse instead.
            let left := gas()
            let available := mul(gt(left, CALL_RESERVE), sub(left, CALL_RESERVE))
            exact := iszero(lt(sub(available, div(available, 64)), callbackGas))
            if exact {
                // Return data is not copied: a callee cannot make us pay for it.
                ok := call(callbackGas, target, 0, add(data, 0x20), mload(data), 0, 0)
            }
        }
        if (!exact) revert InsufficientCallbackGas(orderKey, callbackGas);
        if (!ok) emit CallbackFailed(orderKey);
    }

    function _domainSeparator() private view returns (bytes32) {
        // Recomputed after a fork changes the chain id, so a signature made for
        // one side of the fork is not valid on the other.
        if (block.chainid == cachedChainId) return cachedDomainSeparator;
        return ResultSignature.domainSeparator(block.chainid, address(this));
    }
}
