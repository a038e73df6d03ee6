// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {LookupPaging} from "./LookupPaging.sol";

interface IOrderView {
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
        );
}

interface IWorkerOwner {
    function workerOwner(bytes32 workerId) external view returns (address);
}

/// @title Thin EEA work-order receipt registry over tcbridge's WorkOrderRegistry.
/// @notice The EEA functions identify a receipt by `workOrderId`; here that
/// argument is the WorkOrderRegistry's order key, tcbridge's on-chain
/// globally unique id of a work order. A plain EEA work-order id would let
/// one requester squat another's receipt.
///
/// Only the order's requester creates its receipt, for the order's worker.
/// Updates come from the requester or from the worker's operator, each
/// authenticated as the transaction sender: `updaterId` must be zero or the
/// sender's address (left-padded), and `updateSignature` / `signatureRules`
/// are stored for off-chain verifiers, not checked here.
/// Receipt status (EEA): 0 pending, 1 completed, 2 processed, 3 failed,
/// 4 rejected; an update of type 0-255 sets the status to that type.
/// In lookups, status 255 means any status and a zero id means any.
contract WorkOrderReceiptRegistry {
    uint256 public constant ANY_STATUS = 255;
    uint256 public constant LAST_UPDATE = 0xFFFFFFFF;

    struct Receipt {
        address creator;
        bytes32 workerServiceId;
        bytes32 workerId;
        bytes32 requesterId;
        uint256 status;
        bytes requestHash;
    }

    struct Update {
        bytes32 updaterId;
        uint256 updateType;
        bytes updateData;
        bytes updateSignature;
        string signatureRules;
    }

    IOrderView public immutable workOrderRegistry;
    IWorkerOwner public immutable workerRegistry;

    mapping(bytes32 workOrderId => Receipt) private receipts;
    mapping(bytes32 workOrderId => Update[]) private updates;
    /// @dev Append-only; lookup tags are indexes into it.
    bytes32[] private receiptIds;

    event WorkOrderReceiptCreated(
        bytes32 indexed workOrderId,
        bytes32 indexed workerServiceId,
        bytes32 indexed workerId,
        bytes32 requesterId,
        uint256 receiptStatus,
        bytes workOrderRequestHash
    );
    event WorkOrderReceiptUpdated(
        bytes32 indexed workOrderId,
        bytes32 indexed updaterId,
        uint256 updateType,
        bytes updateData,
        bytes updateSignature,
        string signatureRules
    );

    error UnknownWorkOrder(bytes32 workOrderId);
    error NotOrderRequester(bytes32 workOrderId, address caller);
    error WrongWorker(bytes32 workOrderId, bytes32 workerId);
    error ReceiptExists(bytes32 workOrderId);
    error UnknownReceipt(bytes32 workOrderId);
    error NotUpdater(bytes32 workOrderId, address caller);
    error UpdaterIdMismatch(bytes32 updaterId, address caller);
    error UnknownUpdate(bytes32 workOrderId, uint256 updateIndex);

    constructor(address workOrderRegistry_, address workerRegistry_) {
        workOrderRegistry = IOrderView(workOrderRegistry_);
        workerRegistry = IWorkerOwner(workerRegistry_);
    }

    function workOrderReceiptCreate(
        bytes32 workOrderId,
        bytes32 workerServiceId,
        bytes32 workerId,
        bytes32 requesterId,
        uint256 receiptCreateStatus,
        bytes calldata workOrderRequestHash
    ) external {
        (uint8 state, bytes32 orderWorker,, address requester,,,,,,) =
            workOrderRegistry.workOrderGet(workOrderId);
        if (state == 0) revert UnknownWorkOrder(workOrderId);
        if (requester != msg.sender) revert NotOrderRequester(workOrderId, msg.sender);
        if (orderWorker != workerId) revert WrongWorker(workOrderId, workerId);
        Receipt storage receipt = receipts[workOrderId];
        if (receipt.creator != address(0)) revert ReceiptExists(workOrderId);

        receipt.creator = msg.sender;
        receipt.workerServiceId = workerServiceId;
        receipt.workerId = workerId;
        receipt.requesterId = requesterId;
        receipt.status = receiptCreateStatus;
        receipt.requestHash = workOrderRequestHash;
        receiptIds.push(workOrderId);

        emit WorkOrderReceiptCreated(
            workOrderId, workerServiceId, workerId, requesterId, receiptCreateStatus, workOrderRequestHash
        );
    }

    function workOrderReceiptUpdate(
        bytes32 workOrderId,
        bytes32 updaterId,
        uint256 updateType,
        bytes calldata updateData,
        bytes calldata updateSignature,
        string calldata signatureRules
    ) external {
        Receipt storage receipt = _existing(workOrderId);
        if (msg.sender != receipt.creator && msg.sender != workerRegistry.workerOwner(receipt.workerId)) {
            revert NotUpdater(workOrderId, msg.sender);
        }
        bytes32 sender = bytes32(uint256(uint160(msg.sender)));
        if (updaterId != bytes32(0) && updaterId != sender) {
            revert UpdaterIdMismatch(updaterId, msg.sender);
        }

        if (updateType <= 255) receipt.status = updateType;
        updates[workOrderId].push(
            Update({
                updaterId: sender,
                updateType: updateType,
                updateData: updateData,
                updateSignature: updateSignature,
                signatureRules: signatureRules
            })
        );
        emit WorkOrderReceiptUpdated(
            workOrderId, sender, updateType, updateData, updateSignature, signatureRules
        );
    }

    function workOrderReceiptRetrieve(bytes32 workOrderId)
        external
        view
        returns (
            bytes32 workerServiceId,
            bytes32 requesterId,
            bytes32 orderId,
            uint256 receiptStatus,
            bytes memory workOrderRequestHash
        )
    {
        Receipt storage receipt = _existing(workOrderId);
        return (
            receipt.workerServiceId,
            receipt.requesterId,
            workOrderId,
            receipt.status,
            receipt.requestHash
        );
    }

    /// @notice The `updateIndex`-th update (by `updaterId`, or by anyone when it
    /// is zero); LAST_UPDATE selects the latest. `updateCount` counts the
    /// updates that match `updaterId`.
    function workOrderReceiptUpdateRetrieve(
        bytes32 workOrderId,
        bytes32 updaterId,
        uint256 updateIndex
    )
        external
        view
        returns (
            bytes32 updater,
            uint256 updateType,
            bytes memory updateData,
            bytes memory updateSignature,
            string memory signatureRules,
            uint256 updateCount
        )
    {
        _existing(workOrderId);
        Update[] storage all = updates[workOrderId];
        uint256 found = type(uint256).max;
        for (uint256 i; i < all.length; i++) {
            if (updaterId != bytes32(0) && all[i].updaterId != updaterId) continue;
            if (updateIndex == LAST_UPDATE || updateCount == updateIndex) found = i;
            updateCount++;
        }
        if (found == type(uint256).max) revert UnknownUpdate(workOrderId, updateIndex);
        Update storage update = all[found];
        return (
            update.updaterId,
            update.updateType,
            update.updateData,
            update.updateSignature,
            update.signatureRules,
            updateCount
        );
    }

    function workOrderReceiptLookUp(
        bytes32 workerServiceId,
        bytes32 workerId,
        bytes32 requesterId,
        uint256 receiptStatus
    ) external view returns (uint256 totalCount, string memory lookupTag, bytes32[] memory ids) {
        return _page(workerServiceId, workerId, requesterId, receiptStatus, 0);
    }

    function workOrderReceiptLookUpNext(
        bytes32 workerServiceId,
        bytes32 workerId,
        bytes32 requesterId,
        uint256 receiptStatus,
        string calldata lastLookUpTag
    ) external view returns (uint256 totalCount, string memory lookupTag, bytes32[] memory ids) {
        return _page(
            workerServiceId, workerId, requesterId, receiptStatus, LookupPaging.decode(lastLookUpTag)
        );
    }

    function _existing(bytes32 workOrderId) private view returns (Receipt storage receipt) {
        receipt = receipts[workOrderId];
        if (receipt.creator == address(0)) revert UnknownReceipt(workOrderId);
    }

    function _page(
        bytes32 workerServiceId,
        bytes32 workerId,
        bytes32 requesterId,
        uint256 receiptStatus,
        uint256 start
    ) private view returns (uint256 totalCount, string memory lookupTag, bytes32[] memory ids) {
        uint256 length = receiptIds.length;
        ids = new bytes32[](LookupPaging.PAGE_SIZE);
        uint256 taken;
        uint256 next;
        for (uint256 i; i < length; i++) {
            bytes32 id = receiptIds[i];
            Receipt storage receipt = receipts[id];
            if (workerServiceId != 0 && receipt.workerServiceId != workerServiceId) continue;
            if (workerId != 0 && receipt.workerId != workerId) continue;
            if (requesterId != 0 && receipt.requesterId != requesterId) continue;
            if (receiptStatus != ANY_STATUS && receipt.status != receiptStatus) continue;
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
}
