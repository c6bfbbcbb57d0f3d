"""Reverse lineage (rewards/lineage.py): from a record, a contribution or a contributor to the snapshots, versions
(through continuations and merges, with weights), answers and rewards it reached; the page and the API, who sees
what, hostile input, and a constant number of queries whatever the number of answers."""

from __future__ import annotations

from fractions import Fraction

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from datanets import services as datanet_services
from modelfactory.models import ModelVersionParent
from modelfactory.tests.factories import stand_in_version
from rewards import lineage

from .lineage_support import attributed_runs
from .support import _pasted, build_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    return build_world()


def as_user(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def api_as(user) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def child_of(world, parents: list[tuple[object, str, float]], *, name: str, published: bool = True):
    version = stand_in_version(owner=world.builder, base_model=world.version.base_model, name=name)
    for parent, relation, weight in parents:
        ModelVersionParent.objects.create(child=version, parent=parent, relation=relation, weight=weight)
    if published:
        version.published = True
        version.save(update_fields=["published"])
    return version


def test_reach_follows_snapshots_continuations_and_merges_with_weights(world) -> None:
    # given: the world's version trained on the snapshot (alice holds 2 of its 3 records), a version trained on
    # nothing of hers, a merge of both (a quarter from the first), and a continuation of the merge
    unrelated = stand_in_version(owner=world.builder, base_model=world.version.base_model, name="unrelated")
    merged = child_of(
        world,
        [(world.version, "merged_from", 0.25), (unrelated, "merged_from", 0.75)],
        name="merged",
    )
    continued = child_of(world, [(merged, "continued_from", 1.0)], name="continued")

    # when
    reached = lineage.reach(lineage.scope_of_contribution(world.alice_contribution))
    html = as_user(world.alice).get(reverse("rewards:contribution_lineage", args=[world.alice_contribution.pk]))

    # then
    assert [(s.id, s.held, s.record_count) for s in reached.snapshots] == [(world.snapshot.pk, 2, 3)]
    assert set(reached.versions) == {world.version.pk, merged.pk, continued.pk}
    assert reached.versions[world.version.pk].share == Fraction(2, 3)
    assert reached.versions[world.version.pk].weight == pytest.approx(2 / 3)
    assert reached.versions[merged.pk].share == 0
    assert reached.versions[merged.pk].weight == pytest.approx(0.25 * 2 / 3)
    assert reached.versions[continued.pk].weight == pytest.approx(0.25 * 2 / 3)
    [route] = reached.versions[continued.pk].routes
    assert (route.kind, route.parent_id, route.relation) == ("parent", merged.pk, "continued_from")
    # the page says each route in words
    text = html.content.decode()
    assert f"merged from version #{world.version.pk} (merge weight 0.250): adds 0.1667" in text
    assert f"continued training from version #{merged.pk}: adds 0.1667" in text
    assert "trained on it (2 of the 3 records it trained on)" in text


def test_reach_of_records_is_what_revocation_reuses(world) -> None:
    # given: two answers crediting alice's first record, one crediting bob's record
    first = world.alice_contribution.records.order_by("position").first()
    bobs = world.bob_contribution.records.get()
    attributed_runs(world, [first], count=2)
    attributed_runs(world, [bobs], count=1)

    # when
    reached = lineage.reach_of_records(world.alice_contribution.records.filter(pk=first.pk))

    # then: its snapshot, the version, the two answers, and the contribution's two accruals on them
    assert [s.held for s in reached.snapshots] == [1]
    assert set(reached.versions) == {world.version.pk}
    assert reached.answers().count() == 2
    assert reached.accruals().count() == 2
    assert {a.contribution_id for a in reached.accruals()} == {world.alice_contribution.pk}


def test_the_contributor_sees_their_own_lineage_on_the_page(world) -> None:
    runs = attributed_runs(world, list(world.alice_contribution.records.all()), count=3)

    response = as_user(world.alice).get(reverse("rewards:contribution_lineage", args=[world.alice_contribution.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    page = response.context["page"]
    assert page.answer_count == 3 and page.accrual_count == 3 and page.earned > 0
    assert f'data-snapshot="{world.snapshot.pk}"' in html and f'data-version="{world.version.pk}"' in html
    assert all(f'data-answer="{run.pk}"' in html for run in runs)
    assert "run_detail" not in html and str(runs[0].public_id) not in html  # the asker's question is not hers
    assert "The weight says how much" in html


def test_the_asker_can_open_their_own_answers_from_it(world) -> None:
    [run] = attributed_runs(world, [world.alice_contribution.records.first()], count=1)

    response = as_user(world.asker).get(reverse("rewards:contribution_lineage", args=[world.alice_contribution.pk]))

    assert response.status_code == 200
    assert reverse("inference:run_detail", args=[run.public_id]) in response.content.decode()


def test_another_user_sees_only_what_is_public(world) -> None:
    # given: an unpublished version of the builder's, trained on the snapshot, and a pending contribution of alice's
    hidden = stand_in_version(owner=world.builder, base_model=world.version.base_model, name="draft")
    hidden.snapshots.add(world.snapshot)
    pending = _pasted(world.datanet, world.alice, ["a pending line"], accept_by=None)
    attributed_runs(world, [world.alice_contribution.records.first()], count=2)
    url = reverse("rewards:contribution_lineage", args=[world.alice_contribution.pk])

    # when / then: the stranger sees the public version and counts the draft
    response = as_user(world.stranger).get(url)
    page = response.context["page"]
    assert [v.pk for v, _ in page.versions] == [world.version.pk] and page.hidden_versions == 1
    assert "1 more version that you cannot see (unpublished) also carries it" in response.content.decode()
    assert "draft" not in response.content.decode()
    assert page.answer_count == 2
    # the builder sees their draft
    builder_page = as_user(world.builder).get(url).context["page"]
    assert {v.pk for v, _ in builder_page.versions} == {world.version.pk, hidden.pk}
    # a pending contribution is not the stranger's to see, nor anonymous visitors'
    pending_url = reverse("rewards:contribution_lineage", args=[pending.pk])
    assert as_user(world.stranger).get(pending_url).status_code == 404
    assert Client().get(pending_url).status_code == 404
    assert as_user(world.alice).get(pending_url).status_code == 200


def test_a_contributor_page_shows_others_only_public_datanets() -> None:
    # given: alice contributes to a private Datanet (the world) and to a public one
    world = build_world(visibility="private")
    public = datanet_services.datanet_create(
        owner=world.owner, name="Open facts", record_type="instruction", licence="CC-BY-4.0", visibility="public"
    )
    _pasted(public, world.alice, ["the sea is wide"], accept_by=world.owner)
    datanet_services.snapshot_freeze(datanet=public, user=world.owner)
    url = reverse("rewards:contributor_lineage", args=[world.alice.username])

    # when
    own = as_user(world.alice).get(url).context["page"]
    others = as_user(world.stranger).get(url).context["page"]
    anonymous = Client().get(url)

    # then
    assert {s.datanet_slug for s in own.snapshots} == {world.datanet.slug, public.slug}
    assert {s.datanet_slug for s in others.snapshots} == {public.slug} and others.subject.public_only
    assert anonymous.status_code == 200 and world.datanet.name not in anonymous.content.decode()
    assert as_user(world.stranger).get(reverse("rewards:contributor_lineage", args=["nobody-here"])).status_code == 404


def test_an_excluded_record_is_shown_only_to_its_contributor_and_curators(world) -> None:
    contribution = _pasted(world.datanet, world.alice, ["kept line", "left out line"], accept_by=None)
    record = contribution.records.order_by("position").last()
    datanet_services.record_exclude(curator=world.owner, record=record, reason="personal data")
    datanet_services.contribution_accept(curator=world.owner, contribution=contribution)
    url = reverse("rewards:record_lineage", args=[record.pk])

    assert as_user(world.stranger).get(url).status_code == 404
    assert as_user(world.alice).get(url).status_code == 200
    assert as_user(world.curator).get(url).status_code == 200


def test_the_page_refuses_a_malformed_cursor_in_words(world) -> None:
    url = reverse("rewards:record_lineage", args=[world.alice_contribution.records.first().pk])
    # fullwidth digits: str.isdigit() says yes, int() reads them
    for cursor in ("abc", "-1", "0", "1e3", "9" * 30, "\uff11\uff12"):
        response = as_user(world.alice).get(url, {"answers_before": cursor})
        assert response.status_code == 400, cursor
        assert "That page does not exist" in response.content.decode()


def test_the_page_paginates_answers_and_rewards_by_keyset(world) -> None:
    record = world.alice_contribution.records.first()
    attributed_runs(world, [record], count=lineage.PAGE_SIZE + 5)
    url = reverse("rewards:record_lineage", args=[record.pk])

    first = as_user(world.alice).get(url).context["page"]
    assert len(first.answers.items) == lineage.PAGE_SIZE and first.answers.next_before is not None
    second = as_user(world.alice).get(url, {"answers_before": first.answers.next_before}).context["page"]
    assert len(second.answers.items) == 5 and second.answers.next_before is None
    seen = [a.run_id for a in first.answers.items + second.answers.items]
    assert len(set(seen)) == lineage.PAGE_SIZE + 5
    assert len(second.accruals.items) == lineage.PAGE_SIZE  # each list keeps its own cursor


# The API


def test_the_api_returns_the_lineage_with_weights_and_pages(world) -> None:
    merged = child_of(world, [(world.version, "merged_from", 0.5)], name="merged")
    record = world.alice_contribution.records.first()
    attributed_runs(world, [record], count=lineage.PAGE_SIZE + 1)

    response = api_as(world.alice).get(reverse("rewards_api:lineage_record", args=[record.pk]))

    assert response.status_code == 200
    data = response.json()
    assert data["subject"]["kind"] == "record" and data["subject"]["id"] == record.pk
    assert data["snapshots"] == [
        {"id": world.snapshot.pk, "datanet": world.datanet.slug, "number": 1, "records": 3, "held": 1,
         "share": "1/3"}
    ]  # fmt: skip
    weights = {v["id"]: v["weight"] for v in data["versions"]}
    assert weights == {world.version.pk: pytest.approx(1 / 3), merged.pk: pytest.approx(0.5 / 3)}
    assert data["answers"]["count"] == lineage.PAGE_SIZE + 1 and len(data["answers"]["results"]) == lineage.PAGE_SIZE
    assert data["answers"]["results"][0]["run_public_id"] is None
    assert int(data["rewards"]["total"]) > 0 and data["rewards"]["count"] == lineage.PAGE_SIZE + 1
    following = api_as(world.alice).get(data["answers"]["next"]).json()
    assert len(following["answers"]["results"]) == 1 and following["answers"]["next"] is None


@pytest.mark.parametrize("name", ["lineage_record", "lineage_contribution"])
@pytest.mark.parametrize("bad", ["999999999", "abc", "0x10", "9" * 30, "-3"])
def test_the_api_answers_404_for_unknown_or_malformed_ids(world, name: str, bad: str) -> None:
    response = api_as(world.alice).get(reverse(f"rewards_api:{name}", args=[bad]))
    assert response.status_code == 404
    assert set(response.json()) >= {"detail", "code"}


def test_the_api_hides_another_users_private_data() -> None:
    world = build_world(visibility="private")
    record = world.alice_contribution.records.first()
    for name, arg in (("lineage_record", record.pk), ("lineage_contribution", world.alice_contribution.pk)):
        url = reverse(f"rewards_api:{name}", args=[arg])
        assert api_as(world.stranger).get(url).status_code == 404
        assert api_as(None).get(url).status_code == 404
        assert api_as(world.alice).get(url).status_code == 200
    others = api_as(world.stranger).get(reverse("rewards_api:lineage_contributor", args=[world.alice.username])).json()
    assert others["public_only"] and others["snapshots"] == [] and others["versions"] == []


@pytest.mark.parametrize("cursor", ["abc", "0", "-1", "1.5", "9" * 30, "", "%00"])
def test_the_api_refuses_a_malformed_cursor(world, cursor: str) -> None:
    url = reverse("rewards_api:lineage_contribution", args=[world.alice_contribution.pk])
    response = api_as(world.alice).get(url, {"rewards_before": cursor, "answers_before": "7"})
    if cursor == "":
        assert response.status_code == 200  # an empty cursor is the first page
        return
    assert response.status_code == 400
    assert response.json()["code"] and "cursor" in response.json()["detail"]


# A constant number of queries


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured.captured_queries)


def test_page_and_api_cost_the_same_queries_for_10_and_200_answers(world) -> None:
    # given: one record credited by 10 answers, another by 200, on a merge and a continuation of the version
    merged = child_of(world, [(world.version, "merged_from", 0.5)], name="merged")
    child_of(world, [(merged, "continued_from", 1.0)], name="continued")
    few, many = world.alice_contribution.records.order_by("position")[:2]
    attributed_runs(world, [few, many], count=10)
    attributed_runs(world, [many], count=190, version=merged)
    page, api = Client(), APIClient()
    page.force_login(world.alice)
    api.force_authenticate(world.alice)

    # when
    counts = {
        (kind, record.pk): _queries(client, reverse(name, args=[record.pk]))
        for record in (few, many)
        for kind, client, name in (("page", page, "rewards:record_lineage"), ("api", api, "rewards_api:lineage_record"))
    }
    deep = _queries(page, reverse("rewards:record_lineage", args=[many.pk]) + "?answers_before=999999999")
    contribution = _queries(api, reverse("rewards_api:lineage_contribution", args=[world.alice_contribution.pk]))

    # then
    assert counts[("page", few.pk)] == counts[("page", many.pk)] == deep
    assert counts[("api", few.pk)] == counts[("api", many.pk)] == contribution
    assert (
        lineage.lineage_page(subject=lineage.Subject(kind="record", record=many), user=world.alice).answer_count == 200
    )


def test_the_contribution_record_and_my_contributions_pages_link_to_it(world) -> None:
    record = world.alice_contribution.records.first()
    alice = as_user(world.alice)

    contribution_page = alice.get(reverse("datanets:contribution", args=[world.alice_contribution.pk]))
    record_page = alice.get(reverse("datanets:record", args=[world.datanet.slug, record.pk]))
    mine = alice.get(reverse("datanets:mine"))

    assert (
        reverse("rewards:contribution_lineage", args=[world.alice_contribution.pk])
        in contribution_page.content.decode()
    )
    assert reverse("rewards:record_lineage", args=[record.pk]) in record_page.content.decode()
    html = mine.content.decode()
    assert reverse("rewards:contributor_lineage", args=[world.alice.username]) in html
    assert reverse("rewards:contribution_lineage", args=[world.alice_contribution.pk]) in html


def test_the_query_set_is_eight_queries(world, django_assert_num_queries) -> None:
    # the reach's three (snapshots, the versions' snapshots, the edges below), the visible versions, a page and a
    # count of answers, a page and a total of accruals
    record = world.alice_contribution.records.first()
    attributed_runs(world, [record], count=60)
    subject = lineage.Subject(kind="record", record=record, contribution=world.alice_contribution)

    with django_assert_num_queries(8):
        page = lineage.lineage_page(subject=subject, user=world.alice)

    assert page.answer_count == 60 and len(page.answers.items) == lineage.PAGE_SIZE
