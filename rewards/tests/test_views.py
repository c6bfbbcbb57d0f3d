"""The earnings page, the claim button behind it, and the contribution impact page: permissions and hostile input."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from datanets import services as datanet_services
from ledger import chain
from ledger.models import RewardClaim, RewardEpoch, RewardEpochEntry
from rewards.services import rewards_epoch_close, user_label

from .support import build_world, owed, paid_run, publish

pytestmark = pytest.mark.django_db

EARNINGS = reverse("rewards:earnings")
CLAIM = reverse("rewards:claim")


@pytest.fixture
def world():
    return build_world()


@pytest.fixture
def published(world, deployed_chain) -> RewardEpoch:
    paid_run(world)
    epoch = rewards_epoch_close().epoch
    publish(epoch)
    epoch.refresh_from_db()
    assert epoch.status == RewardEpoch.Status.CONFIRMED
    return epoch


def as_user(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def form_of(entry: RewardEpochEntry, **changes) -> dict[str, str]:
    return {
        "epoch": str(entry.epoch.number),
        "index": str(entry.index),
        "amount": str(entry.amount),
        "proof": json.dumps(entry.proof),
        **changes,
    }


def alice_entry(epoch: RewardEpoch, world) -> RewardEpochEntry:
    return epoch.entries.get(beneficiary=user_label(world.alice.pk))


def test_the_earnings_page_needs_a_login(client) -> None:
    response = client.get(EARNINGS)
    assert response.status_code == 302 and reverse("login") in response["Location"]


def test_it_shows_totals_per_run_per_datanet_and_a_chart(world) -> None:
    run = paid_run(world)
    paid_run(world)

    response = as_user(world.alice).get(EARNINGS)

    assert response.status_code == 200
    earnings = response.context["earnings"]
    assert earnings.total == earnings.accrued == owed(world.alice) > 0
    assert earnings.run_count == 2 and {r["id"] for r in earnings.runs} >= {run.id}
    assert earnings.runs[0]["public_id"] is None  # the asker's run page is not the contributor's to open
    assert [d["datanet__slug"] for d in earnings.datanets] == [world.datanet.slug]
    chart = response.context["chart"]
    assert len(chart["labels"]) == 1 and chart["cumulative"][-1] == pytest.approx(owed(world.alice) / 10**18)
    html = response.content.decode()
    assert 'id="earnings-chart"' in html and "chart.umd.min.js" in html and "earnings.js" in html
    assert f'href="{reverse("rewards:contribution_impact", args=[world.alice_contribution.pk])}"' in html


def test_a_contributor_without_a_wallet_is_told_the_balance_waits(world) -> None:
    paid_run(world)
    rewards_epoch_close()

    response = as_user(world.bob).get(EARNINGS)

    assert "Link a wallet to claim; your balance waits" in response.content.decode()
    assert response.context["earnings"].accrued == owed(world.bob) > 0
    assert "Claim to my wallet" not in response.content.decode()


@pytest.mark.chain
def test_claim_to_my_wallet_pays_once_and_a_second_claim_is_refused(world, published) -> None:
    entry = alice_entry(published, world)
    client = as_user(world.alice)
    page = client.get(EARNINGS)
    assert page.context["earnings"].claimable == int(entry.amount)
    assert "Claim to my wallet" in page.content.decode()

    response = client.post(CLAIM, form_of(entry))

    assert response.status_code == 302 and response["Location"] == EARNINGS
    assert chain.token_balance(world.alice_wallet) == owed(world.alice)
    after = client.get(EARNINGS)
    [balance] = after.context["earnings"].balances
    assert balance.state == "claimed" and balance.claim.tx_hash in after.content.decode()
    assert after.context["earnings"].claimed == int(entry.amount)

    again = client.post(CLAIM, form_of(entry))

    assert again.status_code == 409
    assert "already claimed" in again.content.decode()
    assert RewardClaim.objects.count() == 1
    assert chain.token_balance(world.alice_wallet) == owed(world.alice)


@pytest.mark.chain
def test_an_htmx_claim_answers_with_the_balances_fragment(world, published) -> None:
    response = as_user(world.alice).post(CLAIM, form_of(alice_entry(published, world)), HTTP_HX_REQUEST="true")

    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="balances"') and "<html" not in html
    assert "paid" in html and 'data-state="claimed"' in html
    polled = as_user(world.alice).get(EARNINGS, HTTP_HX_REQUEST="true")
    assert polled.status_code == 286  # nothing in flight: htmx stops polling


@pytest.mark.chain
@pytest.mark.parametrize("who", ["bob", "builder", "stranger"])
def test_someone_elses_balance_is_refused_and_nothing_changes(world, published, who) -> None:
    response = as_user(getattr(world, who)).post(CLAIM, form_of(alice_entry(published, world)))

    assert response.status_code == 403
    assert "belongs to someone else" in response.content.decode()
    assert not RewardClaim.objects.exists()
    assert chain.token_balance(world.alice_wallet) == 0


@pytest.mark.chain
@pytest.mark.parametrize(
    "changes, status, message",
    [
        ({"proof": json.dumps(["0x" + "ab" * 32])}, 400, "does not lead"),
        ({"amount": str(10**30)}, 400, "does not lead"),
        ({"amount": "1e5"}, 400, "whole number"),
        ({"amount": "-5"}, 400, "whole number"),
        ({"amount": "\uff11\uff12"}, 400, "whole number"),  # full-width digits
        ({"proof": "not json"}, 400, "JSON list"),
        ({"proof": json.dumps({"a": 1})}, 400, "JSON list"),
        ({"proof": json.dumps([1, 2])}, 400, "JSON list"),
        ({"proof": json.dumps(["0x" + "ab" * 32] * 400)}, 400, "at most"),
        ({"proof": json.dumps(["zz"])}, 400, "32-byte"),
        ({"proof": "x" * 30_000}, 400, "could not be read"),
        ({"index": "abc"}, 400, "could not be read"),
        ({"epoch": "0"}, 400, "could not be read"),
        ({"epoch": ""}, 400, "could not be read"),
        ({"epoch": "99"}, 404, ""),
        ({"index": "7"}, 404, ""),
    ],
)
def test_a_forged_or_malformed_claim_is_refused_and_nothing_changes(world, published, changes, status, message) -> None:
    response = as_user(world.alice).post(CLAIM, form_of(alice_entry(published, world), **changes))

    assert response.status_code == status
    assert message in response.content.decode()
    assert not RewardClaim.objects.exists()
    assert chain.token_balance(world.alice_wallet) == 0


@pytest.mark.chain
def test_a_claim_needs_the_csrf_token_and_a_login(world, published) -> None:
    entry = alice_entry(published, world)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(world.alice)

    assert strict.post(CLAIM, form_of(entry)).status_code == 403
    anonymous = Client().post(CLAIM, form_of(entry))
    assert anonymous.status_code == 302 and reverse("login") in anonymous["Location"]
    assert as_user(world.alice).get(CLAIM).status_code == 405
    assert not RewardClaim.objects.exists()
    assert chain.token_balance(world.alice_wallet) == 0


def test_a_claim_before_the_epoch_is_on_chain_is_refused_plainly(world) -> None:
    paid_run(world)
    epoch = rewards_epoch_close().epoch

    response = as_user(world.alice).post(CLAIM, form_of(alice_entry(epoch, world)))

    assert response.status_code == 409
    assert "not on chain yet" in response.content.decode()
    page = as_user(world.alice).get(EARNINGS)
    assert page.context["earnings"].publishing == owed(world.alice)
    assert page.context["busy"] is True


# The contribution impact page


def impact_url(contribution) -> str:
    return reverse("rewards:contribution_impact", args=[contribution.pk])


def test_the_impact_page_lists_versions_runs_and_rewards(world) -> None:
    run = paid_run(world)

    response = as_user(world.alice).get(impact_url(world.alice_contribution))

    assert response.status_code == 200
    impact = response.context["impact"]
    assert [v["version"] for v in impact.versions] == [world.version]
    assert impact.versions[0]["snapshots"] == [f"{world.datanet.slug} #{world.snapshot.number}"]
    assert [r["id"] for r in impact.runs] == [run.id] and impact.run_count == 1
    assert impact.total == owed(world.alice)
    assert impact.runs[0]["public_id"] is None


def test_an_unpublished_version_is_counted_but_not_named_to_others(world) -> None:
    world.version.published = False
    world.version.save(update_fields=["published"])

    seen_by_alice = as_user(world.alice).get(impact_url(world.alice_contribution)).context["impact"]
    seen_by_builder = as_user(world.builder).get(impact_url(world.alice_contribution)).context["impact"]

    assert seen_by_alice.versions == [] and seen_by_alice.hidden_versions == 1
    assert [v["version"] for v in seen_by_builder.versions] == [world.version]


def test_the_asker_may_open_their_run_from_the_impact_page(world) -> None:
    run = paid_run(world)

    response = as_user(world.asker).get(impact_url(world.alice_contribution))

    assert response.context["impact"].runs[0]["public_id"] == run.public_id
    assert reverse("inference:run_detail", args=[run.public_id]) in response.content.decode()


@pytest.mark.parametrize(
    "viewer, public_accepted, private, pending",
    [
        ("anonymous", 200, 404, 404),
        ("stranger", 200, 404, 404),
        ("alice", 200, 200, 200),
        ("owner", 200, 200, 200),
        ("curator", 200, 200, 200),
        ("staff", 200, 200, 200),
    ],
)
def test_who_may_see_a_contributions_impact(viewer, public_accepted, private, pending) -> None:
    public = build_world(visibility="public")
    hidden = build_world(visibility="private")
    waiting = datanet_services.contribution_submit_pasted(
        datanet=public.datanet,
        contributor=public.alice,
        text=json.dumps({"prompt": "q", "response": "a pending one"}) + "\n",
        licence="CC-BY-4.0",
    )

    def get(world, contribution) -> int:
        user = getattr(world, viewer, None)
        client = Client() if user is None else as_user(user)
        return client.get(impact_url(contribution)).status_code

    assert get(public, public.alice_contribution) == public_accepted
    assert get(hidden, hidden.alice_contribution) == private
    assert get(public, waiting) == pending
    assert Client().get(reverse("rewards:contribution_impact", args=[999_999])).status_code == 404


def test_the_contribution_page_links_to_its_impact(world) -> None:
    response = as_user(world.alice).get(reverse("datanets:contribution", args=[world.alice_contribution.pk]))

    assert impact_url(world.alice_contribution) in response.content.decode()


def test_rewards_read_in_one_unit_on_the_answer_and_on_the_earnings_page_with_the_raw_amount_on_hover(world) -> None:
    from django.contrib.humanize.templatetags.humanize import intcomma
    from django.test import RequestFactory

    from rewards.selectors import tokens
    from rewards.views import run_rewards_section

    run = paid_run(world)
    alice = run.accruals.get(user=world.alice).amount
    shown = tokens(alice)
    assert shown.endswith(" OLTR") and not shown.startswith(str(alice))

    request = RequestFactory().get("/")
    request.user = world.asker
    answer = run_rewards_section(request, run)  # what the answer's ancestry panel shows under it
    assert f'title="{intcomma(alice)} smallest units">{shown}</td>' in answer

    earnings = as_user(world.alice).get(EARNINGS).content.decode()
    total = owed(world.alice)
    assert f'<span class="amount" title="{intcomma(total)} smallest units">{tokens(total)}</span>' in earnings
