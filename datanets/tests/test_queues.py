"""Queues people can find (issue 15, item 2): every owner and curator, not only global curators, gets a link to
their review queue with its pending count on the Datanet page, in the header and on their dashboard (My
contributions), in a constant number of queries."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from playwright.sync_api import Page, expect

from accounts.tests.factories import UserFactory
from datanets import services
from datanets.models import Datanet

from .factories import DatanetFactory, submit, texts


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _waiting(datanet: Datanet, count: int) -> None:
    for n in range(count):
        submit(datanet, UserFactory(), texts(f"pending record {n} of {datanet.slug} with a few words"))


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["owner", "curator"])
def test_owners_and_curators_see_their_queue_with_its_count_on_the_datanet_page_and_in_the_header(role: str) -> None:
    # given
    datanet = DatanetFactory(name="Recipes", slug="recipes")
    person = datanet.owner
    if role == "curator":
        person = UserFactory(username="cora")
        services.datanet_add_curator(datanet=datanet, user=datanet.owner, curator=person)
    _waiting(datanet, 2)
    _waiting(DatanetFactory(), 3)  # someone else's queue: not counted

    # when
    page = _client(person).get(reverse("datanets:detail", args=["recipes"])).content.decode()

    # then
    review = re.search(r'<a href="([^"]+)"[^>]*data-review-queue>Review queue <span[^>]*>(\d+) pending', page)
    assert review and review.groups() == ("/datanets/curation/?datanet=recipes", "2")
    nav = re.search(r"data-nav-curation>Curation <span[^>]*data-pending-count>(\d+)</span>", page)
    assert nav and nav.group(1) == "2"


@pytest.mark.django_db
def test_a_contributor_who_curates_nothing_gets_no_queue_link() -> None:
    datanet = DatanetFactory(slug="recipes")
    _waiting(datanet, 1)

    page = _client(UserFactory()).get(reverse("datanets:detail", args=["recipes"])).content.decode()

    assert "data-review-queue" not in page and "data-nav-curation" not in page


@pytest.mark.django_db
def test_a_datanets_queue_shows_its_own_contributions_and_refuses_one_not_curated() -> None:
    datanet, other = DatanetFactory(slug="recipes"), DatanetFactory(slug="poems")
    _waiting(datanet, 2)
    _waiting(other, 1)
    client = _client(datanet.owner)

    page = client.get(reverse("datanets:curation"), {"datanet": "recipes"})

    shown = re.findall(r'class="queue-item" data-contribution="(\d+)"', page.content.decode())
    assert sorted(map(int, shown)) == sorted(datanet.contributions.values_list("pk", flat=True))
    assert client.get(reverse("datanets:curation"), {"datanet": "poems"}).status_code == 404


@pytest.mark.django_db
def test_the_dashboard_lists_every_queue_with_its_count_in_a_constant_number_of_queries(
    django_assert_max_num_queries: Any,
) -> None:
    owner = UserFactory()
    client = _client(owner)
    counts = []
    for size in (1, 5):
        for _ in range(size):
            _waiting(DatanetFactory(owner=owner), 2)
        with django_assert_max_num_queries(8) as captured:
            page = client.get(reverse("datanets:mine")).content.decode()
        counts.append(len(captured.captured_queries))
        assert len(re.findall(r"data-queue=", page)) == (1 if size == 1 else 6)
        assert re.findall(r"data-pending-count>(\d+) pending", page)[0] == "2"
    assert counts[0] == counts[1]


@pytest.mark.browser
def test_an_owner_reaches_the_queue_from_the_datanet_page(page: Page, login_as: Callable[[Page, Any], None]) -> None:
    # given an owner (no global curator) whose Datanet has a contribution waiting
    owner = UserFactory(username="olivia")
    datanet = DatanetFactory(owner=owner, name="Kitchen recipes", slug="kitchen-recipes")
    pending = submit(datanet, UserFactory(username="bea"), texts("Boil the pasta in salted water for ten minutes."))
    login_as(page, owner)

    # when they open the Datanet and follow its review queue
    page.goto("/datanets/kitchen-recipes/")
    expect(page.locator("[data-nav-curation] [data-pending-count]")).to_have_text("1")
    link = page.get_by_role("button", name=re.compile("Review queue"))  # a link styled as a button
    expect(link).to_contain_text("1 pending")
    link.click()

    # then the queue of that Datanet shows the contribution, ready to decide
    expect(page).to_have_url(re.compile(r"/datanets/curation/\?datanet=kitchen-recipes$"))
    expect(page.get_by_role("heading", name=re.compile("Curation queue"))).to_contain_text("Kitchen recipes")
    expect(page.locator(f'[data-contribution="{pending.pk}"]')).to_be_visible()
    page.locator(f'[data-contribution="{pending.pk}"]').get_by_role("button", name="Accept").click()
    expect(page.locator("[data-queue-empty]")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/datanets/curation/\?datanet=kitchen-recipes$"))


@pytest.mark.django_db
def test_a_refused_decision_keeps_the_datanets_queue_and_the_next_one_returns_to_it() -> None:
    datanet = DatanetFactory(slug="recipes")
    _waiting(datanet, 1)
    pending = datanet.contributions.get()
    client = _client(datanet.owner)
    decide = reverse("datanets:curation_decide") + "?datanet=recipes"

    refused = client.post(decide, {"contribution": pending.pk, "action": "reject", "next": "/datanets/curation/"})
    page = refused.content.decode()
    assert refused.status_code == 400 and f"of {datanet.name}" in page  # still that Datanet's queue
    assert f'action="{decide}"' in page and 'name="next" value="/datanets/curation/?datanet=recipes"' in page

    accepted = client.post(
        decide, {"contribution": pending.pk, "action": "accept", "next": "/datanets/curation/?datanet=recipes"}
    )
    assert accepted.status_code == 302 and accepted["Location"] == "/datanets/curation/?datanet=recipes"
