"""Where our contracts live on the configured chain: the deployment rows, deploying them, and noticing a reset.

``ensure_deployed`` (LineageRegistry) and ``ensure_rewards_deployed`` (RewardToken and RewardDistributor, next to
it) are one procedure, ``_ensure``: a lock-free look at the active row, then, only when it is missing or no longer
describes the chain, an advisory lock, the row retired with its reason, the contracts deployed again and
``deployment_retired`` sent inside that transaction. The outbox (``ledger.transactions``) listens to that signal to
send every transaction of the old contracts again; this module never touches a transaction row itself.

The signer's nonces live here too (``signer_nonce_take``): deployments and the outbox take them from the same
locked row, so no nonce is ever used twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.db import connection, transaction
from django.dispatch import Signal
from django.utils import timezone
from eth_utils import is_address, to_checksum_address

from . import chain
from .models import ChainDeployment, GovernanceContracts, RewardContracts, SignerNonce

logger = logging.getLogger(__name__)

_DEPLOY_LOCK_ID = 0x4C454447  # "LEDG": one advisory lock id for "deploying LineageRegistry"
_REWARDS_LOCK_ID = 0x52455744  # "REWD": the same for the reward contracts
_GOVERNANCE_LOCK_ID = 0x474F5645  # "GOVE": the same for the governance contracts

# sent inside the transaction that retires ``old`` (a ChainDeployment or RewardContracts row, the sender is its
# class) for ``new``, with the ``reason`` the old one no longer describes the chain
deployment_retired = Signal()

Row = TypeVar("Row", ChainDeployment, RewardContracts, GovernanceContracts)


def active_deployment() -> ChainDeployment | None:
    """The LineageRegistry deployment in use for EVM_CHAIN_ID, from the database only (no RPC)."""
    return ChainDeployment.objects.current()


def active_reward_contracts() -> RewardContracts | None:
    """The reward contracts in use for EVM_CHAIN_ID, from the database only (no RPC)."""
    return RewardContracts.objects.current()


def signer_nonce_take(*, deployment: ChainDeployment, address: str) -> int:
    """The next nonce for ``address`` on ``deployment``'s chain; the caller's transaction holds the signer's row
    lock until it commits, so two senders never take the same one."""
    row, _ = SignerNonce.objects.get_or_create(deployment=deployment, address=address)
    row = SignerNonce.objects.select_for_update().get(id=row.id)
    # never below the chain (another sender with this key moved it on), never below our own record (a transaction
    # we signed that the node has not seen yet still owns its nonce)
    nonce = max(row.next_nonce, chain.account_nonce(address, block="pending"))
    row.next_nonce = nonce + 1
    row.save(update_fields=["next_nonce", "updated_at"])
    return nonce


def deployment_problem(deployment: ChainDeployment) -> str | None:
    """Why ``deployment`` no longer describes the chain (a reset, a reorg of its block), or None when it still does.

    Compares the code at the address and the block hash at the deploy height, not the genesis hash: anvil changes
    that one when it reloads a saved state, and a reloaded chain is the same chain.
    """
    if not chain.has_code(deployment.contract_address):
        return f"no contract code at {deployment.contract_address}"
    return _block_problem(deployment.deploy_block_number, deployment.deploy_block_hash, "the contract was")


def active_governance() -> GovernanceContracts | None:
    """The governance contracts in use for EVM_CHAIN_ID, from the database only (no RPC)."""
    return GovernanceContracts.objects.current()


def reward_contracts_problem(contracts: RewardContracts) -> str | None:
    """Why ``contracts`` no longer describe the chain, or None when they still do (the rule of deployment_problem).

    Contracts built from other sources than today's (the token before it carried votes) count as gone too: they
    are replaced, and every epoch is published again on the new ones (docs/governance.md, "Migrating balances").
    """
    for label, field in (
        ("RewardToken", "token_artifact_sha256"),
        ("RewardDistributor", "distributor_artifact_sha256"),
    ):
        if getattr(contracts, field) != chain.contract_artifact_sha256(label):
            return f"{label} was upgraded (deployed from {getattr(contracts, field)[:12]}…, built now as " \
                f"{chain.contract_artifact_sha256(label)[:12]}…)"  # fmt: skip
    for label, address in (
        ("RewardToken", contracts.token_address),
        ("RewardDistributor", contracts.distributor_address),
    ):
        if not chain.has_code(address):
            return f"no {label} code at {address}"
    return _block_problem(contracts.deploy_block_number, contracts.deploy_block_hash, "the reward contracts were")


def _block_problem(number: int, expected_hash: str, what: str) -> str | None:
    current = chain.block_hash(number)
    if current is None:
        return f"block {number} (the deploy block) does not exist any more"
    if current != expected_hash:
        return f"block {number} is {current}, {what} deployed in {expected_hash}"
    return None


def governance_contracts_problem(contracts: GovernanceContracts) -> str | None:
    """Why the governance contracts no longer describe the chain, or None when they still do."""
    for name, address in contracts.addresses.items():
        if name != "RewardToken" and not chain.has_code(address):
            return f"no {name} code at {address}"
    return _block_problem(contracts.last_block_number, contracts.last_block_hash, "the governance contracts were")


def ensure_deployed() -> ChainDeployment:
    """The active LineageRegistry deployment, deploying it first if this chain has none or was reset.

    Idempotent and safe to call from several processes. On a reset the old deployment is retired with the reason,
    the contract is deployed again, and ``deployment_retired`` tells the outbox to anchor again on the new one.
    """
    current_chain = chain.chain_id()
    return _ensure(
        ChainDeployment,
        lock_id=_DEPLOY_LOCK_ID,
        chain_id=current_chain,
        problem=deployment_problem,
        deploy=lambda: _deploy_registry(current_chain),
        what="LineageRegistry",
    )


def ensure_rewards_deployed() -> RewardContracts:
    """The active RewardToken + RewardDistributor, deploying them first when this chain has none, was reset, or
    LineageRegistry itself was redeployed (a reset seen from there first).

    Idempotent and safe from several processes. On a reset the old row is retired with the reason and
    ``deployment_retired`` tells the outbox to publish the epochs again (and what becomes of claims).
    """
    return _ensure_on(
        ensure_deployed(), "deployment", "LineageRegistry was", RewardContracts, lock_id=_REWARDS_LOCK_ID,
        problem=reward_contracts_problem, deploy=_deploy_rewards, what="the reward contracts",
    )  # fmt: skip


def ensure_governance_deployed() -> GovernanceContracts:
    """The active governance contracts, deploying them first when this chain has none, was reset, or the reward
    contracts (whose token carries the votes) were deployed again. Idempotent and safe from several processes."""
    return _ensure_on(
        ensure_rewards_deployed(), "rewards", "the reward contracts were", GovernanceContracts,
        lock_id=_GOVERNANCE_LOCK_ID, problem=governance_contracts_problem, deploy=_deploy_governance,
        what="the governance contracts",
    )  # fmt: skip


def _ensure_on(
    below: ChainDeployment | RewardContracts,
    link: str,
    below_was: str,
    model: type[Row],
    *,
    lock_id: int,
    problem: Callable[[Row], str | None],
    deploy: Callable[[ChainDeployment], Row] | Callable[[RewardContracts], Row],
    what: str,
) -> Row:
    """``_ensure`` for contracts that stand on others (``below``, their ``link`` foreign key): deployed again, on
    ``below``, when those were (a reset seen from there first) or when ``problem`` finds something wrong."""

    def problem_here(contracts: Row) -> str | None:
        if getattr(contracts, f"{link}_id") != below.id:
            return f"{below_was} redeployed ({getattr(contracts, link).retired_reason or 'chain reset'})"
        return problem(contracts)

    return _ensure(
        model, lock_id=lock_id, chain_id=below.chain_id, problem=problem_here, deploy=lambda: deploy(below), what=what
    )


def _ensure(
    model: type[Row],
    *,
    lock_id: int,
    chain_id: int,
    problem: Callable[[Row], str | None],
    deploy: Callable[[], Row],
    what: str,
) -> Row:
    # the common case, every few seconds from the beat: nothing wrong, so no lock that would hold up the senders
    current = model.objects.filter(chain_id=chain_id, active=True).first()
    if current is not None and problem(current) is None:
        return current
    with transaction.atomic():
        # PostgreSQL: one deployer at a time across processes. SQLite runs write transactions one at a time anyway.
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [lock_id])
        current = model.objects.select_for_update().filter(chain_id=chain_id, active=True).first()
        reason = None
        if current is not None:
            reason = problem(current)
            if reason is None:
                return current  # another process repaired it while this one waited for the lock
            logger.warning("chain %s: deploying %s again (%s)", chain_id, what, reason)
            current.active = False
            current.retired_at = timezone.now()
            current.retired_reason = reason
            current.save(update_fields=["active", "retired_at", "retired_reason"])
        new = deploy()
        if current is not None:
            deployment_retired.send(sender=model, old=current, new=new, reason=reason or "")
    return new


def _deployed(name: str, *args: object, chain_id: int, nonce: int) -> chain.Receipt:
    """Deploy our contract ``name`` and wait for it: the one deploy path of every contract here."""
    receipt = chain.send_and_wait(
        chain.creation_transaction(name, *args, chain_id=chain_id), nonce=nonce, what=f"deploy {name}"
    )
    if not receipt.contract_address or not chain.has_code(receipt.contract_address):
        raise chain.ChainError(f"no code at {receipt.contract_address} after deploying {name}")
    return receipt


def _deploy_registry(chain_id: int) -> ChainDeployment:
    account = chain.signer()
    # no deployment row yet, so no SignerNonce row: the chain's pending count is the next nonce (every sender for
    # the retired deployment is stopped by its active flag, under this transaction's lock)
    receipt = _deployed(
        "LineageRegistry", chain_id=chain_id, nonce=chain.account_nonce(account.address, block="pending")
    )
    deployment = ChainDeployment.objects.create(
        chain_id=chain_id,
        rpc_url=chain.redacted_rpc_url(settings.EVM_RPC_URL),
        contract_address=receipt.contract_address,
        deployer=account.address,
        deploy_tx_hash=receipt.tx_hash,
        deploy_block_number=receipt.block_number,
        deploy_block_hash=receipt.block_hash,
        artifact_sha256=chain.artifact_sha256(),
    )
    logger.info(
        "LineageRegistry deployed at %s on chain %s (block %s)",
        receipt.contract_address,
        chain_id,
        receipt.block_number,
    )
    return deployment


def _deploy_rewards(deployment: ChainDeployment) -> RewardContracts:
    account = chain.signer()
    # the distributor creates the token in its constructor and is its only minter: one transaction
    distributor = _deployed(
        "RewardDistributor",
        chain_id=deployment.chain_id,
        nonce=signer_nonce_take(deployment=deployment, address=account.address),
    )
    token_address = chain.reward_token_of(distributor.contract_address)
    contracts = RewardContracts.objects.create(
        deployment=deployment,
        chain_id=deployment.chain_id,
        token_address=token_address,
        distributor_address=distributor.contract_address,
        treasury=account.address,
        token_tx_hash=distributor.tx_hash,
        distributor_tx_hash=distributor.tx_hash,
        approve_tx_hash="",
        deploy_block_number=distributor.block_number,
        deploy_block_hash=distributor.block_hash,
        token_artifact_sha256=chain.contract_artifact_sha256("RewardToken"),
        distributor_artifact_sha256=chain.contract_artifact_sha256("RewardDistributor"),
    )
    logger.info("RewardDistributor deployed at %s (token %s)", distributor.contract_address, token_address)
    return contracts


def governance_deploy_settings() -> dict[str, int | bool | str]:
    """What new governance contracts are deployed with (GOVERNANCE_* settings; docs/governance.md): the Governor's
    settings, the timelock's delay, and the first values of ProtocolParameters. Afterwards only proposals change
    them."""
    return {
        "voting_delay_blocks": settings.GOVERNANCE_VOTING_DELAY_BLOCKS,
        "voting_period_blocks": settings.GOVERNANCE_VOTING_PERIOD_BLOCKS,
        "proposal_threshold": str(settings.GOVERNANCE_PROPOSAL_THRESHOLD),
        "quorum_percent": settings.GOVERNANCE_QUORUM_PERCENT,
        "timelock_seconds": settings.GOVERNANCE_TIMELOCK_SECONDS,
        "contributors_bps": settings.GOVERNANCE_CONTRIBUTORS_BPS,
        "builder_bps": settings.GOVERNANCE_BUILDER_BPS,
        "min_quality_score": settings.GOVERNANCE_MIN_QUALITY_SCORE,
        "deployment_gate": settings.GOVERNANCE_DEPLOYMENT_GATE,
        "deployment_stake": str(settings.GOVERNANCE_DEPLOYMENT_STAKE),
        "stake_slash_bps": settings.GOVERNANCE_STAKE_SLASH_BPS,
        "pool": _pool_address(),
    }


def _pool_address() -> str:
    configured = settings.REWARDS_POOL_ADDRESS.strip()
    if configured and not is_address(configured):
        raise chain.ChainError(f"REWARDS_POOL_ADDRESS {configured!r} is not an EVM address")
    if configured:
        return to_checksum_address(configured)
    try:
        return chain.signer().address
    except chain.ChainError:
        return ""  # no signer configured: nothing can be deployed either, and the pool is named at deployment


def _deploy_governance(rewards: RewardContracts) -> GovernanceContracts:
    account = chain.signer()
    deployment = rewards.deployment
    chain_id = rewards.chain_id
    config = governance_deploy_settings()

    def nonce() -> int:
        return signer_nonce_take(deployment=deployment, address=account.address)

    # the deployer is the timelock's admin only until the Governor holds its roles, then renounces it
    timelock = _deployed(
        "OpenLedgerTimelock", config["timelock_seconds"], [], [chain.ZERO_ADDRESS], account.address,
        chain_id=chain_id, nonce=nonce(),
    )  # fmt: skip
    governor = _deployed(
        "OpenLedgerGovernor", rewards.token_address, timelock.contract_address, config["voting_delay_blocks"],
        config["voting_period_blocks"], int(config["proposal_threshold"]), config["quorum_percent"],
        chain_id=chain_id, nonce=nonce(),
    )  # fmt: skip
    parameters = _deployed(
        "ProtocolParameters", timelock.contract_address, config["contributors_bps"], config["builder_bps"],
        config["min_quality_score"], config["deployment_gate"], int(config["deployment_stake"]),
        config["stake_slash_bps"], config["pool"], chain_id=chain_id, nonce=nonce(),
    )  # fmt: skip
    registry = _deployed(
        "ModelRegistry", timelock.contract_address, rewards.token_address, governor.contract_address,
        parameters.contract_address, chain_id=chain_id, nonce=nonce(),
    )  # fmt: skip
    steps = {
        "timelock": timelock.tx_hash,
        "governor": governor.tx_hash,
        "parameters": parameters.tx_hash,
        "registry": registry.tx_hash,
    }
    last = registry
    for step, function, role in (
        ("grant_proposer", "grantRole", "PROPOSER_ROLE"),
        ("grant_canceller", "grantRole", "CANCELLER_ROLE"),
        ("renounce_admin", "renounceRole", "DEFAULT_ADMIN_ROLE"),
    ):
        role_id = chain.call("OpenLedgerTimelock", timelock.contract_address, role)
        member = governor.contract_address if function == "grantRole" else account.address
        last = chain.send_and_wait(
            chain.transaction("OpenLedgerTimelock", timelock.contract_address, function, role_id, member,
                              chain_id=chain_id),
            nonce=nonce(), what=f"timelock {step}",
        )  # fmt: skip
        steps[step] = last.tx_hash
    contracts = GovernanceContracts.objects.create(
        rewards=rewards,
        chain_id=chain_id,
        timelock_address=timelock.contract_address,
        governor_address=governor.contract_address,
        parameters_address=parameters.contract_address,
        registry_address=registry.contract_address,
        deploy_block_number=timelock.block_number,
        deploy_block_hash=timelock.block_hash,
        last_block_number=last.block_number,
        last_block_hash=last.block_hash,
        transactions=steps,
        settings=config,
        artifacts_sha256={name: chain.contract_artifact_sha256(name) for name in chain.GOVERNANCE_CONTRACTS},
    )
    logger.info("Governor deployed at %s (timelock %s)", governor.contract_address, timelock.contract_address)
    return contracts
