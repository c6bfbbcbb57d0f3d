"""The pages and API calls that make an eth_call for whoever asks (the verify pages, a record proof's on-chain check)
count each client's calls against CHAIN_READ_RATE_LIMIT: beyond it a 429 with Retry-After and a sentence, before
the chain is asked. The chain is "away" here (nothing listens on the discard port), so a call that reaches it answers
503 and one stopped by the limit answers 429: which of the two comes back shows whether the chain was asked."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, RequestFactory
from django.urls import reverse
from rest_framework.test import APIClient

from common import ratelimit
from datanets import services as datanet_services
from datanets.tests.factories import DatanetFactory, accepted
from modelfactory.tests.factories import BaseModelFactory, UserFactory, frozen_snapshot, instructions

from .test_ancestry import lineage_version

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _tight_limit(settings: Any) -> None:
    settings.EVM_RPC_URL = "http://127.0.0.1:9"
    settings.CHAIN_READ_RATE_LIMIT = "2/minute"
    cache.clear()  # the windows live in the cache, which outlives a test's database rows


def _signed_in(user: Any, client: Client) -> Client:
    client.force_login(user)
    return client


def test_the_verify_pages_stop_asking_the_chain_past_the_allowance_and_say_when_to_come_back() -> None:
    builder = UserFactory()
    version = lineage_version(owner=builder, base_model=BaseModelFactory(), name="limited")
    snapshot = frozen_snapshot(owner=builder, records=instructions(2), name="Open")
    anonymous = Client()
    assert anonymous.get(reverse("inference:verify_version", args=[version.pk])).status_code == 503
    assert anonymous.get(reverse("inference:verify_snapshot", args=[snapshot.pk])).status_code == 503
    refused = anonymous.get(reverse("inference:verify_version", args=[version.pk]))
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert "Too many requests: at most 2/minute" in refused.content.decode()
    assert 'data-verified="error"' in refused.content.decode()
    # another client has its own allowance: a signed-in user is counted as themself, not by address
    signed_in = _signed_in(UserFactory(), Client())
    assert signed_in.get(reverse("inference:verify_snapshot", args=[snapshot.pk])).status_code == 503


def test_a_record_proofs_chain_check_is_limited_on_the_page_and_in_the_api() -> None:
    datanet = DatanetFactory()
    record = accepted(datanet).records.first()
    snapshot = datanet_services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    args = [datanet.slug, snapshot.number, record.pk]
    page, api = Client(), APIClient()
    assert page.post(reverse("datanets:proof_verify", args=args)).status_code == 503
    assert api.post(reverse("datanets_api:record_proof_verify", args=args)).status_code == 503
    refused_page = page.post(reverse("datanets:proof_verify", args=args))
    assert refused_page.status_code == 429 and "Try again in" in refused_page.content.decode()
    refused_api = api.post(reverse("datanets_api:record_proof_verify", args=args))
    assert refused_api.status_code == 429 and int(refused_api["Retry-After"]) >= 1
    body = refused_api.json()
    assert body["code"] == "throttled" and "at most 2/minute" in body["detail"]


def test_the_client_is_the_user_else_the_address_and_forwarded_addresses_count_only_behind_our_proxy(
    settings: Any,
) -> None:
    request = RequestFactory().get("/", REMOTE_ADDR="203.0.113.5", HTTP_X_FORWARDED_FOR="198.51.100.1, 192.0.2.9")
    request.user = AnonymousUser()
    assert ratelimit.client_key(request) == "ip:203.0.113.5"  # a forged header counts for nothing by default
    settings.TRUST_X_FORWARDED_FOR = True
    assert ratelimit.client_key(request) == "ip:192.0.2.9"  # behind our proxy: the entry it appended
    user = UserFactory()
    request.user = user
    assert ratelimit.client_key(request) == f"user:{user.pk}"


@pytest.mark.parametrize("rate", ["", "30", "30/fortnight", "-1/minute", "thirty/minute"])
def test_a_malformed_limit_names_its_setting(rate: str, settings: Any) -> None:
    settings.CHAIN_READ_RATE_LIMIT = rate
    with pytest.raises(ImproperlyConfigured, match="CHAIN_READ_RATE_LIMIT must look like '60/minute'"):
        ratelimit.chain_read_limited(RequestFactory().get("/"))
