"""Every JSON body goes through one guard (common.jsonguard): a hostile body is a 400 (413 when too large) in
the API's own error shape, and never reaches a recursive parser. Issue #11, "what was seen" 1 and 13."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import WalletChallenge
from accounts.services import api_token_create
from accounts.tests.factories import UserFactory
from common import jsonguard
from common.jsonguard import JsonLimits, JsonRefused
from datanets.models import Contribution, ContributionDecision
from datanets.tests.factories import DatanetFactory, submit, texts

DEEP = 200_000
LIMITS = JsonLimits(max_body_bytes=2 * 1024 * 1024, max_depth=72, max_string_chars=1000, max_number_chars=100)


def deep_body(depth: int = DEEP) -> bytes:
    return b'{"address": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.fixture
def high_recursion_limit() -> Iterator[None]:
    # what importing eth_account does to a web worker: the C decoder then overflows the C stack before it stops
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    yield
    sys.setrecursionlimit(old)


def _refused(raw: bytes, code: str, limits: JsonLimits = LIMITS) -> str:
    with pytest.raises(JsonRefused) as refused:
        jsonguard.loads(raw, limits)
    assert refused.value.code == code, refused.value.message
    return refused.value.message


# The guard itself


def test_it_measures_depth_without_recursion_ignoring_brackets_in_strings() -> None:
    assert jsonguard.json_depth(b'{"a": [1, {"b": "[[[{{{"}], "c": "\\"]]"}') == 3
    assert jsonguard.json_depth(b'"[[[') == 0  # an unterminated string hides what follows
    assert jsonguard.json_depth(b"[" * DEEP) == DEEP
    started = time.monotonic()
    assert jsonguard.json_depth(b'"' + b'\\"' * 1_000_000) == 0  # escaped quotes: still linear
    assert time.monotonic() - started < 2


def test_it_refuses_a_body_nested_200000_deep_even_with_a_raised_recursion_limit(high_recursion_limit: None) -> None:
    message = _refused(deep_body(), "too_deep")
    assert "200,001 levels" in message and "at most 72" in message


def test_it_reads_what_json_reads_within_the_limits() -> None:
    body = {"a": [1, -2, 3.5, True, None, "x" * 1000, {"b": [[[]]]}], "big": 2**63 - 1, "small": -(2**63)}
    assert jsonguard.loads(json.dumps(body).encode(), LIMITS) == body
    assert jsonguard.loads(b"[" * 72 + b"]" * 72, LIMITS) is not None
    # the length limit counts characters, not the escapes that spell them
    assert jsonguard.loads(b'["' + b"\\u00e9" * 1000 + b'"]', LIMITS) == ["\u00e9" * 1000]


@pytest.mark.parametrize(
    ("raw", "code", "words"),
    [
        (b'{"id": 9223372036854775808}', "integer_out_of_range", "between -2^63 and 2^63-1"),
        (b'{"id": -9223372036854775809}', "integer_out_of_range", "out of range"),
        (b'{"w": 1e400}', "not_finite", "1e400"),
        (b'{"w": -1e400}', "not_finite", "finite"),
        (b'{"w": NaN}', "not_finite", "NaN"),
        (b'{"w": Infinity}', "not_finite", "Infinity"),
        (b'{"w": -Infinity}', "not_finite", "Infinity"),
        (b'{"n": 1' + b"0" * 100 + b"}", "number_too_long", "101 characters"),
        (b'{"n": 0.' + b"0" * 100 + b"1}", "number_too_long", "at most 100"),
        (b'{"s": "' + b"x" * 1001 + b'"}', "string_too_long", "1,001 characters"),
        (b'{"' + b"k" * 1001 + b'": 1}', "string_too_long", "at most 1,000"),
        (b"[" * 73 + b"]" * 73, "too_deep", "at most 72"),
        (b'{"s": "\xff"}', "not_utf8", "UTF-8"),
        (b'{"a": [', "parse_error", "JSON parse error"),
    ],
)
def test_it_refuses_each_limit_with_its_own_code_and_words(raw: bytes, code: str, words: str) -> None:
    assert words in _refused(raw, code)


def test_a_refusal_names_where_the_value_is() -> None:
    assert _refused(b'{"parents": [{"version": 1}, {"weight": 1e999}]}', "not_finite").startswith("parents[1].weight: ")
    assert _refused(b'[1, "' + b"x" * 1001 + b'"]', "string_too_long").startswith("[1]: ")
    assert _refused(b'{"a": {"b": NaN}, "c": 1e999}', "not_finite").startswith("a.b: NaN")


def test_a_body_over_the_size_limit_is_a_413_before_it_is_parsed() -> None:
    with pytest.raises(JsonRefused) as refused:
        small = JsonLimits(max_body_bytes=1000, max_depth=5, max_string_chars=9, max_number_chars=9)
        jsonguard.loads(b"[" * 3000, small)
    assert (refused.value.status, refused.value.code) == (413, "too_large")


# Through every kind of API


@pytest.fixture
def user(db: None) -> Any:
    return UserFactory()


@pytest.fixture
def token_client(user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=user).key}")
    return client


def _post(client: APIClient, url: str, body: bytes, **headers: str) -> Any:
    return client.generic("POST", url, body, content_type="application/json", **headers)


def test_a_deep_body_to_the_wallet_challenge_is_a_400_in_the_drf_shape(
    token_client: APIClient, high_recursion_limit: None
) -> None:
    response = _post(token_client, reverse("api_wallet_challenge"), deep_body())
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "too_deep" and "nested too deeply" in response.json()["detail"]
    assert not WalletChallenge.objects.exists()


def test_a_deep_body_to_chat_completions_is_a_400_in_openais_shape(user: Any, high_recursion_limit: None) -> None:
    key = api_token_create(user=user).key
    body = b'{"model": "mv-1", "messages": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    response = _post(APIClient(), "/v1/chat/completions", body, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "too_deep" and "nested too deeply" in error["message"]
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("fragment", "code"),
    [(b"1e400", "not_finite"), (b"NaN", "not_finite"), (b"99999999999999999999999", "integer_out_of_range")],
)
def test_non_finite_and_out_of_range_numbers_are_refused_on_v1(user: Any, fragment: bytes, code: str) -> None:
    key = api_token_create(user=user).key
    body = b'{"model": "mv-1", "messages": [{"role": "user", "content": "hi"}], "temperature": ' + fragment + b"}"
    response = _post(APIClient(), "/v1/chat/completions", body, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == code


def test_a_body_without_a_length_is_stopped_at_the_limit_on_v1(user: Any, settings: Any) -> None:
    settings.JSON_MAX_BODY_BYTES = 1000
    key = api_token_create(user=user).key
    body = json.dumps({"model": "mv-1", "prompt": "x" * 5000}).encode()
    # chunked: no Content-Length to refuse it by, so the parser stops reading at the limit
    response = APIClient().generic(
        "POST", "/v1/completions", body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}",
        CONTENT_LENGTH="",
    )  # fmt: skip
    assert response.status_code in (400, 413), response.content
    assert "error" in response.json()


def test_deciding_on_contribution_2_to_the_63_is_a_400_with_a_message_not_a_500(db: None) -> None:
    # given: a curator and a pending contribution
    datanet = DatanetFactory()
    contribution = submit(datanet, UserFactory(), texts("one record of several words"))
    client = APIClient()
    client.force_authenticate(datanet.owner)
    url = reverse("datanets_api:contribution_decide")
    decisions = ContributionDecision.objects.count()
    # when
    response = client.post(url, {"contribution_ids": [contribution.pk, 2**63], "action": "accept"}, format="json")
    # then
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "integer_out_of_range"
    assert "2^63-1" in response.json()["detail"]
    contribution.refresh_from_db()
    assert contribution.status == Contribution.Status.PENDING
    assert ContributionDecision.objects.count() == decisions


@pytest.mark.parametrize("path_id", ["9223372036854775808", "99999999999999999999999999"])
def test_ids_beyond_the_database_range_in_urls_are_a_404(token_client: APIClient, path_id: str) -> None:
    for url in (
        f"/api/datanets/contributions/{path_id}/",
        f"/api/modelfactory/jobs/{path_id}/",
        f"/api/modelfactory/versions/{path_id}/",
        f"/api/wallets/{path_id}/",
    ):
        method = token_client.delete if "wallets" in url else token_client.get
        assert method(url).status_code == 404, url


def test_in_lookups_ignore_ids_beyond_the_database_range(db: None) -> None:
    contribution = submit(DatanetFactory(), UserFactory(), texts("one record of several words"))
    assert list(Contribution.objects.filter(pk__in=[contribution.pk, 2**63, -(2**63) - 1])) == [contribution]
    assert not Contribution.objects.filter(pk__in=[2**64]).exists()


def test_the_curation_form_with_an_id_beyond_the_database_range_is_not_a_500(client: Any, db: None) -> None:
    datanet = DatanetFactory()
    contribution = submit(datanet, UserFactory(), texts("one record of several words"))
    client.force_login(datanet.owner)
    response = client.post(
        reverse("datanets:curation_decide"), {"contribution": [str(2**63), str(10**30)], "action": "accept"}
    )
    assert response.status_code < 500
    contribution.refresh_from_db()
    assert contribution.status == Contribution.Status.PENDING


def test_a_deeply_nested_claim_proof_is_a_form_error(high_recursion_limit: None) -> None:
    from rewards.views import ClaimForm

    form = ClaimForm(data={"epoch": 1, "index": 0, "proof": "[" * 9_000 + "]" * 9_000})
    assert not form.is_valid()
    assert "JSON list of 0x-prefixed 32-byte hashes" in form.errors["proof"][0]
