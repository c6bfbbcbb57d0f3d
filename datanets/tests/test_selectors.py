from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser

from accounts.tests.factories import UserFactory
from datanets import selectors, services

from .factories import DatanetFactory, accepted, submit, texts

pytestmark = pytest.mark.django_db


def populate(curator, size: int) -> None:  # type: ignore[no-untyped-def]
    for i in range(size):
        datanet = DatanetFactory(owner=curator, tags=["science", f"t{i}"])
        contributor = UserFactory()
        accepted(datanet, contributor, texts(*(f"record {i} {j} words" for j in range(size))))
        submit(datanet, contributor, texts(f"pending {i} here"))
        rejected = submit(datanet, UserFactory(), texts(f"rejected {i} here"))
        services.contribution_reject(curator=curator, contribution=rejected, reason="no")
        services.snapshot_freeze(datanet=datanet, user=curator)


@pytest.mark.parametrize("size", [2, 6])
def test_list_and_queue_selectors_run_a_constant_number_of_queries(size: int, django_assert_max_num_queries) -> None:
    curator = UserFactory()
    populate(curator, size)
    with django_assert_max_num_queries(1):
        rows = list(selectors.datanet_list(user=curator, sort="records"))
        assert all(r.record_count == size and r.contributor_count == 1 for r in rows) and len(rows) == size
        assert all(r.owner.username for r in rows)
    with django_assert_max_num_queries(1):
        queue = list(selectors.contributions_for_curator(user=curator))
        assert len(queue) == size and all(c.datanet.name and c.contributor.username for c in queue)
    with django_assert_max_num_queries(1):
        board = selectors.leaderboard()
    assert len(board) == 2 * size
    datanet = rows[0]
    with django_assert_max_num_queries(2):
        stats = selectors.datanet_stats(datanet=datanet)
    assert stats == {"records": size, "words": size * 4, "contributors": 1, "pending": 1, "accepted": 1, "rejected": 1,
                     "withdrawn": 0}  # fmt: skip
    with django_assert_max_num_queries(1):
        mine = list(selectors.contributions_of(user=queue[0].contributor))
        assert all(c.datanet.name for c in mine)


def test_visibility_owner_curator_member_other_and_anonymous() -> None:
    owner, curator, member, other = UserFactory(), UserFactory(), UserFactory(), UserFactory()
    public = DatanetFactory(owner=owner)
    private = DatanetFactory(owner=owner, visibility="private")
    services.datanet_add_curator(datanet=private, user=owner, curator=curator)
    services.datanet_add_member(datanet=private, user=owner, member=member)
    for user in (owner, curator, member, UserFactory(is_global_curator=True)):
        assert set(selectors.datanets_visible_to(user=user)) == {public, private}
    for user in (other, AnonymousUser()):
        assert set(selectors.datanets_visible_to(user=user)) == {public}
        assert not selectors.user_can_contribute(user=user, datanet=private)
    assert selectors.user_can_contribute(user=other, datanet=public)
    assert not selectors.user_can_contribute(user=AnonymousUser(), datanet=public)
    assert selectors.user_can_curate(user=curator, datanet=private)
    assert not selectors.user_can_curate(user=member, datanet=private)


def test_search_filters_and_sorting() -> None:
    owner = UserFactory()
    med = DatanetFactory(owner=owner, name="Medical answers", tags=["health"], domain="medicine")
    law = DatanetFactory(owner=owner, name="Contracts", summary="legal clauses", record_type="instruction")
    accepted(law, content=b'{"prompt": "p1", "response": "r1"}\n{"prompt": "p2", "response": "r2"}\n')
    assert list(selectors.datanet_list(user=owner, search="health")) == [med]
    assert list(selectors.datanet_list(user=owner, search="legal")) == [law]
    assert list(selectors.datanet_list(user=owner, domain="medicine")) == [med]
    assert list(selectors.datanet_list(user=owner, record_type="instruction")) == [law]
    assert selectors.datanet_list(user=owner, sort="records").first() == law


def test_leaderboard_ranks_by_accepted_records_with_the_acceptance_rate() -> None:
    datanet = DatanetFactory()
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    accepted(datanet, alice, texts("a1 words here", "a2 words here", "a3 words here"))
    rejected = submit(datanet, alice, texts("a4 words here"))
    services.contribution_reject(curator=datanet.owner, contribution=rejected, reason="dup")
    accepted(datanet, bob, texts("b1 words here"))
    board = selectors.leaderboard(datanet=datanet)
    assert [(r["username"], r["accepted_records"], r["acceptance_rate"]) for r in board] == [
        ("alice", 3, 0.5),
        ("bob", 1, 1.0),
    ]


def test_my_contributions_and_the_snapshots_that_hold_them() -> None:
    datanet = DatanetFactory()
    alice = UserFactory()
    contribution = accepted(datanet, alice)
    snapshot = services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    assert list(selectors.contributions_of(user=alice)) == [contribution]
    assert list(selectors.contribution_snapshots(contribution=contribution)) == [snapshot]
    assert selectors.contributions_per_day(datanet=datanet)[0][1] == 1
