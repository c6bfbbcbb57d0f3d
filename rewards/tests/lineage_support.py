"""Attributed answers for the reverse-lineage tests, written as attribution leaves them (a ``RunAttribution`` that is
final, its ``RecordAttribution`` rows, and the fee split by ``split_fee`` into accruals) but in bulk: the tests count
queries for hundreds of answers, and scoring each through the engine would need a trained adapter per answer."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from attribution.models import RecordAttribution, RunAttribution
from inference.models import InferenceRun
from rewards.models import RewardAccrual
from rewards.split import REWARD_POLICY_V1, split_fee

from .support import FEE, World


def attributed_runs(
    world: World, records: list[Any], *, count: int, version: Any = None, asker: Any = None
) -> list[Any]:
    """``count`` finished runs of ``version`` (the world's by default) whose answers credit ``records`` in equal
    shares, each with its fee split among the records' contributions, the builder and the pool."""
    version = version or world.version
    runs = InferenceRun.objects.bulk_create(
        InferenceRun(
            user=asker or world.asker,
            version=version,
            base_model=version.base_model,
            kind=InferenceRun.Kind.CHAT,
            messages=[{"role": "user", "content": "What does the lantern burn?"}],
            answer="The lantern burns oil.",
            finish_reason="stop",
            status=InferenceRun.Status.SUCCEEDED,
        )
        for _ in range(count)
    )
    share = Fraction(1, len(records))
    by_contribution: dict[int, Fraction] = {}
    for record in records:
        by_contribution[record.contribution_id] = by_contribution.get(record.contribution_id, Fraction(0)) + share
    contributions = {r.contribution_id: r.contribution for r in records}
    shares = list(by_contribution.items())
    attributions = RunAttribution.objects.bulk_create(
        RunAttribution(
            run=run,
            status=RunAttribution.Status.OK,
            policy_version=1,
            reward_policy_version=REWARD_POLICY_V1.version,
            contributors=[[contributions[c].contributor_id, f"{s.numerator}/{s.denominator}"] for c, s in shares],
            fee=FEE,
        )
        for run in runs
    )
    RecordAttribution.objects.bulk_create(
        RecordAttribution(
            run_attribution=attribution,
            record=record,
            contribution_id=record.contribution_id,
            rank=rank,
            share=f"{share.numerator}/{share.denominator}",
            share_float=float(share),
        )
        for attribution in attributions
        for rank, record in enumerate(records, start=1)
    )
    split = split_fee(FEE, by_contribution, REWARD_POLICY_V1)
    accruals = []
    for run in runs:
        for contribution_id, amount in split.contributors:
            contribution = contributions[contribution_id]
            s = by_contribution[contribution_id]
            accruals.append(
                RewardAccrual(
                    run=run,
                    recipient_kind=RewardAccrual.Kind.CONTRIBUTOR,
                    user_id=contribution.contributor_id,
                    contribution=contribution,
                    datanet_id=contribution.datanet_id,
                    amount=amount,
                    share=f"{s.numerator}/{s.denominator}",
                    policy_version=split.policy_version,
                )
            )
        accruals.append(
            RewardAccrual(run=run, recipient_kind=RewardAccrual.Kind.BUILDER, user=version.owner, amount=split.builder,
                          share="1/5", policy_version=split.policy_version)
        )  # fmt: skip
        accruals.append(
            RewardAccrual(run=run, recipient_kind=RewardAccrual.Kind.POOL, amount=split.protocol, share="1/10",
                          policy_version=split.policy_version)
        )  # fmt: skip
    RewardAccrual.objects.bulk_create(accruals)
    return runs
