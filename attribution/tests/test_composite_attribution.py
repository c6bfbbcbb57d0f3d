"""An answer of a composite (several versions combined at request time) is attributed to every component's records,
weighted by the component's share, and its fee is split exactly: contributors by the weighted shares, the builders'
part between the components' owners by the same shares, the dust to the protocol pool. On the bundled model with a
real (tiny) training lineage, as ``test_answer_attribution``."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import pytest
from django.utils import timezone

from attribution import services
from attribution.models import RecordAttribution, RunAttribution
from attribution.tests.test_answer_attribution import ALICE_FACTS, Lineage, module_lineage
from inference import composites
from inference.models import InferenceRun
from modelfactory.models import ModelVersion
from rewards.models import RewardAccrual
from rewards.split import BASIS_POINTS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lineage(django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: Any) -> Iterator[Lineage]:
    with module_lineage(django_db_blocker, tmp_path_factory, with_merge=False) as built:
        yield built


@pytest.fixture
def media_root(lineage: Lineage, settings: Any) -> Any:
    settings.MEDIA_ROOT = str(lineage.media)
    return lineage.media


def composite_run(lineage: Lineage, *, weights: tuple[float, float], answer: str, question: str) -> InferenceRun:
    """A finished composite run of the lineage's version and its continued child, as the worker leaves it."""
    spec = composites.composition_spec(
        model=f"mix:mv-{lineage.version.pk}={weights[0]!r},mv-{lineage.child.pk}={weights[1]!r}"
    )
    clean = composites.composition_clean(user=lineage.builder, spec=spec)
    return InferenceRun.objects.create(
        user=lineage.builder,
        version=None,
        composition=clean.document,
        base_model=lineage.base,
        kind=InferenceRun.Kind.CHAT,
        messages=[{"role": "user", "content": question}],
        answer=answer,
        finish_reason="stop",
        status=InferenceRun.Status.SUCCEEDED,
        completion_tokens=len(answer.split()),
        finished_at=timezone.now(),
    )


def alone(run: InferenceRun, version: ModelVersion) -> services.Scored:
    as_component = copy.copy(run)
    as_component.version = version
    return services.run_score(run=as_component, index=version.attribution_index)


def test_a_composite_answer_is_attributed_to_each_components_records_by_its_weight(
    lineage: Lineage, db: None, media_root: Any
) -> None:
    fact = ALICE_FACTS[0]
    run = composite_run(lineage, weights=(0.75, 0.25), answer=fact["response"], question=fact["prompt"])

    attribution = services.run_attribute(run_id=run.pk)

    assert attribution.status == RunAttribution.Status.OK, attribution.error
    # each record's share is the components' shares of it, weighted 3/4 and 1/4, exactly
    expected: dict[int, Fraction] = {}
    for version, share in ((lineage.version, Fraction(3, 4)), (lineage.child, Fraction(1, 4))):
        for record in alone(run, version).attribution.records:
            expected[record.record_id] = expected.get(record.record_id, Fraction(0)) + share * record.share
    stored = {r.record_id: Fraction(r.share) for r in RecordAttribution.objects.filter(run_attribution=attribution)}
    assert {k: v for k, v in stored.items() if v} == {k: v for k, v in expected.items() if v}
    assert stored  # the answer repeats alice's record: it is credited
    assert attribution.contributors[0][0] == lineage.alice.pk
    # the panel's data says which component gave what
    components = attribution.support["components"]
    assert [(c["version"], c["share"], c["indexed"]) for c in components] == [
        (lineage.version.pk, "3/4", True),
        (lineage.child.pk, "1/4", True),
    ]
    assert "composite of 2 model versions" in attribution.explanation
    # the run API's attribution and the run's composition agree on the weights
    assert [c["share"] for c in run.composition["components"]] == ["3/4", "1/4"]


def test_a_composite_answers_fee_is_split_exactly_between_contributors_builders_and_the_pool(
    lineage: Lineage, db: None, media_root: Any, settings: Any
) -> None:
    # given components of two owners, weights 2:1 (thirds: every part has rounding dust), and an odd fee
    ModelVersion.objects.filter(pk__in=[lineage.version.pk, lineage.child.pk]).update(published=True)
    ModelVersion.objects.filter(pk=lineage.child.pk).update(owner=lineage.carol)
    settings.INFERENCE_RUN_FEE = 10**15 + 7
    fact = ALICE_FACTS[1]
    run = composite_run(lineage, weights=(2.0, 1.0), answer=fact["response"], question=fact["prompt"])

    attribution = services.run_attribute(run_id=run.pk)

    assert attribution.status == RunAttribution.Status.OK, attribution.error
    accruals = list(RewardAccrual.objects.filter(run=run))
    fee = int(attribution.fee)
    assert fee == 10**15 + 7
    assert sum(int(a.amount) for a in accruals) == fee  # to the unit
    builder_part = fee * accruals[0].builder_bps // BASIS_POINTS
    builders = {a.user_id: int(a.amount) for a in accruals if a.recipient_kind == RewardAccrual.Kind.BUILDER}
    assert builders == {lineage.builder.pk: builder_part * 2 // 3, lineage.carol.pk: builder_part // 3}
    contributors_bps = accruals[0].contributors_bps
    pool = fee * contributors_bps // BASIS_POINTS
    shares = {c: Fraction(s) for c, s in _contribution_shares(attribution).items()}
    paid = {a.contribution_id: int(a.amount) for a in accruals if a.recipient_kind == RewardAccrual.Kind.CONTRIBUTOR}
    assert paid == {c: pool * s.numerator // s.denominator for c, s in shares.items() if pool * s >= 1}
    (protocol,) = [int(a.amount) for a in accruals if a.recipient_kind == RewardAccrual.Kind.POOL]
    assert protocol == fee - sum(builders.values()) - sum(paid.values())


def _contribution_shares(attribution: RunAttribution) -> dict[int, Fraction]:
    shares: dict[int, Fraction] = {}
    for row in RecordAttribution.objects.filter(run_attribution=attribution).select_related("record"):
        shares[row.contribution_id] = shares.get(row.contribution_id, Fraction(0)) + Fraction(row.share)
    return shares


def test_a_composite_run_queues_its_attribution_when_it_finishes(lineage: Lineage, db: None, media_root: Any) -> None:
    from attribution.receivers import run_finished

    fact = ALICE_FACTS[2]
    run = composite_run(lineage, weights=(1.0, 1.0), answer=fact["response"], question=fact["prompt"])
    run_finished(run)  # queues on commit: the test's transaction never commits, so the row is what it leaves
    assert services.run_attribute(run_id=run.pk).status == RunAttribution.Status.OK
