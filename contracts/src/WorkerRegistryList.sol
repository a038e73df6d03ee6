// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {LookupPaging} from "./LookupPaging.sol";

/// @title EEA registry list: the directory of worker registries, by organization.
/// @notice A curated list: every write is reserved to the list's owner (the
/// deployer, until it transfers ownership).
/// Status values (EEA): 1 active, 2 offline, 3 decommissioned.
contract WorkerRegistryList {
    uint256 public constant STATUS_ACTIVE = 1;
    uint256 public constant STATUS_DECOMMISSIONED = 3;

    struct Registry {
        string uri;
        bytes32 scAddress;
        bytes32[] applicationTypeIds;
        uint256 status;
    }

    address public owner;
    mapping(bytes32 orgId => Registry) private registries;
    /// @dev Append-only; lookup tags are indexes into it.
    bytes32[] private orgIds;

    event RegistryAdded(
        bytes32 indexed orgId, string uri, bytes32 scAddress, bytes32[] applicationTypeIds
    );
    event RegistryUpdated(
        bytes32 indexed orgId, string uri, bytes32 scAddress, bytes32[] applicationTypeIds
    );
    event RegistryStatusChanged(bytes32 indexed orgId, uint256 status);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    error NotOwner(address caller);
    error InvalidOrganizationId();
    error InvalidRegistryStatus(uint256 status);
    error RegistryAlreadyAdded(bytes32 orgId);
    error UnknownRegistry(bytes32 orgId);
    error InvalidOwner();

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    constructor() {
        owner = msg.sender;
        emit OwnershipTransferred(address(0), msg.sender);
    }

    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert InvalidOwner();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    function registryAdd(
        bytes32 orgID,
        string calldata uri,
        bytes32 scAddr,
        bytes32[] calldata appTypeIds
    ) external onlyOwner {
        if (orgID == bytes32(0)) revert InvalidOrganizationId();
        Registry storage entry = registries[orgID];
        if (entry.status != 0) revert RegistryAlreadyAdded(orgID);

        entry.uri = uri;
        entry.scAddress = scAddr;
        entry.applicationTypeIds = appTypeIds;
        entry.status = STATUS_ACTIVE;
        orgIds.push(orgID);

        emit RegistryAdded(orgID, uri, scAddr, appTypeIds);
    }

    function registryUpdate(
        bytes32 orgID,
        string calldata uri,
        bytes32 scAddr,
        bytes32[] calldata appTypeIds
    ) external onlyOwner {
        Registry storage entry = _existing(orgID);
        entry.uri = uri;
        entry.scAddress = scAddr;
        entry.applicationTypeIds = appTypeIds;
        emit RegistryUpdated(orgID, uri, scAddr, appTypeIds);
    }

    function registrySetStatus(bytes32 orgID, uint256 status) external onlyOwner {
        if (status < STATUS_ACTIVE || status > STATUS_DECOMMISSIONED) {
            revert InvalidRegistryStatus(status);
        }
        _existing(orgID).status = status;
        emit RegistryStatusChanged(orgID, status);
    }

    /// @notice First page of the registries serving `appTypeId` (0: any).
    function registryLookUp(bytes32 appTypeId)
        external
        view
        returns (uint256 totalCount, string memory lookupTag, bytes32[] memory ids)
    {
        return _page(appTypeId, 0);
    }

    /// @notice The page that starts where the page carrying `lookUpTag` stopped.
    function registryLookUpNext(bytes32 appTypeId, string calldata lookUpTag)
        external
        view
        returns (uint256 totalCount, string memory lookupTag, bytes32[] memory ids)
    {
        return _page(appTypeId, LookupPaging.decode(lookUpTag));
    }

    function registryRetrieve(bytes32 orgID)
        external
        view
        returns (string memory uri, bytes32 scAddr, bytes32[] memory appTypeIds, uint256 status)
    {
        Registry storage entry = _existing(orgID);
        return (entry.uri, entry.scAddress, entry.applicationTypeIds, entry.status);
    }

    function _existing(bytes32 orgID) private view returns (Registry storage entry) {
        entry = registries[orgID];
        if (entry.status == 0) revert UnknownRegistry(orgID);
    }

    function _page(bytes32 appTypeId, uint256 start)
        private
        view
        returns (uint256 totalCount, string memory lookupTag, bytes32[] memory ids)
    {
        uint256 length = orgIds.length;
        ids = new bytes32[](LookupPaging.PAGE_SIZE);
        uint256 taken;
        uint256 next;
        for (uint256 i; i < length; i++) {
            bytes32 id = orgIds[i];
            if (!_serves(registries[id], appTypeId)) continue;
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

    function _serves(Registry storage entry, bytes32 appTypeId) private view returns (bool) {
        if (appTypeId == 0) return true;
        bytes32[] storage appIds = entry.applicationTypeIds;
        for (uint256 i; i < appIds.length; i++) {
            if (appIds[i] == appTypeId) return true;
        }
        return false;
    }
}
