"""Every piece of check evidence names records by id, and every record it names is a link that lands on a page
showing that record (issue 15, item 3): followed here, link by link, as a curator and as the contributor."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.urls import reverse

from accounts.tests.factories import UserFactory
from datanets import checks

from .factories import DatanetFactory, accepted, submit, texts

LONG = (
    "the quick brown fox jumps over the lazy dog while the farmer watches from the porch and "
    "the children laugh in the garden near the old oak tree by the river"
)
FILLER = [f"clean record number {n} says something plain about gardens and rivers and the weather" for n in range(30)]


class Page(HTMLParser):
    """The parts of a page these tests read: evidence items and their record links, elements by id, badges."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.ids: dict[str, dict[str, str | None]] = {}
        self.evidence: list[list[str]] = []  # per evidence item, the hrefs of its record links
        self.unlinked: list[str] = []  # record ids named without a link
        self.severities: dict[str, str] = {}
        self._check = ""
        self._in_evidence = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids[a["id"]] = a  # type: ignore[index]
        if tag == "details" and "data-check" in a:
            self._check = a["data-check"] or ""
        if "data-severity" in a:
            self.severities[self._check] = a["data-severity"] or ""
        if tag == "li" and "data-evidence" in a:
            self.evidence.append([])
            self._in_evidence = True
        if tag == "a" and "data-record-link" in a and self._in_evidence:
            self.evidence[-1].append(a["href"] or "")
        if tag == "span" and a.get("title", "").startswith("not shown to you") and self._in_evidence:
            self.unlinked.append(a["title"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "li":
            self._in_evidence = False


def _contribution_with_every_finding() -> tuple[object, object]:
    datanet = DatanetFactory(language="en", owner=UserFactory(username="olivia"))
    accepted(datanet, UserFactory(username="arthur"), texts(LONG, "an accepted record that will be repeated"))
    contributor = UserFactory(username="carla")
    contribution = submit(
        datanet,
        contributor,
        texts(
            *FILLER,  # thirty clean records first: the findings sit beyond the page's 20-record sample
            "an accepted record that will be repeated",
            LONG.replace("river", "stream"),
            "La bibliothèque ouvre à neuf heures du matin et ferme à dix-huit heures en semaine.",
            "my key is AKIAIOSFODNN7EXAMPLE do not share",
            "contact me at alice@example.com for the files",
            "hi",
            FILLER[3],  # a repeated row: left out of the upload, its kept twin is a record
        ),
    )
    checks.contribution_check(contribution_id=contribution.id)
    contribution.refresh_from_db()
    return contribution, contributor


def _follow(client: Client, href: str) -> None:
    url = urlsplit(href)
    assert url.fragment.startswith("record-"), href
    record_id = url.fragment.removeprefix("record-")
    response = client.get(f"{url.path}?{url.query}" if url.query else url.path)
    assert response.status_code == 200, href
    target = Page(response.content.decode()).ids.get(url.fragment)
    assert target is not None, f"{href}: no element #{url.fragment} on the page it links to"
    assert target.get("data-record") == record_id


@pytest.mark.django_db
def test_a_curator_follows_every_evidence_link_on_a_checks_page_to_its_record(client: Client) -> None:
    # given
    contribution, _ = _contribution_with_every_finding()
    client.force_login(contribution.datanet.owner)

    # when
    page = Page(client.get(reverse("datanets:contribution", args=[contribution.pk])).content.decode())

    # then
    assert len(page.evidence) >= 7  # near and exact duplicates (against the Datanet and within), language, ...
    assert all(links for links in page.evidence), "an evidence item names no record by a link"
    assert page.unlinked == []
    for href in {href for links in page.evidence for href in links}:
        _follow(client, href)


@pytest.mark.django_db
def test_the_contributor_follows_the_links_to_their_own_records_and_sees_others_named_not_linked(
    client: Client,
) -> None:
    contribution, contributor = _contribution_with_every_finding()
    client.force_login(contributor)

    page = Page(client.get(reverse("datanets:contribution", args=[contribution.pk])).content.decode())

    hrefs = {href for links in page.evidence for href in links}
    own = set(contribution.records.values_list("pk", flat=True))
    assert hrefs and all(int(urlsplit(href).fragment.removeprefix("record-")) in own for href in hrefs)
    assert all(urlsplit(href).path.startswith(f"/datanets/{contribution.datanet.slug}/records/") for href in hrefs)
    assert len(page.unlinked) >= 2  # the accepted twins belong to another contributor's contribution
    for href in hrefs:
        _follow(client, href)


@pytest.mark.django_db
def test_severities_are_distinct_words_a_secret_fails_and_personal_data_warns(client: Client) -> None:
    contribution, _ = _contribution_with_every_finding()
    client.force_login(contribution.datanet.owner)

    page = Page(client.get(reverse("datanets:contribution", args=[contribution.pk])).content.decode())

    assert page.severities["secrets"] == "fail"
    assert page.severities["personal data"] == "warn"
    assert page.severities["language"] == "warn"
    assert set(page.severities.values()) <= {"pass", "warn", "fail", "skipped"}
