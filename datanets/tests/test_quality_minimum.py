"""The governed quality minimum (ProtocolParameters.minQualityScore) at the next snapshot: accepted contributions
scoring below it stay out, the snapshot records the minimum and how many it left out and its page says so;
earlier snapshots never change. Real checks score the contributions; the minimum is changed by a proposal executed
on anvil."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from datanets import checks, services
from datanets.models import Contribution, Snapshot
from ledger.tests.gov_flow import enact, parameters_call, short_governance, voter

from .factories import DatanetFactory, submit, texts

pytestmark = pytest.mark.django_db

CLEAN = (
    "the quick brown fox jumps over the lazy dog while the farmer watches from the porch",
    "the children laugh in the garden near the old oak tree by the river every summer",
)
# a secret, an email, a record too short and a repeated one: the checks score it well below 70
POOR = (
    "contact me at alice@example.com for the files and the keys",
    "my key is AKIAIOSFODNN7EXAMPLE do not share it with anyone",
    "hi",
    "hi",
)


def checked_and_accepted(datanet: Any, lines: tuple[str, ...]) -> Contribution:
    contribution = submit(datanet, content=texts(*lines))
    checks.contribution_check(contribution_id=contribution.pk)
    return services.contribution_accept(curator=datanet.owner, contribution=contribution)


@pytest.fixture
def datanet() -> Any:
    return DatanetFactory(language="en")


@pytest.fixture
def scored(datanet) -> tuple[Contribution, Contribution]:
    clean, poor = checked_and_accepted(datanet, CLEAN), checked_and_accepted(datanet, POOR)
    clean.refresh_from_db()
    poor.refresh_from_db()
    assert clean.quality_score == 100 and poor.quality_score < 70
    return clean, poor


def snapshot_page(datanet: Any, snapshot: Snapshot) -> str:
    client = Client()
    client.force_login(datanet.owner)
    response = client.get(reverse("datanets:snapshot", args=[datanet.slug, snapshot.number]))
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.chain
def test_an_executed_quality_minimum_leaves_the_low_scoring_contribution_out_of_the_next_snapshot_only(
    chain_settings, settings, anvil, datanet, scored
) -> None:
    # given: governance on chain, no minimum yet, and a snapshot holding both contributions
    clean, poor = scored
    gov = short_governance(settings)
    key = voter(gov, anvil)
    first = services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    assert (first.record_count, first.contribution_count, first.min_quality_score) == (5, 2, 0)
    assert first.rules_source == "chain" and first.below_quality_count == 0

    # when: a proposal setting the minimum to 70 is executed
    enact(anvil, key, gov.parameters_address, parameters_call(gov, "setMinQualityScore", 70), "Quality 70")
    second = services.snapshot_freeze(datanet=datanet, user=datanet.owner)

    # then: the next snapshot leaves the poor contribution out, and says so
    assert (second.record_count, second.contribution_count) == (2, 1)
    assert (second.min_quality_score, second.below_quality_count, second.rules_source) == (70, 1, "chain")
    assert set(second.leaves.values_list("contribution_id", flat=True)) == {clean.pk}
    assert second.removed_count == 3
    page = snapshot_page(datanet, second)
    assert 'data-quality-minimum="70"' in page and "left out for scoring below it" in page
    assert services.snapshot_rebuild_root(snapshot=second) == second.merkle_root
    # and the earlier snapshot is what it was
    first.refresh_from_db()
    assert first.record_count == 5 and first.leaves.filter(contribution=poor).count() == 3
    assert services.snapshot_rebuild_root(snapshot=first) == first.merkle_root
    assert "data-quality-minimum" not in snapshot_page(datanet, first)


def test_without_governance_contracts_the_configured_minimum_applies_and_is_recorded_as_such(
    settings, datanet, scored
) -> None:
    settings.GOVERNANCE_MIN_QUALITY_SCORE = 70

    snapshot = services.snapshot_freeze(datanet=datanet, user=datanet.owner)

    assert (snapshot.min_quality_score, snapshot.below_quality_count, snapshot.rules_source) == (70, 1, "settings")
    assert snapshot.record_count == 2
    assert "no governance contracts on this chain yet" in snapshot_page(datanet, snapshot)


def test_a_freeze_whose_every_contribution_is_below_the_minimum_is_refused_in_words(settings, datanet) -> None:
    poor = checked_and_accepted(datanet, POOR)
    settings.GOVERNANCE_MIN_QUALITY_SCORE = 100

    with pytest.raises(ValidationError, match="below the minimum quality score of 100 that governance set"):
        services.snapshot_freeze(datanet=datanet, user=datanet.owner)

    assert not Snapshot.objects.exists()
    assert poor.status == Contribution.Status.ACCEPTED


def test_the_freeze_page_says_how_many_contributions_the_minimum_left_out(settings, datanet, scored) -> None:
    settings.GOVERNANCE_MIN_QUALITY_SCORE = 70
    client = Client()
    client.force_login(datanet.owner)

    response = client.post(reverse("datanets:snapshot_freeze", args=[datanet.slug]), follow=True)

    page = response.content.decode()
    assert response.status_code == 200
    assert "1 accepted contribution scoring below the minimum quality score of 70 was left out" in page
