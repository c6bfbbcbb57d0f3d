"""The record viewer (issue 15, item 1): keyset pages, filters, full-text search, who reads what, the record page with
its evidence and its twin, bulk exclude and restore, evidence links that land on their record, and a constant number
of queries per page. Runs on PostgreSQL (tsvector search) and on SQLite (FTS5): DATABASE_URL=sqlite:///... for the
second."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.tests.factories import UserFactory
from datanets import checks, services, viewer
from datanets.models import Contribution, ContributionDecision, Datanet, Receipt, Record

from .factories import DatanetFactory, accepted, jsonl, submit, texts

pytestmark = pytest.mark.django_db

LONG = (
    "the quick brown fox jumps over the lazy dog while the farmer watches from the porch and "
    "the children laugh in the garden near the old oak tree by the river"
)
TWIN = LONG.replace("river", "stream")


def client_for(user: Any = None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def listed(response: Any) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-record="(\d+)"', response.content.decode())]


def records_url(datanet: Datanet, **query: Any) -> str:
    url = reverse("datanets:records", args=[datanet.slug])
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def checked(contribution: Contribution) -> Contribution:
    checks.contribution_check(contribution_id=contribution.pk)
    contribution.refresh_from_db()
    return contribution


@pytest.fixture
def near_pair() -> dict[str, Any]:
    """An accepted record and a pending near-copy of it, checked: the near-copy is flagged with its twin's id."""
    owner, contributor = UserFactory(), UserFactory(username="nina")
    datanet = DatanetFactory(owner=owner)
    original = checked(accepted(datanet, UserFactory(username="otto"), texts(LONG)))
    pending = checked(submit(datanet, contributor, texts(TWIN, "a plain record with words enough")))
    twin = pending.records.get(position=0)
    return {"datanet": datanet, "owner": owner, "original": original.records.get(), "pending": pending, "twin": twin}


def test_the_near_copy_carries_a_whole_record_flag_naming_its_twin(near_pair: dict[str, Any]) -> None:
    twin, original = near_pair["twin"], near_pair["original"]
    assert [f["kind"] for f in twin.flags] == ["near_duplicate"]
    assert twin.flags[0]["other_record_id"] == original.pk and twin.flags[0]["similarity"] >= 0.85
    assert near_pair["pending"].records.get(position=1).flags == []


def test_keyset_pages_walk_forward_and_back_by_id_without_offset() -> None:
    datanet = DatanetFactory()
    contribution = submit(datanet, content=texts(*(f"record number {i} of the set" for i in range(7))))
    ids = list(contribution.records.order_by("pk").values_list("pk", flat=True))
    owner = client_for(datanet.owner)

    first = viewer.records_page(Record.objects.filter(datanet=datanet), size=3)
    assert [r.pk for r in first.records] == ids[:3] and first.prev_before is None and first.next_after == ids[2]
    second = viewer.records_page(Record.objects.filter(datanet=datanet), after=first.next_after, size=3)
    assert [r.pk for r in second.records] == ids[3:6] and second.prev_before == ids[3]
    back = viewer.records_page(Record.objects.filter(datanet=datanet), before=second.prev_before, size=3)
    assert [r.pk for r in back.records] == ids[:3] and back.prev_before is None and back.next_after == ids[2]
    last = viewer.records_page(Record.objects.filter(datanet=datanet), after=second.next_after, size=3)
    assert [r.pk for r in last.records] == ids[6:] and last.next_after is None

    with CaptureQueriesContext(connection) as queries:
        response = owner.get(records_url(datanet, after=ids[1]))
    assert response.status_code == 200 and listed(response) == ids[2:]
    assert not any("OFFSET" in q["sql"].upper() for q in queries.captured_queries)
    assert f"before={ids[2]}" in response.content.decode()


def test_filters_narrow_by_contribution_snapshot_status_contributor_and_exclusion() -> None:
    owner, alice, bob = UserFactory(), UserFactory(username="alice"), UserFactory(username="bob")
    datanet = DatanetFactory(owner=owner)
    first = accepted(datanet, alice, texts("alice wrote this first record", "alice wrote a second one"))
    snapshot = services.snapshot_freeze(datanet=datanet, user=owner)
    waiting = submit(datanet, bob, texts("bob waits for review here", "bob has another record"))
    services.record_exclude(curator=owner, record=waiting.records.get(position=1), reason="off topic")
    rejected = services.contribution_reject(
        curator=owner, contribution=submit(datanet, bob, texts("bob was rejected once")), reason="spam"
    )
    client = client_for(owner)

    def ids(**query: Any) -> set[int]:
        response = client.get(records_url(datanet, **query))
        assert response.status_code == 200
        return set(listed(response))

    def of(*contributions: Contribution, **where: Any) -> set[int]:
        return set(Record.objects.filter(contribution__in=contributions, **where).values_list("pk", flat=True))

    assert ids() == of(first, waiting, rejected)
    assert ids(contribution=waiting.pk) == of(waiting)
    assert ids(snapshot=snapshot.number) == of(first)
    assert ids(status="pending") == of(waiting)
    assert ids(status="rejected") == of(rejected)
    assert ids(contributor="bob") == of(waiting, rejected)
    assert ids(excluded="yes") == of(waiting, excluded=True)
    assert ids(excluded="no", contributor="bob") == of(waiting, rejected, excluded=False)
    assert client.get(records_url(datanet, snapshot=99)).status_code == 404


def test_filters_by_check_and_flag(near_pair: dict[str, Any]) -> None:
    datanet, owner = near_pair["datanet"], near_pair["owner"]
    personal = checked(submit(datanet, content=texts("write to bob@example.org about the plan", "ok")))
    client = client_for(owner)

    def ids(**query: Any) -> list[int]:
        return listed(client.get(records_url(datanet, **query)))

    email = personal.records.get(position=0).pk
    short = personal.records.get(position=1).pk
    assert ids(check="near_duplicates") == [near_pair["twin"].pk]
    assert ids(flag="near_duplicate") == [near_pair["twin"].pk]
    assert ids(check="personal_data") == [email]
    assert ids(flag="email") == [email]
    assert ids(flag="phone") == []
    assert ids(check="length") == [short]
    assert ids(check="flagged") == sorted([near_pair["twin"].pk, email])


def test_full_text_search_finds_checked_records_by_their_words(near_pair: dict[str, Any]) -> None:
    datanet, owner = near_pair["datanet"], near_pair["owner"]
    unchecked = submit(datanet, content=texts("a stream of unchecked words"))
    client = client_for(owner)

    def ids(q: str, **query: Any) -> list[int]:
        return listed(client.get(records_url(datanet, q=q, **query)))

    assert ids("stream") == [near_pair["twin"].pk]  # the unchecked record is not in the index yet
    assert ids("river") == [near_pair["original"].pk]
    assert ids("oak") == sorted([near_pair["original"].pk, near_pair["twin"].pk])
    assert ids("oak", status="pending") == [near_pair["twin"].pk]
    assert ids("text") == []  # keys are not searched, only what people wrote
    assert ids("%22 OR *") == []  # no word: nothing, and no syntax error
    checked(unchecked)
    assert ids("stream") == sorted([near_pair["twin"].pk, unchecked.records.get().pk])


def test_others_read_only_published_records_and_their_own() -> None:
    owner, contributor, stranger = UserFactory(), UserFactory(), UserFactory()
    datanet = DatanetFactory(owner=owner)
    published = accepted(datanet, contributor, texts("a published record of words"))
    mine = submit(datanet, contributor, texts("my pending record of words"))
    theirs = submit(datanet, stranger, texts("a stranger's pending record"))
    private = DatanetFactory(owner=owner, visibility=Datanet.Visibility.PRIVATE)

    assert listed(client_for().get(records_url(datanet))) == [published.records.get().pk]
    assert listed(client_for(contributor).get(records_url(datanet))) == [
        published.records.get().pk,
        mine.records.get().pk,
    ]
    hidden = reverse("datanets:record", args=[datanet.slug, theirs.records.get().pk])
    assert client_for(contributor).get(hidden).status_code == 404
    assert client_for(owner).get(hidden).status_code == 200
    assert client_for(stranger).get(records_url(private)).status_code == 404


def test_the_record_page_shows_evidence_and_the_twin_side_by_side_with_the_changed_words(
    near_pair: dict[str, Any],
) -> None:
    datanet, twin, original = near_pair["datanet"], near_pair["twin"], near_pair["original"]
    response = client_for(near_pair["owner"]).get(reverse("datanets:record", args=[datanet.slug, twin.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    assert "Near duplicates" in html and "similarity" in html
    assert f'href="{reverse("datanets:record", args=[datanet.slug, original.pk])}"' in html
    assert re.search(r'data-diff="twin">.*<mark class="diff-changed">river</mark>', html, re.S)
    assert re.search(r'data-diff="record">.*<mark class="diff-changed">stream</mark>', html, re.S)


def test_the_record_page_escapes_the_text_and_the_diff() -> None:
    owner = UserFactory()
    datanet = DatanetFactory(owner=owner)
    base = LONG + " <b>bold</b>"
    checked(accepted(datanet, content=texts(base)))
    pending = checked(submit(datanet, content=texts(base.replace("river", "<script>alert(1)</script>"))))
    record = pending.records.get()
    assert record.flags and record.flags[0]["kind"] == "near_duplicate"
    html = client_for(owner).get(reverse("datanets:record", args=[datanet.slug, record.pk])).content.decode()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>bold</b>" not in html


def test_bulk_exclude_and_restore_are_logged_with_receipts(near_pair: dict[str, Any]) -> None:
    datanet, owner, pending = near_pair["datanet"], near_pair["owner"], near_pair["pending"]
    ids = list(pending.records.order_by("pk").values_list("pk", flat=True))
    url = reverse("datanets:records_bulk", args=[datanet.slug])
    client = client_for(owner)

    refused = client.post(url, {"record": ids, "action": "exclude", "reason": "  "})
    assert refused.status_code == 400 and not Record.objects.filter(excluded=True).exists()

    response = client.post(url, {"record": ids, "action": "exclude", "reason": "near copies", "next": "/x/"})
    assert response.status_code == 302 and response["Location"] == "/x/"
    pending.refresh_from_db()
    assert pending.excluded_count == 2
    assert set(Record.objects.filter(excluded=True).values_list("pk", flat=True)) == set(ids)
    again = client.post(url, {"record": ids[:1], "action": "exclude", "reason": "twice"})
    assert again.status_code == 400

    assert client.post(url, {"record": ids[:1], "action": "restore"}).status_code == 302
    pending.refresh_from_db()
    assert pending.excluded_count == 1 and not Record.objects.get(pk=ids[0]).excluded
    actions = list(ContributionDecision.objects.filter(record__isnull=False).values_list("action", flat=True))
    assert sorted(actions) == ["exclude_record", "exclude_record", "restore_record"]
    decisions = Receipt.objects.filter(kind="curation", contribution=pending).values_list(
        "document__decision", "document__record"
    )
    assert sorted(decisions) == sorted([("exclude", ids[0]), ("exclude", ids[1]), ("restore", ids[0])])


def test_bulk_actions_need_a_curator_csrf_a_pending_contribution_and_this_datanets_records(
    near_pair: dict[str, Any],
) -> None:
    datanet, owner, twin, original = near_pair["datanet"], near_pair["owner"], near_pair["twin"], near_pair["original"]
    url = reverse("datanets:records_bulk", args=[datanet.slug])
    data = {"record": [twin.pk], "action": "exclude", "reason": "copy"}

    assert client_for(UserFactory()).post(url, data).status_code == 403
    assert client_for(twin.contribution.contributor).post(url, data).status_code == 403
    assert client_for().post(url, data).status_code == 302  # to the login page
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(owner)
    assert strict.post(url, data).status_code == 403
    frozen = client_for(owner).post(url, {**data, "record": [original.pk]})
    assert frozen.status_code == 400 and b"accepted" in frozen.content
    elsewhere = checked(submit(DatanetFactory(owner=owner)))
    other = client_for(owner).post(url, {**data, "record": [elsewhere.records.first().pk]})
    assert other.status_code == 400
    assert not Record.objects.filter(excluded=True).exists()


def test_every_evidence_link_on_the_checks_lands_on_its_record(near_pair: dict[str, Any]) -> None:
    datanet, owner, original = near_pair["datanet"], near_pair["owner"], near_pair["original"]
    busy = checked(
        submit(
            datanet,
            content=texts(
                TWIN,  # a near-copy of the accepted record
                LONG,  # an exact copy of it
                "write to bob@example.org about the plan",  # personal data
                "ok",  # too short
                "AKIAIOSFODNN7EXAMPLE is the key",  # a secret
            ),
        )
    )
    client = client_for(owner)
    html = client.get(reverse("datanets:contribution", args=[busy.pk])).content.decode()
    links = re.findall(r'href="([^"]+)" data-record-link="(\d+)"', html)
    linked = {int(i) for _, i in links}
    assert set(busy.records.values_list("pk", flat=True)) <= linked  # every record some check names
    assert original.pk in linked  # and the accepted record the copies repeat
    for href, record_id in links:
        response = client.get(href)
        assert response.status_code == 200 and f"Record #{record_id}</h1>" in response.content.decode()


def test_an_excluded_near_copy_stays_out_of_the_next_snapshot(near_pair: dict[str, Any]) -> None:
    datanet, owner, pending, twin = near_pair["datanet"], near_pair["owner"], near_pair["pending"], near_pair["twin"]
    client = client_for(owner)
    client.post(
        reverse("datanets:records_bulk", args=[datanet.slug]),
        {"record": [twin.pk], "action": "exclude", "reason": "copy"},
    )
    services.contribution_accept(curator=owner, contribution=pending)
    snapshot = services.snapshot_freeze(datanet=datanet, user=owner)
    in_snapshot = set(snapshot.leaves.values_list("record_id", flat=True))
    assert twin.pk not in in_snapshot and pending.records.get(position=1).pk in in_snapshot
    assert listed(client.get(records_url(datanet, snapshot=snapshot.number))) == sorted(in_snapshot)


def _world(size: int) -> tuple[Datanet, Any, int]:
    owner = UserFactory()
    datanet = DatanetFactory(owner=owner)
    half = size // 2
    rows = [{"text": f"record {i} about the river and the oak, number {i}"} for i in range(size)]
    checked(accepted(datanet, content=jsonl(*rows[:half])))
    pending = checked(submit(datanet, content=jsonl(*rows[half:])))
    return datanet, owner, pending.records.order_by("pk").first().pk


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"q": "river oak", "status": "pending"},
        {"check": "flagged", "excluded": "no", "contributor": "nobody"},
    ],
)
def test_a_page_costs_the_same_queries_for_10_and_200_records(query: dict[str, str]) -> None:
    counts = []
    for size in (10, 200):
        datanet, owner, some_id = _world(size)
        client = client_for(owner)
        with CaptureQueriesContext(connection) as listing:
            assert client.get(records_url(datanet, **query)).status_code == 200
        with CaptureQueriesContext(connection) as deeper:
            assert client.get(records_url(datanet, after=some_id, **query)).status_code == 200
        with CaptureQueriesContext(connection) as one:
            assert client.get(reverse("datanets:record", args=[datanet.slug, some_id])).status_code == 200
        counts.append((len(listing), len(deeper), len(one)))
    assert counts[0] == counts[1], counts
    assert max(counts[1]) <= 14, counts


def test_a_long_pair_is_compared_only_over_its_opening_and_the_page_says_so() -> None:
    """difflib's cost grows worse than quadratically with repeated words: a 1 MiB record must not cost minutes of CPU
    per page view, so only the opening pieces are compared and the rest follows unmarked."""
    from datanets.viewer import DIFF_MAX_PIECES, word_diff

    words = ["the", "river", "runs", "to", "the", "sea"] * 5_000  # 30,000 words of a six-word vocabulary
    changed = list(words)
    changed[10], changed[20_000] = "brook", "ocean"  # one change inside the compared opening, one far beyond it
    left, right, cut = word_diff(" ".join(words), " ".join(changed))
    assert cut
    marked = "".join(text for text, kind in right if kind)
    assert "brook" in marked and "ocean" not in marked  # the late change is shown, not marked
    assert "".join(text for text, _ in left) == " ".join(words)  # nothing is lost from either side
    assert "".join(text for text, _ in right) == " ".join(changed)
    assert word_diff("a b c", "a x c")[2] is False and DIFF_MAX_PIECES > 6
