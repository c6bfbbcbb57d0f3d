"""HTML form posts whose text is not valid UTF-8 are refused with a 400 that says so, and nothing is stored.

Django would decode them with U+FFFD in place of the bad bytes; ``openledger_web.middleware.FormEncodingMiddleware``
refuses them instead, for every HTML form (urlencoded and multipart), while the CSRF check keeps protecting them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from django.urls import reverse

from accounts.tests.factories import UserFactory
from datanets.models import Contribution, Datanet
from datanets.tests.factories import DatanetFactory
from inference.models import InferenceRun
from inference.tests.runs_support import clear_rate_limits
from inference.tests.test_ancestry import lineage_version
from inference.tests.test_views import ask_data
from modelfactory.models import ModelVersion
from modelfactory.tests.factories import BaseModelFactory, frozen_snapshot, instructions
from openledger_web.middleware import INVALID_UTF8_MESSAGE

pytestmark = pytest.mark.django_db

URLENCODED = "application/x-www-form-urlencoded"
PLACEHOLDER = "XXPLACEHOLDERXX"
BAD = [b"caf%E9", b"%FF%FE", b"caf\xe9"]  # percent-encoded Latin-1, bytes no UTF-8 has, a raw Latin-1 byte


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    clear_rate_limits()


@pytest.fixture
def asker() -> Any:
    return UserFactory(username="form-asker")


@pytest.fixture
def version() -> ModelVersion:
    """A published model version anyone may ask."""
    builder = UserFactory(username="form-builder")
    snapshot = frozen_snapshot(owner=builder, records=instructions(2), name="Form facts")
    base = BaseModelFactory(name="Form-Base")
    return lineage_version(owner=builder, base_model=base, name="form-v1", snapshots=[snapshot])


def csrf_client(user: Any, page: str) -> tuple[Client, str]:
    """A client that enforces CSRF like a browser, signed in, with the token the form page gave it."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get(page).status_code == 200
    return client, client.cookies["csrftoken"].value


def urlencoded(data: dict[str, Any], field: str, raw: bytes) -> bytes:
    """The form as a browser sends it, with ``raw`` (already percent-encoded, or not) as the value of ``field``."""
    return urlencode({**data, field: PLACEHOLDER}, doseq=True).encode().replace(PLACEHOLDER.encode(), raw)


def assert_refused_for_encoding(response: Any) -> None:
    assert response.status_code == 400
    assert INVALID_UTF8_MESSAGE in response.content.decode()


# -- urlencoded ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", BAD)
def test_the_ask_form_refuses_text_that_is_not_utf8(asker: Any, version: ModelVersion, raw: bytes) -> None:
    client, token = csrf_client(asker, reverse("inference:ask"))
    data = {**ask_data(version, mode="prompt"), "csrfmiddlewaretoken": token}

    response = client.generic("POST", reverse("inference:submit"), urlencoded(data, "prompt", raw), URLENCODED)

    assert_refused_for_encoding(response)
    assert response["Content-Type"].startswith("text/plain")
    assert InferenceRun.objects.count() == 0


def test_a_bad_key_is_refused_too(asker: Any, version: ModelVersion) -> None:
    client, token = csrf_client(asker, reverse("inference:ask"))
    body = urlencode({**ask_data(version, mode="prompt", prompt="hello"), "csrfmiddlewaretoken": token}, doseq=True)

    response = client.generic("POST", reverse("inference:submit"), body.encode() + b"&x%C3%28=1", URLENCODED)

    assert_refused_for_encoding(response)
    assert InferenceRun.objects.count() == 0


def test_the_ask_form_takes_non_ascii_utf8_as_before(asker: Any, version: ModelVersion) -> None:
    client, token = csrf_client(asker, reverse("inference:ask"))
    data = {**ask_data(version, mode="prompt", prompt="café 数据 😀"), "csrfmiddlewaretoken": token}

    response = client.post(reverse("inference:submit"), data)

    assert response.status_code == 302
    assert InferenceRun.objects.get().prompt == "café 数据 😀"


def test_the_ask_chat_takes_non_ascii_utf8_as_before(asker: Any, version: ModelVersion) -> None:
    client, token = csrf_client(asker, reverse("inference:ask"))
    data = {**ask_data(version, message_content=["Qu'est-ce que c'est, café 数据?"]), "csrfmiddlewaretoken": token}

    response = client.post(reverse("inference:submit"), data)

    assert response.status_code == 302
    assert InferenceRun.objects.get().messages[-1]["content"] == "Qu'est-ce que c'est, café 数据?"


def test_an_htmx_post_gets_a_fragment_it_can_show(asker: Any, version: ModelVersion) -> None:
    client, token = csrf_client(asker, reverse("inference:ask"))
    data = {**ask_data(version, mode="prompt"), "csrfmiddlewaretoken": token}

    response = client.generic(
        "POST", reverse("inference:submit"), urlencoded(data, "prompt", b"%FF"), URLENCODED, HTTP_HX_REQUEST="true"
    )

    assert_refused_for_encoding(response)
    assert response["Content-Type"].startswith("text/html") and response["HX-Reswap"] == "innerHTML"
    assert 'role="alert"' in response.content.decode()
    assert InferenceRun.objects.count() == 0


def test_creating_a_datanet_refuses_text_that_is_not_utf8(asker: Any) -> None:
    client, token = csrf_client(asker, reverse("datanets:create"))
    data = {
        "name": "Placeholder",
        "record_type": "text",
        "licence": "CC-BY-4.0",
        "visibility": "public",
        "contribution_policy": "open",
        "daily_quota_mb": "10",
        "daily_quota_files": "20",
        "csrfmiddlewaretoken": token,
    }
    before = Datanet.objects.count()

    response = client.generic("POST", reverse("datanets:create"), urlencoded(data, "name", b"Caf%E9 facts"), URLENCODED)

    assert_refused_for_encoding(response)
    assert Datanet.objects.count() == before
    # the same form in good UTF-8 goes through
    response = client.post(reverse("datanets:create"), {**data, "name": "Café facts 数据"})
    assert response.status_code == 302 and Datanet.objects.filter(name="Café facts 数据").exists()


def test_without_the_csrf_token_invalid_utf8_is_not_accepted(asker: Any, version: ModelVersion) -> None:
    client, _token = csrf_client(asker, reverse("inference:ask"))
    body = urlencoded(ask_data(version, mode="prompt"), "prompt", b"caf%E9")

    response = client.generic("POST", reverse("inference:submit"), body, URLENCODED)

    assert response.status_code in (400, 403)
    assert InferenceRun.objects.count() == 0
    # and good UTF-8 without the token is the CSRF check's 403, as before
    good = urlencoded(ask_data(version, mode="prompt"), "prompt", b"caf%C3%A9")
    assert client.generic("POST", reverse("inference:submit"), good, URLENCODED).status_code == 403
    assert InferenceRun.objects.count() == 0


def test_an_oversized_form_still_gets_djangos_own_refusal(asker: Any, version: ModelVersion, settings: Any) -> None:
    client, token = csrf_client(asker, reverse("inference:ask"))
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    data = {**ask_data(version, mode="prompt", prompt="a" * 2000), "csrfmiddlewaretoken": token}

    response = client.post(reverse("inference:submit"), data)

    assert response.status_code == 400 and INVALID_UTF8_MESSAGE not in response.content.decode()
    assert InferenceRun.objects.count() == 0


def test_the_api_is_left_to_its_own_errors(asker: Any) -> None:
    """A form-encoded post under /api/ is not answered by the middleware (the API has its own parsers)."""
    client = Client()
    client.force_login(asker)
    response = client.generic(
        "POST", reverse("datanets_api:datanet_create"), b"name=caf%E9", URLENCODED, HTTP_ACCEPT="application/json"
    )
    assert INVALID_UTF8_MESSAGE not in response.content.decode()


# -- multipart ----------------------------------------------------------------------------------------------------


def multipart(data: dict[str, Any], field: str, raw: bytes) -> bytes:
    """``data`` as a multipart body, with the raw bytes ``raw`` as the value of the text field ``field``."""
    return encode_multipart(BOUNDARY, {**data, field: PLACEHOLDER}).replace(PLACEHOLDER.encode(), raw)


def test_a_multipart_form_refuses_text_that_is_not_utf8(asker: Any, version: ModelVersion) -> None:
    """The CSRF check parses this form: the middleware parses it a moment earlier, strictly."""
    client, token = csrf_client(asker, reverse("inference:ask"))
    data = {**ask_data(version, mode="prompt"), "csrfmiddlewaretoken": token}

    response = client.generic(
        "POST", reverse("inference:submit"), multipart(data, "prompt", b"caf\xe9"), MULTIPART_CONTENT
    )

    assert_refused_for_encoding(response)
    assert InferenceRun.objects.count() == 0
    good = client.generic(
        "POST", reverse("inference:submit"), multipart(data, "prompt", "café 数据".encode()), MULTIPART_CONTENT
    )
    assert good.status_code == 302 and InferenceRun.objects.get().prompt == "café 数据"


def test_the_contribute_upload_refuses_pasted_text_that_is_not_utf8(asker: Any) -> None:
    """The contribute view is csrf_exempt and adds its own upload handler before it parses: the refusal comes from
    its own parse, and the file beside the bad field is not stored either."""
    datanet = DatanetFactory(owner=asker)
    url = reverse("datanets:contribute", args=[datanet.slug])
    client, token = csrf_client(asker, url)
    data = {"licence": "CC-BY-4.0", "bad_rows": "reject_whole", "csrfmiddlewaretoken": token}
    good_file = b'{"text": "a record of several words"}\n'
    body = encode_multipart(BOUNDARY, {**data, "text": PLACEHOLDER}).replace(
        PLACEHOLDER.encode(), b'{"text": "caf\xe9 au lait"}'
    )
    # a file part in front of the bad field
    file_part = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="good.jsonl"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + good_file
        + b"\r\n"
    )
    body = file_part + body

    response = client.generic("POST", url, body, MULTIPART_CONTENT)

    assert_refused_for_encoding(response)
    assert Contribution.objects.count() == 0
    # the same upload in good UTF-8 is stored as before
    good_body = file_part + encode_multipart(BOUNDARY, {**data, "text": '{"text": "café au lait, 数据 words"}'})
    response = client.generic("POST", url, good_body, MULTIPART_CONTENT)
    assert response.status_code == 200, response.content.decode()[:2000]
    assert Contribution.objects.count() == 2
