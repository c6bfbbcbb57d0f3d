"""The revocation pages (issue 17): a contributor withdraws an accepted contribution through a confirmation step,
a curator takes records down from the records viewer or a record's page, either erases later; the contribution
page, "my contributions" and an erased record's page show what happened, never the erased text; every refusal is a
message on the page (400, 403, 404, 409), never a 500, and the forms need their CSRF token."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from accounts.tests.factories import UserFactory
from datanets import checks, revocation, services
from datanets.models import Receipt, Record, Revocation

from .factories import DatanetFactory, accepted, submit, texts

pytestmark = pytest.mark.django_db

SECRET = "call me on 0611 223 344 any evening"


def client_for(user: Any = None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def world(tmp_path):
    with override_settings(MEDIA_ROOT=str(tmp_path)):
        datanet = DatanetFactory()
        mine = accepted(datanet, content=texts(SECRET, "a second record of plain words"))
        checks.contribution_check(contribution_id=mine.pk)  # its evidence quotes a masked excerpt of the number
        other = accepted(datanet, content=texts("somebody else wrote this record"))
        services.snapshot_freeze(datanet=datanet, user=datanet.owner)
        yield datanet, mine, other


def _withdraw(client: Client, contribution_id: int, **fields: str) -> Any:
    return client.post(reverse("datanets:contribution_revoke", args=[contribution_id]), fields)


def test_the_contributor_withdraws_with_erasure_through_the_confirmation_step(world) -> None:
    datanet, mine, _ = world
    client = client_for(mine.contributor)
    page = client.get(reverse("datanets:contribution", args=[mine.pk])).content.decode()
    assert "data-revoke-link" in page and reverse("rewards:contribution_lineage", args=[mine.pk]) in page
    assert "0611…" in page  # the personal data check's masked excerpt, before the erasure

    form = client.get(reverse("datanets:contribution_revoke", args=[mine.pk])).content.decode()
    assert "also erase the bytes" in form.lower() and "stay as anchored" in form
    confirm = _withdraw(client, mine.pk, reason="personal_data", explanation="my phone number", erase="on")
    body = confirm.content.decode()
    assert confirm.status_code == 200 and "data-confirm-revoke" in body and "the hash stays" in body
    assert not Revocation.objects.exists()  # nothing happens before the confirmation

    done = _withdraw(
        client, mine.pk, reason="personal_data", explanation="my phone number", erase="on", confirmed="True"
    )
    assert done.status_code == 302 and done["Location"] == reverse("datanets:contribution", args=[mine.pk])
    withdrawn = Revocation.objects.get()
    assert (withdrawn.kind, withdrawn.reason, withdrawn.erase, withdrawn.record_count) == (
        "withdrawal",
        "personal_data",
        True,
        2,
    )
    page = client.get(reverse("datanets:contribution", args=[mine.pk])).content.decode()
    assert f'data-revocation="{withdrawn.pk}"' in page and "Withdrawn by the contributor" in page
    assert 'data-erased="1"' in page and "my phone number" in page
    assert 'data-receipt-kind="revocation"' in page and "Withdrawal" in page
    assert SECRET not in page and "0611" not in page  # nor the checks' masked excerpt of the phone number
    assert "data-revoke-link" not in page  # nothing left to withdraw

    mine_page = client.get(reverse("datanets:mine")).content.decode()
    row = re.search(rf'<tr data-contribution="{mine.pk}">.*?</tr>', mine_page, re.S).group(0)
    assert "withdrawn" in row and "erased" in row and "where it went" in row

    record = mine.records.order_by("position").first()
    record_page = client.get(reverse("datanets:record", args=[datanet.slug, record.pk])).content.decode()
    assert "data-erased" in record_page and "0611 223 344" not in record_page
    assert record.record_hash in record_page  # the hash stays
    assert reverse("rewards:record_lineage", args=[record.pk]) in record_page
    curator_viewer = client_for(datanet.owner).get(reverse("datanets:records", args=[datanet.slug]))
    assert "0611 223 344" not in curator_viewer.content.decode() and "data-erased" in curator_viewer.content.decode()


def test_refusals_are_messages_never_500(world) -> None:
    datanet, mine, other = world
    client = client_for(mine.contributor)
    # someone else's contribution: its contributor's only (a curator sees the page, is refused the action)
    assert _withdraw(client, other.pk, reason="consent").status_code == 404
    refused = _withdraw(client_for(datanet.owner), mine.pk, reason="consent", confirmed="True")
    assert refused.status_code == 403 and "curators take records down" in refused.content.decode()
    # a bad reason, an explanation too long or with a NUL: the form again, with the problem beside its field
    assert _withdraw(client, mine.pk, reason="because").status_code == 400
    too_long = _withdraw(client, mine.pk, reason="other", explanation="x" * 2001, confirmed="True")
    assert too_long.status_code == 400 and "2000" in too_long.content.decode()
    nul = _withdraw(client, mine.pk, reason="other", explanation="a\x00b", confirmed="True")
    assert nul.status_code == 400 and "Null characters are not allowed" in nul.content.decode()
    needs_why = _withdraw(client, mine.pk, reason="other", confirmed="True")
    assert needs_why.status_code == 400 and "say why" in needs_why.content.decode()
    # never accepted, then twice
    pending = submit(datanet, mine.contributor, texts("a record still waiting for review"))
    still = _withdraw(client, pending.pk, reason="consent", confirmed="True")
    assert still.status_code == 409 and "still pending" in still.content.decode()
    assert _withdraw(client, mine.pk, reason="consent", confirmed="True").status_code == 302
    twice = _withdraw(client, mine.pk, reason="consent", confirmed="True")
    assert twice.status_code == 409 and "already revoked on" in twice.content.decode()
    assert Revocation.objects.count() == 1
    # erasing twice
    withdrawn = Revocation.objects.get()
    erase = reverse("datanets:revocation_erase", args=[withdrawn.pk])
    assert client_for(UserFactory()).post(erase).status_code == 404
    assert client.post(erase).status_code == 302
    again = client.post(erase)
    assert again.status_code == 409 and "already erased on" in again.content.decode()


def test_a_curator_takes_records_down_from_the_viewer_and_erases_later(world) -> None:
    datanet, mine, other = world
    curator = client_for(datanet.owner)
    viewer = curator.get(reverse("datanets:records", args=[datanet.slug])).content.decode()
    assert "data-bulk-takedown" in viewer
    first, second = mine.records.order_by("position")
    takedown = reverse("datanets:records_takedown", args=[datanet.slug])
    start = curator.post(takedown, {"record": [first.pk, other.records.get().pk], "start": "1"})
    assert start.status_code == 200 and "Take down 2 records" in start.content.decode()
    fields = {"record": [first.pk, other.records.get().pk], "reason": "licence", "explanation": "not CC"}
    assert "data-confirm-revoke" in curator.post(takedown, fields).content.decode()
    done = curator.post(takedown, {**fields, "confirmed": "True"})
    assert done.status_code == 302
    assert sorted(Revocation.objects.values_list("contribution_id", "kind")) == sorted(
        [(mine.pk, "takedown"), (other.pk, "takedown")]
    )
    # a record page offers the takedown to curators of what is not revoked yet
    assert (
        "data-takedown-record"
        in curator.get(reverse("datanets:record", args=[datanet.slug, second.pk])).content.decode()
    )
    assert (
        "data-takedown-record"
        not in curator.get(reverse("datanets:record", args=[datanet.slug, first.pk])).content.decode()
    )
    # the contributor sees the takedown, may withdraw what is left, and erase the takedown
    client = client_for(mine.contributor)
    page = client.get(reverse("datanets:contribution", args=[mine.pk])).content.decode()
    assert "Taken down" in page and "not CC" in page and "data-revoke-link" in page and "data-erase-link" in page
    taken = Revocation.objects.get(contribution=mine)
    confirm = client.get(reverse("datanets:revocation_erase", args=[taken.pk])).content.decode()
    assert "data-confirm-erase" in confirm and "hash and leaf stay" in confirm
    assert client.post(reverse("datanets:revocation_erase", args=[taken.pk])).status_code == 302
    first.refresh_from_db()
    assert first.canonical == "" and second.canonical != ""
    assert Receipt.objects.filter(kind="revocation", contribution=mine).count() == 2

    # refusals: not a curator, records of another Datanet, twice, no record ticked
    refused = client.post(takedown, {**fields, "confirmed": "True"})
    assert refused.status_code == 403
    elsewhere = accepted(DatanetFactory(owner=datanet.owner), content=texts("a record in another datanet"))
    missing = curator.post(takedown, {**fields, "record": [elsewhere.records.get().pk], "confirmed": "True"})
    assert missing.status_code == 404 and "not in" in missing.content.decode()
    twice = curator.post(takedown, {**fields, "confirmed": "True"})
    assert twice.status_code == 409 and "already revoked on" in twice.content.decode()
    assert curator.post(takedown, {"reason": "licence", "record": ["x"]}).status_code == 400


def test_the_forms_need_their_csrf_token(world) -> None:
    datanet, mine, _ = world
    client = Client(enforce_csrf_checks=True)
    client.force_login(mine.contributor)
    fields = {"reason": "consent", "confirmed": "True"}
    assert client.post(reverse("datanets:contribution_revoke", args=[mine.pk]), fields).status_code == 403
    curator = Client(enforce_csrf_checks=True)
    curator.force_login(datanet.owner)
    record = mine.records.first()
    takedown = {"record": [record.pk], "reason": "licence", "explanation": "x", "confirmed": "True"}
    assert curator.post(reverse("datanets:records_takedown", args=[datanet.slug]), takedown).status_code == 403
    assert not Revocation.objects.exists()
    withdrawn = revocation.contribution_revoke(contribution=mine, user=mine.contributor)
    assert client.post(reverse("datanets:revocation_erase", args=[withdrawn.pk])).status_code == 403
    assert not Record.objects.filter(canonical="").exists()
