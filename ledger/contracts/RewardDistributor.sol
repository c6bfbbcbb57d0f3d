// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {RewardToken} from "./RewardToken.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {BitMaps} from "@openzeppelin/contracts/utils/structs/BitMaps.sol";

/// @title RewardDistributor
/// @notice Pays reward epochs in the RewardToken it creates. The owner publishes each epoch's Merkle root with its
/// total, which is minted to this contract at that moment: every published epoch is fully funded, and every token in
/// existence was paid by an epoch (so the governance quorum, a fraction of the supply, is a fraction of what was
/// earned). Anyone may then submit a claim for a leaf
/// (the server relays claims and pays the gas); the tokens always go to the leaf's `account`, and each leaf pays
/// once.
/// @dev Leaves use OpenZeppelin's StandardMerkleTree layout over `(uint256 index, address account, uint256 amount)`:
/// `keccak256(bytes.concat(keccak256(abi.encode(index, account, amount))))`, sorted-pair inner nodes.
contract RewardDistributor is Ownable {
    using SafeERC20 for IERC20;
    using BitMaps for BitMaps.BitMap;

    struct Epoch {
        bytes32 root;
        uint256 total;
        uint256 claimed;
        uint64 publishedAt;
    }

    IERC20 public immutable token;

    mapping(uint256 epoch => Epoch) private _epochs;
    mapping(uint256 epoch => BitMaps.BitMap) private _claimed;

    event EpochPublished(uint256 indexed epoch, bytes32 indexed root, uint256 total);
    event Claimed(uint256 indexed epoch, uint256 index, address indexed account, uint256 amount);

    error ZeroRoot();
    error EpochAlreadyPublished(uint256 epoch, bytes32 root);
    error UnknownEpoch(uint256 epoch);
    error AlreadyClaimed(uint256 epoch, uint256 index);
    error InvalidProof();

    constructor() Ownable(msg.sender) {
        token = IERC20(address(new RewardToken(address(this))));
    }

    /// @notice Publishes `epoch` with its `root` and mints `total` to this contract. An epoch is published once:
    /// publishing it again reverts, so a stale retry can never fund it twice.
    function publishEpoch(uint256 epoch, bytes32 root, uint256 total) external onlyOwner {
        if (root == bytes32(0)) revert ZeroRoot();
        Epoch storage e = _epochs[epoch];
        if (e.root != bytes32(0)) revert EpochAlreadyPublished(epoch, e.root);
        e.root = root;
        e.total = total;
        e.publishedAt = uint64(block.number);
        emit EpochPublished(epoch, root, total);
        RewardToken(address(token)).mint(address(this), total);
    }

    /// @notice Pays `amount` to `account` for leaf `index` of `epoch`; reverts when the proof does not lead to the
    /// epoch's root or the leaf was paid already. Callable by anyone: the recipient is fixed by the leaf.
    function claim(uint256 epoch, uint256 index, address account, uint256 amount, bytes32[] calldata proof) external {
        Epoch storage e = _epochs[epoch];
        if (e.root == bytes32(0)) revert UnknownEpoch(epoch);
        if (_claimed[epoch].get(index)) revert AlreadyClaimed(epoch, index);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(index, account, amount))));
        if (!MerkleProof.verifyCalldata(proof, e.root, leaf)) revert InvalidProof();
        _claimed[epoch].set(index);
        e.claimed += amount;
        emit Claimed(epoch, index, account, amount);
        token.safeTransfer(account, amount);
    }

    function isClaimed(uint256 epoch, uint256 index) external view returns (bool) {
        return _claimed[epoch].get(index);
    }

    /// @notice The published epoch; all zero when `epoch` was never published.
    function epochInfo(uint256 epoch)
        external
        view
        returns (bytes32 root, uint256 total, uint256 claimed, uint64 publishedAt)
    {
        Epoch memory e = _epochs[epoch];
        return (e.root, e.total, e.claimed, e.publishedAt);
    }
}
