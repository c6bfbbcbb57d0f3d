"""Absolute caps on what one upload may make the server read, whatever its size on the wire (issue 11, item 2):
``UPLOAD_MAX_EXPANDED_BYTES`` (blank and whitespace-only lines count, and a zip's entries as they expand) and
``UPLOAD_MAX_PARSE_SECONDS``. Each refusal is a 4xx with a message that says which limit, and stores nothing."""

from __future__ import annotations

import io
import random
import zipfile
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from datanets.models import Contribution, Record, StagedRecord

from .factories import DatanetFactory, jsonl, submit

pytestmark = pytest.mark.django_db

MiB = 1024 * 1024


def _zipped(name: str, content: bytes) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, content)
    return archive.getvalue()


def _upload_api(datanet: Any, name: str, content: bytes) -> Any:
    client = APIClient()
    client.force_authenticate(UserFactory())
    return client.post(
        reverse("datanets_api:contribution_upload", args=[datanet.slug]),
        {"file": SimpleUploadedFile(name, content), "bad_rows": "exclude_bad"},
        format="multipart",
    )


def test_blank_lines_count_toward_the_expanded_bytes_cap(settings: Any) -> None:
    settings.UPLOAD_MAX_EXPANDED_BYTES = 1 * MiB
    datanet = DatanetFactory(record_type="text")
    padded = jsonl({"text": "one real record"}) + b" \n" * MiB + jsonl({"text": "and another"})
    with pytest.raises(ValidationError, match="more than 1 MB of text \\(blank lines included") as refused:
        submit(datanet, content=padded, bad_rows="exclude_bad")
    assert refused.value.code == "too_large"
    response = _upload_api(datanet, "padded.jsonl", padded)
    assert response.status_code == 413 and "blank lines included" in str(response.json())
    assert not Contribution.objects.exists() and not Record.objects.exists() and not StagedRecord.objects.exists()
    settings.UPLOAD_MAX_EXPANDED_BYTES = 4 * MiB
    assert submit(datanet, content=padded, bad_rows="exclude_bad").record_count == 2


def test_a_zip_is_held_to_the_cap_by_what_its_entries_expand_to(settings: Any) -> None:
    settings.UPLOAD_MAX_EXPANDED_BYTES = 1 * MiB
    datanet = DatanetFactory(record_type="text")
    rng = random.Random(5)
    padding = b"\n".join(rng.choices([b"", b"", b"", b" ", b"\t", b"  "], k=2 * MiB))  # 2:1 to 100:1, no bomb
    archive = _zipped("data.jsonl", jsonl({"text": "one real record"}) + padding + b"\n")
    assert len(archive) < MiB  # under the cap on the wire
    response = _upload_api(datanet, "padded.zip", archive)
    assert response.status_code == 413 and "a zip's entries once expanded" in str(response.json())
    assert not Contribution.objects.exists()


def test_an_upload_that_takes_too_long_to_read_is_refused_with_a_clear_message(settings: Any) -> None:
    settings.UPLOAD_MAX_PARSE_SECONDS = 1
    datanet = DatanetFactory(record_type="text", daily_quota_bytes=2**40)
    # tens of millions of blank lines: each costs the parser a little, and they add up to seconds
    slow = jsonl({"text": "a record"}) + b"\n" * (80 * MiB)
    response = _upload_api(datanet, "slow.jsonl", slow)
    assert response.status_code == 400, response.json()
    assert "took more than 1 s" in str(response.json()) and "split it into smaller uploads" in str(response.json())
    assert not Contribution.objects.exists() and not StagedRecord.objects.exists()
