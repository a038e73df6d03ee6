// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {LookupPaging} from "./LookupPaging.sol";

/// @title EEA worker registry with per-worker operator ownership.
/// @notice The account that registers a worker is its operator: only it may
/// update the worker, change its signing address or its status. Ids are
/// first come, first served; a duplicate registration reverts.
/// Status values (EEA): 1 active, 2 offline, 3 decommissioned, 4 compromised.
contract WorkerRegistry {
    uint256 public constant STATUS_ACTIVE = 1;
    uint256 public constant STATUS_COMPROMISED = 4;

    struct Worker {
        // One slot: what the work-order registry reads on every submit.
        address signingAddress;
        uint8 status;
        address owner;
        uint256 workerType;
        bytes32 organizationId;
        bytes32[] applicationTypeIds;
        string details;
    }

    mapping(bytes32 workerId => Worker) private workers;
    /// @dev Append-only; lookup tags are indexes into it.
    bytes32[] private workerIds;

    event WorkerRegistered(
        bytes32 indexed workerId,
        uint256 workerType,
        bytes32 indexed organizationId,
        bytes32[] applicationTypeIds,
        string details,
        address signingAddress,
        address indexed owner
    );
    event WorkerUpdated(bytes32 indexed workerId, string details, address signingAddress);
    event WorkerStatusChanged(bytes32 indexed workerId, uint256 status);

    error InvalidWorkerId();
    error InvalidSigningAddress();
    error InvalidWorkerStatus(uint256 status);
    error WorkerAlreadyRegistered(bytes32 workerId);
    error UnknownWorker(bytes32 workerId);
    error NotWorkerOwner(bytes32 workerId, address caller);

    modifier onlyWorkerOwner(bytes32 workerId) {
        address owner = workers[workerId].owner;
        if (owner == address(0)) revert UnknownWorker(workerId);
        if (owner != msg.sender) revert NotWorkerOwner(workerId, msg.sender);
        _;
    }

    function workerRegister(
        bytes32 workerId,
        uint256 workerType,
        bytes32 organizationId,
        bytes32[] calldata applicationTypeIds,
        string calldata details,
        address signingAddress
    ) external {
        if (workerId == bytes32(0)) revert InvalidWorkerId();
        if (signingAddress == address(0)) revert InvalidSigningAddress();
        Worker storage worker = workers[workerId];
        if (worker.owner != address(0)) revert WorkerAlreadyRegistered(workerId);

        worker.signingAddress = signingAddress;
        worker.status = uint8(STATUS_ACTIVE);
        worker.owner = msg.sender;
        worker.workerType = workerType;
        worker.organizationId = organizationId;
        worker.applicationTypeIds = applicationTypeIds;
        worker.details = details;
        workerIds.push(workerId);

        emit WorkerRegistered(
            workerId, workerType, organizationId, applicationTypeIds, details, signingAddress, msg.sender
        );
    }

    function workerUpdate(bytes32 workerId, string calldata details, address signingAddress)
        external
        onlyWorkerOwner(workerId)
    {
        if (signingAddress == address(0)) revert InvalidSigningAddress();
        Worker storage worker = workers[workerId];
        worker.signingAddress = signingAddress;
        worker.details = details;
        emit WorkerUpdated(workerId, details, signingAddress);
    }

    function workerSetStatus(bytes32 workerId, uint256 status)
        external
        onlyWorkerOwner(workerId)
    {
        if (status < STATUS_ACTIVE || status > STATUS_COMPROMISED) {
            revert InvalidWorkerStatus(status);
        }
        workers[workerId].status = uint8(status);
        emit WorkerStatusChanged(workerId, status);
    }

    /// @notice First page of the workers matching the filter; 0 in a field means any.
    function workerLookUp(uint256 workerType, bytes32 organizationId, bytes32 applicationTypeId)
        external
        view
        returns (uint256 totalCount, string memory lookupTag, bytes32[] memory ids)
    {
        return _page(workerType, organizationId, applicationTypeId, 0);
    }

    /// @notice The page that starts where the page carrying `lookUpTag` stopped.
    function workerLookUpNext(
        uint256 workerType,
        bytes32 organizationId,
        bytes32 applicationTypeId,
        string calldata lookUpTag
    ) external view returns (uint256 totalCount, string memory lookupTag, bytes32[] memory ids) {
        return _page(workerType, organizationId, applicationTypeId, LookupPaging.decode(lookUpTag));
    }

    function workerRetrieve(bytes32 workerId)
        external
        view
        returns (
            uint256 status,
            uint256 workerType,
            bytes32 organizationId,
            bytes32[] memory applicationTypeIds,
            string memory details,
            address signingAddress,
            address owner
        )
    {
        Worker storage worker = workers[workerId];
        if (worker.owner == address(0)) revert UnknownWorker(workerId);
        return (
            worker.status,
            worker.workerType,
            worker.organizationId,
            worker.applicationTypeIds,
            worker.details,
            worker.signingAddress,
            worker.owner
        );
    }

    /// @notice What the work-order registry needs at submit: one storage read.
    /// An unknown worker has signer address(0) and status 0.
    function workerSigner(bytes32 workerId) external view returns (address signer, uint256 status) {
        Worker storage worker = workers[workerId];
        return (worker.signingAddress, worker.status);
    }

    /// @notice The operator account that registered the worker (zero if unknown).
    function workerOwner(bytes32 workerId) external view returns (address) {
        return workers[workerId].owner;
    }

    function workerCount() external view returns (uint256) {
        return workerIds.length;
    }

    function _page(
        uint256 workerType,
        bytes32 organizationId,
        bytes32 applicationTypeId,
        uint256 start
    ) private view returns (uint256 totalCount, string memory lookupTag, bytes32[] memory ids) {
        uint256 length = workerIds.length;
        ids = new bytes32[](LookupPaging.PAGE_SIZE);
        uint256 taken;
        uint256 next;
        for (uint256 i; i < length; i++) {
            bytes32 id = workerIds[i];
            if (!_matches(workers[id], workerType, organizationId, applicationTypeId)) continue;
            totalCount++;
            if (i < start) continue;
            if (taken < LookupPaging.PAGE_SIZE) {
                ids[taken++] = id;
            } else if (next == 0) {
                next = i;
            }
        }
        assembly ("memory-safe") {
            mstore(ids, taken)
        }
        lookupTag = next == 0 ? "" : LookupPaging.encode(next);
    }

    function _matches(
        Worker storage worker,
        uint256 workerType,
        bytes32 organizationId,
        bytes32 applicationTypeId
    ) private view returns (bool) {
        if (workerType != 0 && worker.workerType != workerType) return false;
        if (organizationId != 0 && worker.organizationId != organizationId) return false;
        if (applicationTypeId == 0) return true;
        bytes32[] storage appIds = worker.applicationTypeIds;
        for (uint256 i; i < appIds.length; i++) {
            if (appIds[i] == applicationTypeId) return true;
        }
        return false;
    }
}
