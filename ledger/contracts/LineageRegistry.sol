// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title LineageRegistry
/// @notice Public record of Merkle roots (Datanet snapshots, model lineage manifests, inference batches), each with
/// the subject it describes. Anyone can check a leaf against an anchored root with `verify`.
contract LineageRegistry is Ownable {
    struct RootInfo {
        uint8 kind;
        uint64 blockNumber;
        address submitter;
        bytes32 subjectId;
    }

    mapping(bytes32 root => RootInfo) private _roots;
    mapping(address account => bool) public isAnchorer;

    event Anchored(uint8 indexed kind, bytes32 indexed subjectId, bytes32 indexed root, string uri, address submitter);
    event AnchorerSet(address indexed account, bool allowed);

    error NotAnchorer(address account);
    error ZeroRoot();

    constructor() Ownable(msg.sender) {}

    modifier onlyAnchorer() {
        if (msg.sender != owner() && !isAnchorer[msg.sender]) revert NotAnchorer(msg.sender);
        _;
    }

    function setAnchorer(address account, bool allowed) external onlyOwner {
        isAnchorer[account] = allowed;
        emit AnchorerSet(account, allowed);
    }

    /// @notice Records `root` for `subjectId` and emits `Anchored`.
    /// @dev A root anchored again (two snapshots with the same records, a retried batch) keeps its first record,
    /// which is the earliest proof of existence, and still emits an event for the new subject: never a revert, so
    /// that a sender's retry cannot fail on its own earlier success.
    function anchor(uint8 kind, bytes32 subjectId, bytes32 root, string calldata uri) external onlyAnchorer {
        if (root == bytes32(0)) revert ZeroRoot();
        if (_roots[root].blockNumber == 0) {
            _roots[root] = RootInfo(kind, uint64(block.number), msg.sender, subjectId);
        }
        emit Anchored(kind, subjectId, root, uri, msg.sender);
    }

    function isAnchored(bytes32 root) public view returns (bool) {
        return _roots[root].blockNumber != 0;
    }

    /// @notice The first anchoring of `root`; all zero when it was never anchored.
    function rootInfo(bytes32 root)
        external
        view
        returns (uint8 kind, bytes32 subjectId, uint64 blockNumber, address submitter)
    {
        RootInfo memory info = _roots[root];
        return (info.kind, info.subjectId, info.blockNumber, info.submitter);
    }

    /// @notice True when `root` is anchored here and `proof` leads from `leaf` to it (sorted-pair hashing, as
    /// OpenZeppelin's StandardMerkleTree builds it; `leaf` is the double-hashed leaf, not the raw values).
    function verify(bytes32 root, bytes32 leaf, bytes32[] calldata proof) external view returns (bool) {
        return isAnchored(root) && MerkleProof.verifyCalldata(proof, root, leaf);
    }
}
