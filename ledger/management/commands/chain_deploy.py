from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.core.management.base import BaseCommand, CommandError

from ledger import chain, deployments

T = TypeVar("T")


class Command(BaseCommand):
    help = (
        "Deploy LineageRegistry, the reward contracts (RewardDistributor and its RewardToken) and the governance "
        "contracts (timelock, Governor, ProtocolParameters, ModelRegistry) to EVM_RPC_URL unless they are there "
        "already (redeploying after a chain reset)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        deployment = _deploy("LineageRegistry", deployments.ensure_deployed)
        self.stdout.write(
            f"LineageRegistry at {deployment.contract_address} on chain {deployment.chain_id} "
            f"(deployed in block {deployment.deploy_block_number}, signer {deployment.deployer})"
        )
        rewards = _deploy("the reward contracts", deployments.ensure_rewards_deployed)
        self.stdout.write(
            f"RewardDistributor at {rewards.distributor_address}, RewardToken at {rewards.token_address} "
            f"(owner {rewards.treasury})"
        )
        governance = _deploy("the governance contracts", deployments.ensure_governance_deployed)
        self.stdout.write(
            f"Governor at {governance.governor_address}, timelock {governance.timelock_address}, ProtocolParameters "
            f"at {governance.parameters_address}, ModelRegistry at {governance.registry_address}"
        )


def _deploy(what: str, ensure: Callable[[], T]) -> T:
    try:
        return ensure()
    except chain.ChainError as e:
        raise CommandError(f"cannot deploy {what}: {e}") from e
