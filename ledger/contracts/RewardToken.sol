// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title RewardToken
/// @notice A test ERC-20 (18 decimals) that rewards are paid in. The whole supply is minted once, to the treasury
/// named at deployment; nobody can mint more.
contract RewardToken is ERC20 {
    constructor(address treasury, uint256 supply) ERC20("OpenLedger Test Reward", "OLTR") {
        _mint(treasury, supply);
    }
}
