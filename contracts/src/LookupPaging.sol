// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title Lookup tags for the EEA LookUp / LookUpNext paging.
/// @notice A tag is the decimal index, in the registry's append-only id list,
/// where the next page starts scanning. Entries are never removed, so a tag
/// stays valid while new entries are appended. The empty tag means "no more".
library LookupPaging {
    /// @dev Ids per page; small enough that a full page stays cheap in eth_call.
    uint256 internal constant PAGE_SIZE = 10;

    error InvalidLookupTag(string tag);

    function encode(uint256 index) internal pure returns (string memory) {
        if (index == 0) return "0";
        uint256 digits;
        for (uint256 rest = index; rest != 0; rest /= 10) digits++;
        bytes memory text = new bytes(digits);
        for (uint256 rest = index; rest != 0; rest /= 10) {
            text[--digits] = bytes1(uint8(48 + (rest % 10)));
        }
        return string(text);
    }

    function decode(string calldata tag) internal pure returns (uint256 index) {
        bytes calldata text = bytes(tag);
        // 78 digits already exceed uint256; a shorter bound keeps the loop tiny.
        if (text.length == 0 || text.length > 20) revert InvalidLookupTag(tag);
        for (uint256 i; i < text.length; i++) {
            uint8 c = uint8(text[i]);
            if (c < 48 || c > 57) revert InvalidLookupTag(tag);
            index = index * 10 + (c - 48);
        }
    }
}
