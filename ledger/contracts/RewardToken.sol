// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {ERC20Votes} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Votes.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";

/// @title RewardToken
/// @notice The reward token (18 decimals), which is also the governance vote: ERC20Votes with ERC20Permit, so a
/// balance becomes voting power once its holder delegates it (to themselves or to someone else, also by an EIP-712
/// signature: `delegateBySig`), and approvals can be signed (`permit`). Every token in existence was earned: the
/// only minter is the RewardDistributor that created this token, and it mints exactly each published epoch's total.
/// Votes are counted at block numbers (the ERC-6372 clock is `block.number`).
contract RewardToken is ERC20, ERC20Permit, ERC20Votes {
    /// @notice The RewardDistributor that deployed this token: the only account that may mint.
    address public immutable minter;

    error NotMinter(address caller);

    constructor(address minter_) ERC20("OpenLedger Test Reward", "OLTR") ERC20Permit("OpenLedger Test Reward") {
        minter = minter_;
    }

    /// @notice Mints `amount` to `to`; only the minter (the distributor, when it publishes an epoch).
    function mint(address to, uint256 amount) external {
        if (msg.sender != minter) revert NotMinter(msg.sender);
        _mint(to, amount);
    }

    function _update(address from, address to, uint256 value) internal override(ERC20, ERC20Votes) {
        super._update(from, to, value);
    }

    function nonces(address owner) public view override(ERC20Permit, Nonces) returns (uint256) {
        return super.nonces(owner);
    }
}
