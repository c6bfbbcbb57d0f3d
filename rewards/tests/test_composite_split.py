"""The fee of a composite's answer is split exactly: the builders' part between the components' owners by their
shares, the rounding dust to the protocol pool, the accruals summing to the fee to the unit (components without an
attribution index here, so nothing needs the model: the contributors' part goes to the pool)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from attribution import services as attribution_services
from attribution.models import RunAttribution
from inference import composites
from inference.models import InferenceRun
from inference.tests.runs_support import served_version
from modelfactory.tests.factories import UserFactory, default_base
from rewards.models import RewardAccrual
from rewards.split import BASIS_POINTS

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("fee", [10**15 + 7, 1, 0, 999_999_999_999_999_999])
def test_a_composite_answers_fee_is_split_between_its_builders_to_the_unit(settings, fee) -> None:
    settings.INFERENCE_RUN_FEE = fee
    base = default_base()
    ada, bo, asker = UserFactory(), UserFactory(), UserFactory()
    versions = [
        served_version(owner=ada, base_model=base, adapter=None, name="one", adapter_sha256="a1" * 32),
        served_version(owner=bo, base_model=base, adapter=None, name="two", adapter_sha256="b2" * 32),
        served_version(owner=bo, base_model=base, adapter=None, name="three", adapter_sha256="c3" * 32),
    ]
    spec = composites.composition_spec(model=f"mix:mv-{versions[0].pk}=1,mv-{versions[1].pk}=1,mv-{versions[2].pk}=1")
    clean = composites.composition_clean(user=asker, spec=spec)
    run = InferenceRun.objects.create(
        user=asker, composition=clean.document, base_model=base, kind=InferenceRun.Kind.CHAT,
        messages=[{"role": "user", "content": "Hi"}], answer="Hello there", finish_reason="stop",
        status=InferenceRun.Status.SUCCEEDED, finished_at=timezone.now(),
    )  # fmt: skip

    attribution = attribution_services.run_attribute(run_id=run.pk)

    assert attribution.status == RunAttribution.Status.NO_INDEX
    assert "None of this composite's model versions" in attribution.explanation
    accruals = list(RewardAccrual.objects.filter(run=run))
    assert sum(int(a.amount) for a in accruals) == fee  # to the unit
    part = fee * accruals[0].builder_bps // BASIS_POINTS if accruals else 0
    builders = {a.user_id: int(a.amount) for a in accruals if a.recipient_kind == RewardAccrual.Kind.BUILDER}
    # thirds: ada one component, bo two
    expected = {ada.pk: part // 3, bo.pk: part * 2 // 3}
    assert builders == {user: amount for user, amount in expected.items() if amount > 0}
    pool = [int(a.amount) for a in accruals if a.recipient_kind == RewardAccrual.Kind.POOL]
    assert sum(pool) == fee - sum(builders.values())
    assert not [a for a in accruals if a.recipient_kind == RewardAccrual.Kind.CONTRIBUTOR]
