// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title ProtocolParameters
/// @notice The protocol rules the community votes on, owned by the governance timelock (so changed only by an executed
/// proposal): the reward split of each inference fee (contributors, builder, and the pool the rest), the minimum
/// quality score (0-100) a contribution needs to enter a snapshot, whether a model version must be approved in the
/// ModelRegistry before it is served to anyone but its owner, and the stake a builder bonds on a deployment proposal
/// with the share of it a defeated proposal forfeits to the pool.
/// @dev Every change emits `ParameterSet(name, oldValue, newValue)` (an address as its uint160), so the history of
/// every rule can be read from the logs alone.
contract ProtocolParameters is Ownable {
    uint16 public constant BASIS_POINTS = 10_000;
    uint8 public constant MAX_QUALITY_SCORE = 100;

    uint16 public contributorsBps;
    uint16 public builderBps;
    uint8 public minQualityScore;
    bool public deploymentGate;
    uint256 public deploymentStake;
    uint16 public stakeSlashBps;
    address public pool;

    event ParameterSet(bytes32 indexed name, uint256 oldValue, uint256 newValue);

    error SplitOverFull(uint256 contributorsBps, uint256 builderBps);
    error QualityScoreOutOfRange(uint256 score);
    error BasisPointsOutOfRange(uint256 bps);
    error ZeroPool();

    constructor(
        address owner_,
        uint16 contributorsBps_,
        uint16 builderBps_,
        uint8 minQualityScore_,
        bool deploymentGate_,
        uint256 deploymentStake_,
        uint16 stakeSlashBps_,
        address pool_
    ) Ownable(owner_) {
        _setRewardSplit(contributorsBps_, builderBps_);
        _setMinQualityScore(minQualityScore_);
        _setDeploymentGate(deploymentGate_);
        _setDeploymentStake(deploymentStake_, stakeSlashBps_);
        _setPool(pool_);
    }

    /// @notice The pool's share of a fee: what the contributors and the builder do not get.
    function poolBps() external view returns (uint16) {
        return BASIS_POINTS - contributorsBps - builderBps;
    }

    /// @notice Every parameter in one call.
    function all()
        external
        view
        returns (
            uint16 contributorsBps_,
            uint16 builderBps_,
            uint8 minQualityScore_,
            bool deploymentGate_,
            uint256 deploymentStake_,
            uint16 stakeSlashBps_,
            address pool_
        )
    {
        return (contributorsBps, builderBps, minQualityScore, deploymentGate, deploymentStake, stakeSlashBps, pool);
    }

    function setRewardSplit(uint16 contributorsBps_, uint16 builderBps_) external onlyOwner {
        _setRewardSplit(contributorsBps_, builderBps_);
    }

    function setMinQualityScore(uint8 score) external onlyOwner {
        _setMinQualityScore(score);
    }

    function setDeploymentGate(bool on) external onlyOwner {
        _setDeploymentGate(on);
    }

    function setDeploymentStake(uint256 stake, uint16 slashBps) external onlyOwner {
        _setDeploymentStake(stake, slashBps);
    }

    function setPool(address pool_) external onlyOwner {
        _setPool(pool_);
    }

    function _setRewardSplit(uint16 c, uint16 b) private {
        if (uint256(c) + uint256(b) > BASIS_POINTS) revert SplitOverFull(c, b);
        emit ParameterSet("contributorsBps", contributorsBps, c);
        emit ParameterSet("builderBps", builderBps, b);
        contributorsBps = c;
        builderBps = b;
    }

    function _setMinQualityScore(uint8 score) private {
        if (score > MAX_QUALITY_SCORE) revert QualityScoreOutOfRange(score);
        emit ParameterSet("minQualityScore", minQualityScore, score);
        minQualityScore = score;
    }

    function _setDeploymentGate(bool on) private {
        emit ParameterSet("deploymentGate", deploymentGate ? 1 : 0, on ? 1 : 0);
        deploymentGate = on;
    }

    function _setDeploymentStake(uint256 stake, uint16 slashBps) private {
        if (slashBps > BASIS_POINTS) revert BasisPointsOutOfRange(slashBps);
        emit ParameterSet("deploymentStake", deploymentStake, stake);
        emit ParameterSet("stakeSlashBps", stakeSlashBps, slashBps);
        deploymentStake = stake;
        stakeSlashBps = slashBps;
    }

    function _setPool(address pool_) private {
        if (pool_ == address(0)) revert ZeroPool();
        emit ParameterSet("pool", uint256(uint160(pool)), uint256(uint160(pool_)));
        pool = pool_;
    }
}
