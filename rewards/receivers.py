"""What rewards plugs into attribution, the app below it (``attribution.hooks``), connected by
``RewardsConfig.ready()``: the split of every attributed run's fee into accruals, and the reward split's parts of
the run's ancestry panel and of the run API's ``attribution``."""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction

from attribution.models import RunAttribution
from inference.composites import component_shares
from inference.models import InferenceRun
from ledger.rules import rules_in_force
from modelfactory.models import ModelVersion

from . import services
from .split import RewardPolicy, governed_policy


class FeeSplit:
    """Attribution's fee split (``attribution.hooks.FeeSplit``): accruals under ``split.REWARD_POLICY`` with the
    basis points of the rules in force (``ledger.rules.rules_in_force``: ProtocolParameters, read from chain and
    cached until an executed proposal), written in the transaction that makes the run's attribution final."""

    @property
    def policy(self) -> RewardPolicy:
        return governed_policy(rules_in_force())

    def run_attributed(
        self,
        *,
        run: InferenceRun,
        attribution: RunAttribution,
        contribution_shares: Mapping[int, Fraction],
        policy: RewardPolicy,
    ) -> None:
        services.run_accrue(
            run=run,
            builder=run.version.owner if run.version is not None else None,
            fee=int(attribution.fee),
            contribution_shares=contribution_shares,
            policy=policy,
            builders=composite_builders(run.composition) if run.composition else None,
        )


def composite_builders(document: dict) -> dict[int, Fraction]:
    """The builders of a composite answer: each component's owner with the component's exact share of the total
    weight (an owner of two components gets both shares)."""
    shares = component_shares(document)
    owners = dict(ModelVersion.objects.filter(pk__in=[v for v, _ in shares]).values_list("pk", "owner_id"))
    builders: dict[int, Fraction] = {}
    for version_id, share in shares:
        builders[owners[version_id]] = builders.get(owners[version_id], Fraction(0)) + share
    return builders


FEE_SPLIT = FeeSplit()
