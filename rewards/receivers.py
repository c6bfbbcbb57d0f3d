"""What rewards plugs into attribution, the app below it (``attribution.hooks``), connected by
``RewardsConfig.ready()``: the split of every attributed run's fee into accruals, and the reward split's parts of
the run's ancestry panel and of the run API's ``attribution``."""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction

from attribution.models import RunAttribution
from inference.models import InferenceRun

from . import services
from .split import REWARD_POLICY, RewardPolicy


class FeeSplit:
    """Attribution's fee split (``attribution.hooks.FeeSplit``): accruals under ``split.REWARD_POLICY``, written in
    the transaction that makes the run's attribution final."""

    @property
    def policy(self) -> RewardPolicy:
        return REWARD_POLICY

    def run_attributed(
        self, *, run: InferenceRun, attribution: RunAttribution, contribution_shares: Mapping[int, Fraction]
    ) -> None:
        services.run_accrue(
            run=run,
            builder=run.version.owner,
            fee=int(attribution.fee),
            contribution_shares=contribution_shares,
            policy=self.policy,
        )


FEE_SPLIT = FeeSplit()
