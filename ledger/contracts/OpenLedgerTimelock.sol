// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {TimelockController} from "@openzeppelin/contracts/governance/TimelockController.sol";

/// @title OpenLedgerTimelock
/// @notice OpenZeppelin's TimelockController as it is, under our name so that it compiles into an artifact of its
/// own. It owns ProtocolParameters and ModelRegistry; the Governor is its only proposer and canceller, anyone may
/// execute a ready operation, and it has no admin once deployed (the deployer renounces the role).
contract OpenLedgerTimelock is TimelockController {
    constructor(uint256 minDelay, address[] memory proposers, address[] memory executors, address admin)
        TimelockController(minDelay, proposers, executors, admin)
    {}
}
