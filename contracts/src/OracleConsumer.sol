// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

interface ITrustedOracle {
    function request(
        bytes32 workerId,
        bytes32 workload,
        bytes calldata params,
        uint64 expiry,
        address callbackAddress,
        bytes4 callbackSelector
    ) external returns (bytes32 requestId);

    function cancel(bytes32 requestId) external;
}

/// @title Example consumer of TrustedOracle: asks, then keeps the verified answer.
/// @notice The oracle calls onOracleResult only after it checked the worker's
/// signature over this exact result, so what is stored is the worker's
/// answer in plain form (oracle results are public).
contract OracleConsumer {
    struct Answer {
        bool received;
        uint256 status;
        bytes result;
    }

    ITrustedOracle public immutable oracle;
    address public immutable owner;
    mapping(bytes32 requestId => Answer) private answers;
    bytes32 public lastRequestId;

    event Asked(bytes32 indexed requestId);
    event Answered(bytes32 indexed requestId, uint256 status);

    error NotOwner(address caller);
    error NotOracle(address caller);

    constructor(address oracle_) {
        oracle = ITrustedOracle(oracle_);
        owner = msg.sender;
    }

    function ask(bytes32 workerId, bytes32 workload, bytes calldata params, uint64 expiry)
        external
        returns (bytes32 requestId)
    {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        requestId = oracle.request(
            workerId, workload, params, expiry, address(this), this.onOracleResult.selector
        );
        lastRequestId = requestId;
        emit Asked(requestId);
    }

    function cancel(bytes32 requestId) external {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        oracle.cancel(requestId);
    }

    function onOracleResult(bytes32 requestId, uint256 status, bytes calldata result) external {
        if (msg.sender != address(oracle)) revert NotOracle(msg.sender);
        answers[requestId] = Answer({received: true, status: status, result: result});
        emit Answered(requestId, status);
    }

    function answerOf(bytes32 requestId)
        external
        view
        returns (bool received, uint256 status, bytes memory result)
    {
        Answer storage answer = answers[requestId];
        return (answer.received, answer.status, answer.result);
    }
}
