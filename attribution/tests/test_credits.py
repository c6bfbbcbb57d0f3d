"""Panel truth: the panel speaks of shares of the credit (not of the answer), shows the top records then "and K more
(x% of the credit)", the reward split in the earnings page's units, the verdict in plain words; the full credit list
is paged by the API, open to anyone with the run's link, with records of Datanets the caller may not view counted
but not identified.

The attribution rows are written directly (the scoring that makes them is tested in test_answer_attribution.py);
records, Datanets, snapshots and visibility are real, through the Datanet services.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from attribution.models import RecordAttribution, RunAttribution
from attribution.selectors import TOP_RECORDS
from datanets.models import Record
from modelfactory.tests.factories import UserFactory, default_base, frozen_snapshot, instructions, stand_in_version
from rewards.models import RewardAccrual

PUBLIC_RECORDS = 8
PRIVATE_RECORDS = 5
FEE = 10**15


@dataclass
class Credited:
    run: Any
    attribution: RunAttribution
    shares: list[Fraction]
    private_datanet: Any
    builder: Any


def _shares(n: int) -> list[Fraction]:
    """n exact shares, largest first, summing to 1."""
    weights = list(range(n, 0, -1))
    return [Fraction(w, sum(weights)) for w in weights]


def credited_run(*, verdict: str = "", confidence: float | None = None) -> Credited:
    """A finished run whose attribution credits 13 records: 8 of a public Datanet and 5 of a private one, the
    private ones interleaved in the ranking."""
    from inference.models import InferenceRun

    builder, stranger = UserFactory(username="builder"), UserFactory(username="stranger")
    base = default_base()
    public = frozen_snapshot(owner=builder, records=instructions(PUBLIC_RECORDS), name="Open facts")
    private = frozen_snapshot(
        owner=stranger, records=instructions(PRIVATE_RECORDS, topic="Mirvex"), name="Hidden facts", visibility="private"
    )
    records = list(Record.objects.filter(datanet=public.datanet).order_by("position"))
    hidden = list(Record.objects.filter(datanet=private.datanet).order_by("position"))
    ranked = [r for pair in zip(records, hidden, strict=False) for r in pair] + records[len(hidden) :]
    version = stand_in_version(owner=builder, base_model=base, name="credited")
    run = InferenceRun.objects.create(
        user=builder,
        version=version,
        base_model=base,
        kind=InferenceRun.Kind.CHAT,
        messages=[{"role": "user", "content": "What is the secret code of Zorblat?"}],
        answer="The code of Zorblat is 7421.",
        finish_reason="stop",
        status=InferenceRun.Status.SUCCEEDED,
        finished_at=timezone.now(),
    )
    shares = _shares(len(ranked))
    attribution = RunAttribution.objects.create(
        run=run,
        status=RunAttribution.Status.OK,
        policy_version=1,
        reward_policy_version=1,
        signal_shares={"gradient": "1/1"},
        effective_weights={"gradient": 1.0},
        contributors=[[builder.pk, "8/13"], [stranger.pk, "5/13"]],
        datanets=[[public.datanet_id, "8/13"], [private.datanet_id, "5/13"]],
        explanation="Credited by gradient influence.",
        verdict=verdict,
        confidence=confidence,
        fee=FEE,
        finished_at=timezone.now(),
    )
    RecordAttribution.objects.bulk_create(
        RecordAttribution(
            run_attribution=attribution,
            record=record,
            contribution_id=record.contribution_id,
            rank=rank,
            share=f"{share.numerator}/{share.denominator}",
            share_float=float(share),
            by_signal={"gradient": f"{share.numerator}/{share.denominator}"},
        )
        for rank, (record, share) in enumerate(zip(ranked, shares, strict=True), start=1)
    )
    parts = {"builder": (builder, FEE // 5, "1/5"), "pool": (None, FEE * 4 // 5, "4/5")}
    RewardAccrual.objects.bulk_create(
        [
            RewardAccrual(run=run, recipient_kind=kind, user=user, amount=amount, share=share, policy_version=1)
            for kind, (user, amount, share) in parts.items()
        ]
    )
    return Credited(run, attribution, shares, private.datanet, builder)


def _panel(run: Any, client: Client | None = None) -> str:
    response = (client or Client()).get(reverse("attribution:run_panel", args=[run.public_id]))
    assert response.status_code == 286
    return response.content.decode()


def test_the_panel_speaks_of_the_credit_and_counts_the_records_it_does_not_list(db: None) -> None:
    # given a run whose attribution credits more records than the panel lists
    credited = credited_run()

    # when anyone with the link opens the panel
    html = _panel(credited.run)

    # then shares are shares of the credit, and the rest is counted with its part of the credit
    assert "of the credit" in html and "of the answer" not in html
    more = sum(credited.shares[TOP_RECORDS:], Fraction(0))
    assert f"and {len(credited.shares) - TOP_RECORDS} more ({float(more) * 100:.1f}% of the credit)" in html
    assert reverse("attribution_api:run_credits", args=[credited.run.public_id]) in html
    assert html.count("a record of a private Datanet") == PRIVATE_RECORDS
    assert "Hidden facts" not in html
    # the reward split in the earnings page's units, the exact amount kept for whoever checks it
    assert "0.0008 OLTR" in html and "0.0002 OLTR" in html and "0.001 OLTR" in html
    assert f'data-reward-total="{FEE}"' in html


def test_an_unsupported_answer_says_plainly_that_no_record_supports_it(db: None) -> None:
    credited = credited_run(verdict="unsupported", confidence=0.87)

    html = _panel(credited.run)

    assert 'data-verdict="unsupported"' in html
    assert "no training record supports this answer" in html
    assert "Confidence 87%" in html


def test_an_older_run_without_a_verdict_shows_none(db: None) -> None:
    html = _panel(credited_run().run)

    assert "data-verdict" not in html and "Confidence" not in html
    assert 'data-reliability="not_measured"' in html and "not measured" in html


def test_the_api_pages_every_credited_record_and_hides_what_the_caller_may_not_see(db: None) -> None:
    credited = credited_run()
    url = reverse("attribution_api:run_credits", args=[credited.run.public_id])

    # an anonymous caller with the run's link pages through all of it
    pages, next_url = [], f"{url}?page_size=5"
    while next_url:
        body = Client().get(next_url).json()
        pages.append(body)
        next_url = body["next"]
    rows = [row for page in pages for row in page["results"]]

    assert len(pages) == 3 and pages[0]["count"] == PUBLIC_RECORDS + PRIVATE_RECORDS
    assert [r["rank"] for r in rows] == list(range(1, PUBLIC_RECORDS + PRIVATE_RECORDS + 1))
    assert sum(Fraction(r["share"]) for r in rows) == 1  # counted: the shares are all there
    hidden = [r for r in rows if not r["visible"]]
    assert len(hidden) == PRIVATE_RECORDS
    assert all(r["record"] is None and r["datanet"] is None and r["record_hash"] is None for r in hidden)
    assert {r["datanet"] for r in rows if r["visible"]} == {"open-facts"}

    # a member of the private Datanet sees its records
    member = UserFactory()
    credited.private_datanet.members.add(member)
    client = Client()
    client.force_login(member)
    seen = client.get(f"{url}?page_size=50").json()["results"]
    assert all(r["visible"] for r in seen) and {r["datanet"] for r in seen} == {"open-facts", "hidden-facts"}


def test_the_api_answers_404_without_a_run_or_a_credited_attribution(db: None) -> None:
    import uuid

    assert Client().get(reverse("attribution_api:run_credits", args=[uuid.uuid4()])).status_code == 404
    credited = credited_run()
    RunAttribution.objects.filter(pk=credited.attribution.pk).update(status="no_index")
    response = Client().get(reverse("attribution_api:run_credits", args=[credited.run.public_id]))
    assert response.status_code == 404 and response.json()["detail"]


@pytest.mark.browser
def test_the_run_page_shows_the_panel_with_the_credit_and_the_rest(page: Any) -> None:
    from openledger_web.browser import screenshot

    credited = credited_run(verdict="partly_supported", confidence=0.64)

    page.goto(reverse("inference:run_detail", args=[credited.run.public_id]))

    panel = page.locator('[data-attribution-state="ok"]')
    panel.wait_for()
    assert "Partly supported" in panel.locator("[data-verdict]").inner_text()
    assert "and 3 more" in panel.locator("[data-more-records]").inner_text()
    screenshot(page, "attribution_panel_credit")
