"""Governance's deployment gate: with it on, the OpenAI-compatible API and the ask page serve a model version to
anyone but its owner only once ModelRegistry approved its manifest hash (a staked deployment proposal passed and
was executed); until then a 403 that says so. The owner is always served; with the gate off nothing changes. Real
anvil, real governance contracts, proposals relayed through the ledger's outbox."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from accounts.services import api_token_create
from datanets.tests.factories import wallet
from inference.api import RUN_HEADER
from inference.models import InferenceRun
from ledger import governance
from ledger.tests.gov_flow import enact, parameters_call, short_governance, voter
from modelfactory.tests.factories import UserFactory, default_base

from .runs_support import clear_rate_limits, served_version

pytestmark = [pytest.mark.chain, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    clear_rate_limits()


@pytest.fixture
def owner() -> Any:
    return UserFactory()


@pytest.fixture
def asker() -> Any:
    return UserFactory()


@pytest.fixture
def version(owner) -> Any:
    return served_version(owner=owner, base_model=default_base(), adapter=None, name="lantern-v1", published=True)


def api(user: Any, version: Any) -> Any:
    """A streamed chat completion by ``user``: the answer is queued and its stream opened (status 200) at once."""
    body = {"model": f"mv-{version.pk}", "messages": [{"role": "user", "content": "What burns?"}], "stream": True}
    token = api_token_create(user=user).key
    return Client().post(
        "/v1/chat/completions", data=json.dumps(body), content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )  # fmt: skip


def ask(user: Any, version: Any) -> Any:
    client = Client()
    client.force_login(user)
    data = {
        "version": version.pk, "mode": "chat", "message_role": ["user"], "message_content": ["What burns?"],
        "temperature": "0", "top_p": "1", "max_new_tokens": "16", "stop": "", "seed": "",
    }  # fmt: skip
    return client.post(reverse("inference:submit"), data)


def ask_page(user: Any, version: Any) -> str:
    client = Client()
    client.force_login(user)
    response = client.get(reverse("inference:ask"), {"version": version.pk})
    assert response.status_code == 200
    return response.content.decode()


def assert_served(user: Any, version: Any) -> None:
    assert "data-awaits-approval" not in ask_page(user, version)
    runs = InferenceRun.objects.filter(user=user, version=version).count()
    response = api(user, version)
    assert response.status_code == 200, response.content
    assert InferenceRun.objects.filter(user=user, version=version, public_id=response[RUN_HEADER]).exists()
    page = ask(user, version)
    assert page.status_code == 302, page.content.decode()[:2000]
    assert InferenceRun.objects.filter(user=user, version=version).count() == runs + 2
    clear_rate_limits()


def assert_awaiting_approval(user: Any, version: Any) -> None:
    runs = InferenceRun.objects.count()
    response = api(user, version)
    assert response.status_code == 403
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["type"], error["param"]) == (
        "awaiting_governance_approval",
        "permission_error",
        "model",
    )
    assert "awaits governance approval" in error["message"]
    page = ask(user, version)
    assert page.status_code == 403
    assert f"The model version {version.pk} (lantern-v1) awaits governance approval" in page.content.decode()
    assert InferenceRun.objects.count() == runs
    assert "data-awaits-approval" in ask_page(user, version)  # said as soon as it is picked, too


def test_with_the_gate_on_a_version_is_served_to_others_only_after_a_deployment_proposal_approves_it(
    chain_settings, settings, anvil, owner, asker, version
) -> None:
    # given: governance deployed with the gate on
    gov = short_governance(settings, GOVERNANCE_DEPLOYMENT_GATE=True)
    assert governance.parameters().deployment_gate

    # then: refused to another user, served to its owner
    assert_awaiting_approval(asker, version)
    assert_served(owner, version)

    # when: its builder proposes its deployment, bonds the stake with a signed permit, and the proposal is executed
    key = voter(gov, anvil)
    wallet(owner, key.address)
    deploy = governance.deployment_calldata(version.manifest_hash)
    enact(anvil, key, gov.registry_address, deploy, f"Deploy {version.name}", bond=version.manifest_hash)

    # then: served to the other user too
    assert governance.is_approved(version.manifest_hash)
    assert_served(asker, version)
    assert_served(owner, version)


def test_a_gate_turned_on_by_a_proposal_refuses_an_unapproved_version_to_others_from_then_on(
    chain_settings, settings, anvil, owner, asker, version
) -> None:
    # given: the gate off, as deployed: nothing changes for anyone
    gov = short_governance(settings)
    assert not governance.parameters().deployment_gate
    assert_served(asker, version)

    # when
    key = voter(gov, anvil)
    enact(anvil, key, gov.parameters_address, parameters_call(gov, "setDeploymentGate", True), "Gate deployments")

    # then
    assert governance.parameters().deployment_gate
    assert_awaiting_approval(asker, version)
    assert_served(owner, version)


def test_with_the_gate_on_and_the_chain_away_an_approval_is_never_assumed(
    chain_settings, settings, anvil, owner, asker, version
) -> None:
    short_governance(settings, GOVERNANCE_DEPLOYMENT_GATE=True)
    assert governance.parameters().deployment_gate  # read once: the last value stays known
    anvil.stop()
    try:
        response = api(asker, version)
        page = ask(owner, version)
    finally:
        anvil.start()

    assert response.status_code == 503
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("governance_unavailable", "server_error")
    assert "the chain cannot be read to check it now" in error["message"]
    assert page.status_code == 302  # its owner needs no approval
    assert not InferenceRun.objects.filter(user=asker).exists()
