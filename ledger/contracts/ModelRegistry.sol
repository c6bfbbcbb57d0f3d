// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IGovernor} from "@openzeppelin/contracts/governance/IGovernor.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ProtocolParameters} from "./ProtocolParameters.sol";

/// @title ModelRegistry
/// @notice Which model versions the community approved for deployment, by the keccak256 of their lineage manifest.
/// Only the governance timelock approves (or withdraws an approval), so only an executed proposal does.
///
/// A deployment proposal is the Governor proposal whose one action is `approve(manifestHash)` on this contract. Its
/// proposer bonds a stake on it (`bond`, with an ERC-2612 permit, so it can be relayed): `deploymentStake` of
/// ProtocolParameters at that moment. `approve` refuses a manifest whose proposal has no stake, so an unstaked
/// deployment proposal can pass but never take effect. `settle` (anyone) ends a bond once its proposal is decided:
/// the whole stake back to the builder when it passed or was cancelled; when it was defeated (or expired),
/// `stakeSlashBps` of it to the pool and the rest back.
contract ModelRegistry is Ownable {
    using SafeERC20 for IERC20;

    enum BondStatus {
        None,
        Bonded,
        Returned,
        Slashed
    }

    struct Bond {
        address builder;
        bytes32 manifestHash;
        uint256 amount;
        BondStatus status;
    }

    IERC20 public immutable token;
    IGovernor public immutable governor;
    ProtocolParameters public immutable parameters;

    mapping(bytes32 manifestHash => uint256 proposalId) public approvedBy;
    mapping(bytes32 manifestHash => uint256 proposalId) public bondedProposal;
    mapping(uint256 proposalId => Bond) private _bonds;

    event StakeBonded(
        uint256 indexed proposalId, bytes32 indexed manifestHash, address indexed builder, uint256 amount
    );
    event StakeReturned(uint256 indexed proposalId, address indexed builder, uint256 amount);
    event StakeSlashed(
        uint256 indexed proposalId, address indexed builder, uint256 slashed, uint256 returned, address pool
    );
    event ModelApproved(bytes32 indexed manifestHash, uint256 indexed proposalId);
    event ApprovalWithdrawn(bytes32 indexed manifestHash);

    error NotADeploymentProposal(uint256 proposalId);
    error NotTheProposer(uint256 proposalId, address proposer, address builder);
    error ProposalNotOpen(uint256 proposalId, IGovernor.ProposalState state);
    error AlreadyBonded(bytes32 manifestHash, uint256 proposalId);
    error NoStake(bytes32 manifestHash);
    error NotBonded(uint256 proposalId);
    error NotDecided(uint256 proposalId, IGovernor.ProposalState state);
    error NotApproved(bytes32 manifestHash);

    constructor(address owner_, IERC20 token_, IGovernor governor_, ProtocolParameters parameters_) Ownable(owner_) {
        token = token_;
        governor = governor_;
        parameters = parameters_;
    }

    /// @notice Whether the version with this manifest hash is approved for deployment.
    function isApproved(bytes32 manifestHash) external view returns (bool) {
        return approvedBy[manifestHash] != 0;
    }

    /// @notice The id the Governor gives the deployment proposal of `manifestHash` with this description hash.
    function deploymentProposalId(bytes32 manifestHash, bytes32 descriptionHash) public view returns (uint256) {
        address[] memory targets = new address[](1);
        targets[0] = address(this);
        uint256[] memory values = new uint256[](1);
        bytes[] memory calldatas = new bytes[](1);
        calldatas[0] = abi.encodeCall(this.approve, (manifestHash));
        return governor.getProposalId(targets, values, calldatas, descriptionHash);
    }

    function bondOf(uint256 proposalId) external view returns (Bond memory) {
        return _bonds[proposalId];
    }

    /// @notice Bonds the stake of the deployment proposal of `manifestHash` (described by `descriptionHash`) from
    /// its proposer `builder`, who signed an ERC-2612 permit for at least the stake to this contract (or approved it
    /// beforehand: then the permit may be empty). Only while the proposal is pending or active, once per manifest.
    function bond(bytes32 manifestHash, bytes32 descriptionHash, address builder, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external
        returns (uint256 proposalId)
    {
        proposalId = deploymentProposalId(manifestHash, descriptionHash);
        address proposer = governor.proposalProposer(proposalId);
        if (proposer == address(0)) revert NotADeploymentProposal(proposalId);
        if (proposer != builder) revert NotTheProposer(proposalId, proposer, builder);
        IGovernor.ProposalState state = governor.state(proposalId);
        if (state != IGovernor.ProposalState.Pending && state != IGovernor.ProposalState.Active) {
            revert ProposalNotOpen(proposalId, state);
        }
        uint256 open = bondedProposal[manifestHash];
        if (open != 0 && _bonds[open].status == BondStatus.Bonded) revert AlreadyBonded(manifestHash, open);
        if (_bonds[proposalId].status != BondStatus.None) revert AlreadyBonded(manifestHash, proposalId);

        uint256 amount = parameters.deploymentStake();
        if (token.allowance(builder, address(this)) < amount) {
            // a permit that fails (already used, expired) leaves the allowance short, and the transfer below reverts
            try IERC20Permit(address(token)).permit(builder, address(this), amount, deadline, v, r, s) {} catch {}
        }
        _bonds[proposalId] = Bond(builder, manifestHash, amount, BondStatus.Bonded);
        bondedProposal[manifestHash] = proposalId;
        emit StakeBonded(proposalId, manifestHash, builder, amount);
        token.safeTransferFrom(builder, address(this), amount);
    }

    /// @notice Approves the version with `manifestHash` for deployment: only the timelock, executing a deployment
    /// proposal whose stake is bonded (which it returns, the proposal having passed).
    function approve(bytes32 manifestHash) external onlyOwner {
        uint256 proposalId = bondedProposal[manifestHash];
        if (proposalId == 0 || _bonds[proposalId].status == BondStatus.Slashed) revert NoStake(manifestHash);
        approvedBy[manifestHash] = proposalId;
        emit ModelApproved(manifestHash, proposalId);
        if (_bonds[proposalId].status == BondStatus.Bonded) _return(proposalId);
    }

    /// @notice Withdraws an approval: only the timelock (a proposal of its own).
    function withdrawApproval(bytes32 manifestHash) external onlyOwner {
        if (approvedBy[manifestHash] == 0) revert NotApproved(manifestHash);
        delete approvedBy[manifestHash];
        emit ApprovalWithdrawn(manifestHash);
    }

    /// @notice Ends the bond of a decided proposal (anyone may call): returned when it passed or was cancelled,
    /// `stakeSlashBps` of it to the pool when it was defeated or expired.
    function settle(uint256 proposalId) external {
        Bond storage b = _bonds[proposalId];
        if (b.status != BondStatus.Bonded) revert NotBonded(proposalId);
        IGovernor.ProposalState state = governor.state(proposalId);
        if (state == IGovernor.ProposalState.Defeated || state == IGovernor.ProposalState.Expired) {
            uint256 slashed = (b.amount * parameters.stakeSlashBps()) / parameters.BASIS_POINTS();
            uint256 returned = b.amount - slashed;
            address pool = parameters.pool();
            b.status = BondStatus.Slashed;
            emit StakeSlashed(proposalId, b.builder, slashed, returned, pool);
            if (slashed > 0) token.safeTransfer(pool, slashed);
            if (returned > 0) token.safeTransfer(b.builder, returned);
        } else if (
            state == IGovernor.ProposalState.Succeeded || state == IGovernor.ProposalState.Queued
                || state == IGovernor.ProposalState.Executed || state == IGovernor.ProposalState.Canceled
        ) {
            _return(proposalId);
        } else {
            revert NotDecided(proposalId, state);
        }
    }

    function _return(uint256 proposalId) private {
        Bond storage b = _bonds[proposalId];
        b.status = BondStatus.Returned;
        emit StakeReturned(proposalId, b.builder, b.amount);
        token.safeTransfer(b.builder, b.amount);
    }
}
