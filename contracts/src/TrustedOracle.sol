// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ResultSignature} from "./ResultSignature.sol";

/// @dev The one call this oracle makes into the worker registry.
interface IOracleWorkerSigner {
    function workerSigner(bytes32 workerId) external view returns (address signer, uint256 status);
}

/// @title Payment-free oracle requests answered by tcbridge's enclave workers.
/// @notice A consumer contract calls request() with a worker, a workload and
/// plain parameters; tcbridge runs the work order and calls fulfill() with the
/// worker's result. The oracle accepts the result only with an EIP-712
/// signature by the worker's signing address recorded at request time, then
/// calls the consumer back with (requestId, status, result).
///
/// Privacy: a contract cannot encrypt for the worker, so the parameters are
/// public in the OracleRequested event and the result is public in
/// OracleFulfilled. Results are signed (authentic), not secret.
///
/// Signature: the same EIP-712 domain rules and the same
/// WorkOrderResult(orderKey, requestHash, responseHash, status) type as
/// WorkOrderRegistry (see ResultSignature), with orderKey = the request id,
/// requestHash = keccak256(workload ‖ params) and responseHash =
/// keccak256(result) as this contract computes it. verifyingContract is this oracle's address, so a
/// signature for a registry order can never fulfil an oracle request.
///
/// Request ids are keccak256(abi.encode(consumer, consumerNonce)): a consumer
/// cannot collide with another. States: 0 none, 1 pending, 2 fulfilled,
/// 3 cancelled (the numbering of WorkOrderRegistry, whose read interface
/// workOrderGet this contract keeps, so relayers check both alike).
contract TrustedOracle {
    uint8 internal constant STATE_NONE = 0;
    uint8 internal constant STATE_PENDING = 1;
    uint8 internal constant STATE_FULFILLED = 2;
    uint8 internal constant STATE_CANCELLED = 3;
    uint256 internal constant WORKER_ACTIVE = 1;

    /// @dev Gas kept back at the call itself, as in WorkOrderRegistry.
    uint256 internal constant CALL_RESERVE = 5_000;

    struct Request {
        address signer;
        uint8 state;
        uint40 requestedAt;
        uint40 fulfilledAt;
        address requester;
        uint64 expiry;
        bytes4 callbackSelector;
        address callbackAddress;
        bytes32 workerId;
        bytes32 paramsHash;
        bytes32 resultHash;
        uint256 status;
    }

    IOracleWorkerSigner private immutable registryOfWorkers;
    uint32 public immutable callbackGas;
    uint256 private immutable cachedChainId;
    bytes32 private immutable cachedDomainSeparator;

    mapping(bytes32 requestId => Request) private requests;
    mapping(address consumer => uint256) public nonces;

    event OracleRequested(
        bytes32 indexed requestId,
        bytes32 indexed workerId,
        address indexed requester,
        bytes32 workload,
        uint64 expiry,
        uint32 callbackGas,
        bytes params
    );
    event OracleFulfilled(bytes32 indexed requestId, uint256 status, bytes result);
    event OracleCancelled(bytes32 indexed requestId);
    event CallbackFailed(bytes32 indexed requestId);

    error ExpiryNotInFuture(uint64 expiry);
    error UnknownWorker(bytes32 workerId);
    error WorkerNotActive(bytes32 workerId, uint256 status);
    error UnknownRequest(bytes32 requestId);
    error AlreadyFulfilled(bytes32 requestId);
    error RequestCancelled(bytes32 requestId);
    error BadSignature(bytes32 requestId);
    error InsufficientCallbackGas(bytes32 requestId, uint32 callbackGas);
    error NotRequester(bytes32 requestId, address caller);
    error NotPending(bytes32 requestId, uint8 state);
    error NotExpired(bytes32 requestId, uint64 expiry);

    constructor(address workerRegistry, uint32 callbackGas_) {
        registryOfWorkers = IOracleWorkerSigner(workerRegistry);
        callbackGas = callbackGas_;
        cachedChainId = block.chainid;
        cachedDomainSeparator = ResultSignature.domainSeparator(block.chainid, address(this));
    }

    /// @notice Asks for one computation; free of charge. ``workload`` is the
    /// workload name, ASCII, left-aligned and zero-padded; ``params`` is the
    /// plain work order's inputs as JSON ({"inputs": ["...", ...]}) and is
    /// public. After ``expiry`` (unix seconds) the requester may cancel.
    function request(
        bytes32 workerId,
        bytes32 workload,
        bytes calldata params,
        uint64 expiry,
        address callbackAddress,
        bytes4 callbackSelector
    ) external returns (bytes32 requestId) {
        if (expiry <= block.timestamp) revert ExpiryNotInFuture(expiry);
        // The signer is copied now: a later change of the worker's signing
        // address cannot redirect a request already in flight.
        (address signer, uint256 workerStatus) = registryOfWorkers.workerSigner(workerId);
        if (signer == address(0)) revert UnknownWorker(workerId);
        if (workerStatus != WORKER_ACTIVE) revert WorkerNotActive(workerId, workerStatus);

        uint256 nonce = nonces[msg.sender]++;
        requestId = keccak256(abi.encode(msg.sender, nonce));
        Request storage entry = requests[requestId];
        entry.signer = signer;
        entry.state = STATE_PENDING;
        entry.requestedAt = uint40(block.timestamp);
        entry.requester = msg.sender;
        entry.expiry = expiry;
        entry.callbackSelector = callbackSelector;
        entry.callbackAddress = callbackAddress;
        entry.workerId = workerId;
        entry.paramsHash = keccak256(abi.encodePacked(workload, params));

        emit OracleRequested(
            requestId, workerId, msg.sender, workload, expiry, callbackGas, params
        );
    }

    /// @notice Records the worker-signed result, once, then calls the consumer
    /// back with exactly ``callbackGas``. Anyone may relay it.
    function fulfill(
        bytes32 requestId,
        uint256 status,
        bytes calldata result,
        bytes calldata signature
    ) external {
        Request storage entry = requests[requestId];
        uint8 state = entry.state;
        if (state == STATE_NONE) revert UnknownRequest(requestId);
        if (state == STATE_FULFILLED) revert AlreadyFulfilled(requestId);
        if (state == STATE_CANCELLED) revert RequestCancelled(requestId);

        // The result is hashed here, so a signature cannot be paired with
        // other bytes than the ones emitted and handed to the consumer.
        bytes32 resultHash = keccak256(result);
        bytes32 hash = ResultSignature.digest(
            _domainSeparator(), requestId, entry.paramsHash, resultHash, status
        );
        address recovered = ResultSignature.recover(hash, signature);
        if (recovered == address(0) || recovered != entry.signer) revert BadSignature(requestId);

        entry.state = STATE_FULFILLED;
        entry.fulfilledAt = uint40(block.timestamp);
        entry.resultHash = resultHash;
        if (status != 0) entry.status = status;
        emit OracleFulfilled(requestId, status, result);

        // State is final before the callback runs, so re-entry sees a fulfilled request.
        _callback(requestId, entry.callbackAddress, entry.callbackSelector, status, result);
    }

    /// @notice Cancels a pending request; only its requester, only after expiry.
    function cancel(bytes32 requestId) external {
        Request storage entry = requests[requestId];
        uint8 state = entry.state;
        if (state == STATE_NONE) revert UnknownRequest(requestId);
        if (entry.requester != msg.sender) revert NotRequester(requestId, msg.sender);
        if (state != STATE_PENDING) revert NotPending(requestId, state);
        if (block.timestamp <= entry.expiry) revert NotExpired(requestId, entry.expiry);
        entry.state = STATE_CANCELLED;
        emit OracleCancelled(requestId);
    }

    /// @notice WorkOrderRegistry's read layout: (state, workerId, signer,
    /// requester, requestHash, responseHash, status, submittedAt, completedAt,
    /// deadline), here the params hash, the result hash and the expiry.
    function workOrderGet(bytes32 requestId)
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
        Request storage entry = requests[requestId];
        return (
            entry.state,
            entry.workerId,
            entry.signer,
            entry.requester,
            entry.paramsHash,
            entry.resultHash,
            entry.status,
            entry.requestedAt,
            entry.fulfilledAt,
            entry.expiry
        );
    }

    function workerRegistry() external view returns (address) {
        return address(registryOfWorkers);
    }

    /// @notice The EIP-712 domain separator for the current chain id.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparator();
    }

    function _callback(
        bytes32 requestId,
        address target,
        bytes4 selector,
        uint256 status,
        bytes calldata result
    ) private {
        // Reading the code size also warms the target for the CALL below.
        if (target.code.length == 0) {
            emit CallbackFailed(requestId);
            return;
        }
        bytes memory data = abi.encodeWithSelector(selector, requestId, status, result);
        uint256 gasForCallback = callbackGas;
        bool exact;
        bool ok;
        assembly ("memory-safe") {
            // CALL forwards at most 63/64 of what is left (EIP-150): unless that
            // covers callbackGas, a relayer could starve the consumer by sending
            // too little gas, so the whole fulfilment reverts instead.
            let left := gas()
            let available := mul(gt(left, CALL_RESERVE), sub(left, CALL_RESERVE))
            exact := iszero(lt(sub(available, div(available, 64)), gasForCallback))
            if exact {
                // Return data is not copied: a consumer cannot make us pay for it.
                ok := call(gasForCallback, target, 0, add(data, 0x20), mload(data), 0, 0)
            }
        }
        if (!exact) revert InsufficientCallbackGas(requestId, callbackGas);
        if (!ok) emit CallbackFailed(requestId);
    }

    function _domainSeparator() private view returns (bytes32) {
        // Recomputed after a fork changes the chain id.
        if (block.chainid == cachedChainId) return cachedDomainSeparator;
        return ResultSignature.domainSeparator(block.chainid, address(this));
    }
}
