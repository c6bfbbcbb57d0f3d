"""Hostile and broken input through the API: each refused with a 4xx and a message a person understands, and nothing
stored half-way (no row, no partial file; a refused upload's complete content-addressed file may stay, unreferenced,
as docs/datanets.md says)."""

from __future__ import annotations

import hashlib
import io
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.services import api_token_create
from accounts.tests.factories import UserFactory
from datanets import services
from datanets.models import Contribution, ContributionDecision, Datanet, Record
from ledger.models import Anchor

from .factories import DatanetFactory, accepted, submit, texts

pytestmark = pytest.mark.django_db

MiB = 1024 * 1024


@pytest.fixture
def datanet() -> Datanet:
    # quotas out of the way: these tests are about what the bytes hold
    return DatanetFactory(daily_quota_bytes=200 * MiB, daily_quota_files=1000)


@pytest.fixture
def contributor() -> Any:
    return UserFactory()


@pytest.fixture
def api(contributor: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(contributor)
    return client


def _state() -> dict[str, Any]:
    media = Path(settings.MEDIA_ROOT)
    files = sorted(str(p.relative_to(media)) for p in media.rglob("*") if p.is_file()) if media.exists() else []
    return {
        "contributions": Contribution.objects.count(),
        "records": Record.objects.count(),
        "decisions": ContributionDecision.objects.count(),
        "anchors": Anchor.objects.count(),
        "files": files,
    }


def _assert_nothing_half_stored(before: dict[str, Any], *, may_keep_file: bool = False) -> None:
    after = _state()
    assert {k: v for k, v in after.items() if k != "files"} == {k: v for k, v in before.items() if k != "files"}
    new_files = set(after["files"]) - set(before["files"])
    assert not [f for f in new_files if not f.startswith("contributions/")], "a temporary or other file was left"
    if not may_keep_file:
        assert not new_files
    for name in new_files:  # complete, content-addressed: the bytes hash to the name
        path = Path(settings.MEDIA_ROOT) / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name


def _upload(api: APIClient, datanet: Datanet, content: bytes, name: str = "data.jsonl", **fields: Any) -> Any:
    url = reverse("datanets_api:contribution_upload", args=[datanet.slug])
    return api.post(url, {"file": SimpleUploadedFile(name, content), **fields}, format="multipart")


def _refused(response: Any, status: int, *words: str, code: str | None = None) -> None:
    assert response.status_code == status, response.content[:500]
    body = response.json()
    assert set(body) >= {"detail", "code"}
    for word in words:
        assert word.lower() in body["detail"].lower(), body
    if code is not None:
        assert body["code"] == code, body


def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in entries:
            archive.writestr(info, data)
    return out.getvalue()


def _symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


CONTENT_CASES = {
    "wrong_extension": (b"MZ\x90\x00 not data", "data.exe", ["not accepted"]),
    "binary_content": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, "data.jsonl", ["PNG"]),
    "invalid_utf8": (b'{"text": "caf\xe9 au lait with words"}\n', "data.jsonl", ["UTF-8", "line 1"]),
    "unmatched_csv_quote": (b'text\n"an unclosed quote, then more text\nand more\n', "data.csv", ["quote"]),
    "nested_100000_deep": (b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", "data.jsonl", ["line 1"]),
    "million_digit_number": (b'{"text": ' + b"7" * 1_000_000 + b"}\n", "data.jsonl", ["line 1", "number"]),
    "empty_file": (b"", "data.jsonl", ["empty"]),
    "zip_bomb_ratio": (_zip([("big.jsonl", b'{"text": "' + b"a" * (8 * MiB) + b'"}\n')]), "data.zip", ["expand"]),
    "zip_dot_dot": (_zip([("../evil.jsonl", texts("an escaping entry name"))]), "data.zip", ["../evil.jsonl"]),
    "zip_absolute_path": (_zip([("/etc/evil.jsonl", texts("an absolute entry name"))]), "data.zip", ["/etc/evil"]),
    "zip_symlink": (_zip([(_symlink("link.jsonl"), b"/etc/passwd")]), "data.zip", ["link"]),
}


@pytest.mark.parametrize("case", sorted(CONTENT_CASES))
def test_hostile_file_is_refused_and_nothing_is_half_stored(
    case: str, api: APIClient, datanet: Datanet, capsys: Any
) -> None:
    content, name, words = CONTENT_CASES[case]
    before = _state()
    response = _upload(api, datanet, content, name)
    _refused(response, 400, *words)
    _assert_nothing_half_stored(before, may_keep_file=True)


@pytest.fixture(scope="module")
def zip_of_100000_entries() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for i in range(100_000):
            archive.writestr(f"{i}.txt", b"")
    return out.getvalue()


def test_a_zip_of_100000_entries_is_refused(api: APIClient, datanet: Datanet, zip_of_100000_entries: bytes) -> None:
    before = _state()
    response = _upload(api, datanet, zip_of_100000_entries, "many.zip")
    _refused(response, 400, "100,000", "entries")
    _assert_nothing_half_stored(before, may_keep_file=True)


class _ExplodingBody(io.RawIOBase):
    """A request body that fails the test if anything reads it."""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        raise AssertionError("the body was read")

    readline = read


def test_an_upload_over_the_limit_is_refused_before_its_body_is_read(
    api: APIClient, datanet: Datanet, settings: Any
) -> None:
    settings.UPLOAD_MAX_BYTES = 5 * MiB
    before = _state()
    response = api.generic(
        "POST",
        reverse("datanets_api:contribution_upload", args=[datanet.slug]),
        content_type="multipart/form-data; boundary=BoUnDaRy",
        CONTENT_LENGTH=str(6 * MiB),
        **{"wsgi.input": _ExplodingBody()},
    )
    _refused(response, 413, "6 MB", "5.1 MB", code="too_large")
    _assert_nothing_half_stored(before)


def test_a_file_over_the_limit_inside_a_small_body_is_refused_with_413(
    api: APIClient, datanet: Datanet, settings: Any
) -> None:
    settings.UPLOAD_MAX_BYTES = 1000
    before = _state()
    response = _upload(api, datanet, texts("x" * 2000))
    _refused(response, 413, "at most 1000 bytes", code="too_large")
    _assert_nothing_half_stored(before)


def test_uploads_over_the_daily_quota_are_refused(api: APIClient, contributor: Any) -> None:
    datanet = DatanetFactory(daily_quota_files=1, daily_quota_bytes=10_000)
    assert _upload(api, datanet, texts("the first upload of the day")).status_code == 201
    before = _state()
    _refused(_upload(api, datanet, texts("one upload too many")), 400, "quota", code="quota_files")
    _assert_nothing_half_stored(before)
    other = DatanetFactory(daily_quota_bytes=100)
    _refused(_upload(api, other, texts("y" * 200)), 400, "quota", code="quota_bytes")
    _assert_nothing_half_stored(before)


class _StreamedMultipart(io.RawIOBase):
    """A multipart body whose file holds one JSONL line of ``fill_bytes`` bytes, produced as it is read: the test
    never holds the line in memory."""

    def __init__(self, boundary: str, fill_bytes: int) -> None:
        self._parts = [
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="bad_rows"\r\n\r\nreject_whole\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="long.jsonl"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
                '{"text": "'
            ).encode(),
            fill_bytes,
            f'"}}\n{{"text": "a normal record after it"}}\n\r\n--{boundary}--\r\n'.encode(),
        ]
        self.length = len(self._parts[0]) + fill_bytes + len(self._parts[2])

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while self._parts and (size < 0 or len(out) < size):
            part = self._parts[0]
            want = (size - len(out)) if size >= 0 else 1 << 20
            if isinstance(part, int):
                n = min(part, want, 1 << 20)
                out += b"a" * n
                self._parts[0] = part - n
                if self._parts[0] == 0:
                    self._parts.pop(0)
            else:
                out += part[:want]
                self._parts[0] = part[want:]
                if not self._parts[0]:
                    self._parts.pop(0)
        return bytes(out)


def test_a_jsonl_line_of_50_mb_is_refused_by_line_number(api: APIClient, datanet: Datanet) -> None:
    body = _StreamedMultipart("BoUnDaRy", 50 * MiB)
    before = _state()
    response = api.generic(
        "POST",
        reverse("datanets_api:contribution_upload", args=[datanet.slug]),
        content_type="multipart/form-data; boundary=BoUnDaRy",
        CONTENT_LENGTH=str(body.length),
        **{"wsgi.input": body},
    )
    _refused(response, 400, "line 1", code="bad_rows")
    _assert_nothing_half_stored(before, may_keep_file=True)


def test_hostile_json_bodies_are_refused(api: APIClient, datanet: Datanet) -> None:
    url = reverse("datanets_api:contribution_paste", args=[datanet.slug])
    before = _state()
    deep = b'{"records": [{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}"
    _refused(api.generic("POST", url, deep, content_type="application/json"), 400, "nested too deeply", code="too_deep")
    huge_number = b'{"records": [{"text": ' + b"9" * 1_000_000 + b"}]}"
    _refused(api.generic("POST", url, huge_number, content_type="application/json"), 400, "1,000,000 characters")
    _refused(api.generic("POST", url, b'{"records": [', content_type="application/json"), 400, "JSON parse error")
    too_big = b'{"text": "' + b"a" * (settings.JSON_MAX_BODY_BYTES + 1) + b'"}'
    _refused(api.generic("POST", url, too_big, content_type="application/json"), 413, code="too_large")
    _refused(api.post(url, {"records": [{"text": 12}]}, format="json"), 400, "line 1")
    lone_surrogate = b'{"records": [{"text": "\\ud800 a lone surrogate"}]}'
    _refused(api.generic("POST", url, lone_surrogate, content_type="application/json"), 400, "line 1")
    _refused(api.post(url, {"licence": "MIT"}, format="json"), 400, "records or text")
    _assert_nothing_half_stored(before, may_keep_file=True)


def test_a_description_with_a_script_is_kept_as_markdown_and_never_served_as_html(api: APIClient) -> None:
    description = "# About\n\n<script>alert(1)</script> <img src=x onerror=alert(1)> [x](javascript:alert(1))"
    response = api.post(
        reverse("datanets_api:datanet_create"), {"name": "Scripted", "description": description}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    assert body["description"] == description
    html = body["description_html"]
    assert "<script" not in html and "<img" not in html and "href" not in html
    assert "&lt;script&gt;" in html


def test_bad_datanet_settings_are_refused_field_by_field(api: APIClient) -> None:
    url = reverse("datanets_api:datanet_create")
    before = Datanet.objects.count()
    response = api.post(url, {"name": "x", "licence": "GPL-3.0", "tags": ["a" * 41]}, format="json")
    _refused(response, 400, "licence", "tags")
    assert set(response.json()["fields"]) == {"licence", "tags"}
    _refused(api.post(url, {"name": "   "}, format="json"), 400, "name")
    assert Datanet.objects.count() == before


def test_a_contribution_to_a_private_datanet_by_a_non_member_is_a_404(api: APIClient) -> None:
    private = DatanetFactory(visibility=Datanet.Visibility.PRIVATE)
    before = _state()
    response = _upload(api, private, texts("sneaking a record in"))
    _refused(response, 404, code="not_found")
    assert private.name not in response.content.decode()
    _assert_nothing_half_stored(before)


def test_a_curator_action_by_a_non_curator_is_refused_and_changes_nothing(api: APIClient) -> None:
    datanet = DatanetFactory()
    pending = submit(datanet)
    before = _state()
    decide = api.post(
        reverse("datanets_api:contribution_decide"),
        {"contribution_ids": [pending.pk], "action": "accept"},
        format="json",
    )
    _refused(decide, 403, "only the owner or a curator", code="permission_denied")
    exclude = api.post(
        reverse("datanets_api:record_exclude", args=[pending.records.first().pk]), {"reason": "x"}, format="json"
    )
    _refused(exclude, 403, "curator", code="permission_denied")
    _refused(api.post(reverse("datanets_api:snapshot_freeze", args=[datanet.slug])), 403, "freeze")
    _assert_nothing_half_stored(before)
    pending.refresh_from_db()
    assert pending.status == "pending"


def test_an_accepted_contribution_can_not_be_edited(datanet: Datanet) -> None:
    contribution = accepted(datanet, content=texts("accepted and frozen record", "another frozen record"))
    owner, author = APIClient(), APIClient()
    owner.force_authenticate(datanet.owner)
    author.force_authenticate(contribution.contributor)
    detail = reverse("datanets_api:contribution_detail", args=[contribution.pk])
    before = _state()
    record = contribution.records.first()
    exclude = owner.post(reverse("datanets_api:record_exclude", args=[record.pk]), {"reason": "x"}, format="json")
    _refused(exclude, 400, "accepted", "only a pending one")
    _refused(author.post(reverse("datanets_api:contribution_withdraw", args=[contribution.pk])), 400, "accepted")
    again = owner.post(
        reverse("datanets_api:contribution_decide"),
        {"contribution_ids": [contribution.pk], "action": "reject", "reason": "changed my mind"},
        format="json",
    )
    _refused(again, 400, "already accepted")
    for method in ("put", "patch", "delete"):
        _refused(getattr(author, method)(detail, {"licence": "MIT"}, format="json"), 405)
    _assert_nothing_half_stored(before)
    record.refresh_from_db()
    assert not record.excluded


def test_a_rejection_needs_a_reason(datanet: Datanet) -> None:
    pending = submit(datanet)
    owner = APIClient()
    owner.force_authenticate(datanet.owner)
    response = owner.post(
        reverse("datanets_api:contribution_decide"),
        {"contribution_ids": [pending.pk], "action": "reject"},
        format="json",
    )
    _refused(response, 400, "reason")
    assert response.json()["fields"] == {"reason": [response.json()["detail"].removeprefix("reason: ")]}


def test_token_authentication_works_and_a_bad_token_is_a_401(datanet: Datanet, contributor: Any) -> None:
    token = api_token_create(user=contributor)
    client = APIClient()
    url = reverse("datanets_api:contribution_upload", args=[datanet.slug])
    content = {"file": SimpleUploadedFile("t.jsonl", texts("sent with a token, several words"))}
    response = client.post(url, content, format="multipart", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 201 and response.json()["contributor"] == contributor.username
    bad = client.post(url, content, format="multipart", HTTP_AUTHORIZATION="Token not-a-token")
    _refused(bad, 401, "token")
    mine = client.get(reverse("datanets_api:contribution_list"), HTTP_AUTHORIZATION=f"Token {token.key}").json()
    assert [c["id"] for c in mine["results"]] == [response.json()["id"]]


def test_services_refusals_keep_their_message() -> None:
    # the API shows exactly what the service says: one wording for people, whatever the interface
    datanet = DatanetFactory(licence="CC0-1.0")
    api = APIClient()
    api.force_authenticate(UserFactory())
    response = _upload(api, datanet, texts("a record under the wrong licence"), licence="CC-BY-4.0")
    _refused(response, 400, "CC-BY-4.0 data can't join a CC0-1.0 Datanet")
    assert not services.selectors.contributions_of(user=datanet.owner).exists()
