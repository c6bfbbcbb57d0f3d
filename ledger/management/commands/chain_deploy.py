from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ledger import chain, deployments


class Command(BaseCommand):
    help = (
        "Deploy LineageRegistry, RewardToken and RewardDistributor to EVM_RPC_URL unless they are there already "
        "(redeploying after a chain reset)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            deployment = deployments.ensure_deployed()
        except chain.ChainError as e:
            raise CommandError(f"cannot deploy LineageRegistry: {e}") from e
        self.stdout.write(
            f"LineageRegistry at {deployment.contract_address} on chain {deployment.chain_id} "
            f"(deployed in block {deployment.deploy_block_number}, signer {deployment.deployer})"
        )
        try:
            rewards = deployments.ensure_rewards_deployed()
        except chain.ChainError as e:
            raise CommandError(f"cannot deploy the reward contracts: {e}") from e
        self.stdout.write(
            f"RewardDistributor at {rewards.distributor_address}, RewardToken at {rewards.token_address} "
            f"(treasury {rewards.treasury})"
        )
