"""The governance API on a real anvil, used as a program would: messages asked for, signed with the wallet's key
(as eth_signTypedData_v4 would), relayed, polled; both kinds of proposal from preparation to execution; and every
hostile request a clear 4xx in the one error shape, with no GovernanceTransaction written and nothing sent."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import pytest
from django.urls import reverse
from eth_account import Account
from rest_framework.test import APIClient

from accounts.models import Wallet
from accounts.services import api_token_create
from accounts.tests.factories import UserFactory
from governance import indexer
from ledger import chain
from ledger import governance as ledger_governance
from ledger.models import GovernanceTransaction
from ledger.tests.gov import fund, governance_contracts, mine, sign, travel
from modelfactory.tests.factories import default_base, stand_in_version

pytestmark = [pytest.mark.chain, pytest.mark.django_db]

TOKEN = 10**18
# the protocol pool the contracts are deployed with: one address for the module, so that its tests share one
# deployment (ledger.tests.gov.governance_contracts); each starts with the pool holding nothing all the same
POOL = Account.create().address


@pytest.fixture
def gov(chain_settings, db, settings):
    settings.GOVERNANCE_VOTING_DELAY_BLOCKS = 1
    settings.GOVERNANCE_VOTING_PERIOD_BLOCKS = 20
    settings.GOVERNANCE_TIMELOCK_SECONDS = 60
    settings.GOVERNANCE_PROPOSAL_THRESHOLD = 10**15
    settings.GOVERNANCE_QUORUM_PERCENT = 4
    settings.GOVERNANCE_DEPLOYMENT_STAKE = 10**16
    settings.GOVERNANCE_STAKE_SLASH_BPS = 5000
    settings.GOVERNANCE_RELAY_RATE_LIMIT = "1000/hour"
    settings.REWARDS_POOL_ADDRESS = POOL
    return governance_contracts()


@dataclass
class Person:
    user: Any
    key: Any
    client: APIClient

    @property
    def address(self) -> str:
        return self.key.address


def person(name: str, gov: Any) -> Person:
    user = UserFactory(username=name)
    key = Account.create()
    Wallet.objects.create(user=user, address=key.address, chain_id=gov.chain_id)
    client = APIClient()
    client.force_authenticate(user)
    return Person(user, key, client)


def url(name: str, *args: Any) -> str:
    return reverse(f"governance_api:{name}", args=[str(a) for a in args])


def post(who: Person | APIClient, name: str, *args: Any, body: Any = None, expect: int = 200) -> Any:
    client = who.client if isinstance(who, Person) else who
    response = client.post(url(name, *args), body, format="json") if body is not None else client.post(url(name, *args))
    assert response.status_code == expect, response.content
    return response.json()


def get(client: APIClient, endpoint: str, *args: Any, expect: int = 200, **query: Any) -> Any:
    response = client.get(url(endpoint, *args), query)
    assert response.status_code == expect, response.content
    return response.json()


def confirmed(who: Person, relayed: dict[str, Any], timeout: float = 15) -> dict[str, Any]:
    """Poll the relayed transaction through the API until it is confirmed (the view checks the receipt)."""
    deadline = time.monotonic() + timeout
    while True:
        row = get(who.client, "transaction_detail", relayed["id"])
        if row["status"] not in ("pending", "submitted") or time.monotonic() > deadline:
            assert row["status"] == "confirmed", row
            return row
        ledger_governance.governance_dispatch()  # the beat: a row the node lost is sent again
        time.sleep(0.05)


def delegate_self(who: Person) -> None:
    typed = post(who, "delegation_message", body={"account": who.address, "delegatee": who.address})["typed_data"]
    body = {
        "account": who.address,
        "delegatee": who.address,
        "nonce": typed["message"]["nonce"],
        "expiry": typed["message"]["expiry"],
        "signature": sign(typed, who.key),
    }
    confirmed(who, post(who, "delegation_relay", body=body, expect=202))


def split_change(contributors: int, builder: int) -> dict[str, Any]:
    return {"name": "reward_split", "values": {"contributors_bps": contributors, "builder_bps": builder}}


def propose(who: Person, title: str, changes: list[dict[str, Any]]) -> dict[str, Any]:
    prepared = post(who, "proposal_prepare_parameters", body={"proposer": who.address, "title": title,
                                                              "changes": changes})  # fmt: skip
    relay = {k: prepared[k] for k in ("targets", "values", "calldatas", "description")}
    relay |= {"proposer": who.address, "signature": sign(prepared["typed_data"], who.key)}
    confirmed(who, post(who, "proposal_relay", body=relay, expect=202))
    indexer.index_to_head()
    return prepared


def vote(who: Person, proposal_id: str, support: int, expect: int = 202) -> dict[str, Any]:
    typed = post(who, "ballot", proposal_id, body={"account": who.address, "support": support})["typed_data"]
    body = {"account": who.address, "support": support, "signature": sign(typed, who.key)}
    answer = post(who, "vote", proposal_id, body=body, expect=expect)
    if expect == 202:
        confirmed(who, answer)
    return answer


@pytest.fixture
def voters(gov, anvil):
    alice, bob = person("alice", gov), person("bob", gov)
    fund({alice.key: TOKEN, bob.key: TOKEN // 10})
    delegate_self(alice)
    delegate_self(bob)
    mine(anvil, 1)
    return alice, bob


def test_a_parameter_proposal_lives_its_whole_life_through_the_api(gov, voters, anvil) -> None:
    alice, bob = voters
    anyone = APIClient()
    [power] = get(alice.client, "voting_power")
    assert (power["account"], power["votes"], power["delegate"]) == (alice.address, str(TOKEN), alice.address)

    prepared = propose(alice, "Pay builders more", [split_change(6000, 3000)])
    proposal_id = prepared["proposal_id"]
    assert prepared["actions"][0]["words"] == (
        "Set the reward split to 60.00 % for contributors, 30.00 % for the builder and 10.00 % for the pool"
    )
    assert prepared["typed_data"]["primaryType"] == "Proposal"
    assert prepared["typed_data"]["message"]["proposalId"] == proposal_id  # a string: JavaScript keeps every digit
    listed = get(anyone, "proposal_list", state="pending")
    assert [p["proposal_id"] for p in listed["results"]] == [proposal_id]
    assert get(anyone, "proposal_list", state="active")["count"] == 0
    assert get(anyone, "proposal_list", kind="parameters")["count"] == 1

    mine(anvil, 2)
    vote(alice, proposal_id, 1)
    vote(bob, proposal_id, 0)
    indexer.index_to_head()
    detail = get(anyone, "proposal_detail", proposal_id)
    assert (detail["state"], detail["chain_state"]) == ("active", "active")
    assert (detail["for_votes"], detail["against_votes"]) == (str(TOKEN), str(TOKEN // 10))
    assert detail["quorum_progress"]["reached"] is True
    assert [v["support"] for v in detail["votes"]] == ["for", "against"]
    assert detail["timeline"][0]["what"] == "Proposed" and detail["stake"] is None

    mine(anvil, 25)
    confirmed(bob, post(bob, "proposal_queue", proposal_id, expect=202))
    early = post(bob, "proposal_execute", proposal_id, expect=409)
    assert early["code"] == "not_ready" and "delay is not over" in early["detail"]
    travel(anvil, 61)
    executed = post(bob, "proposal_execute", proposal_id, expect=202)
    confirmed(bob, executed)
    indexer.index_to_head()

    now = {p["name"]: p for p in get(anyone, "parameter_list")["parameters"]}
    assert (now["contributorsBps"]["value"], now["contributorsBps"]["display"]) == ("6000", "60.00 %")
    assert now["contributorsBps"]["changed"]["proposal_id"] == proposal_id
    history = get(anyone, "parameter_history", name="builderBps")["results"]
    assert [(c["old_value"], c["new_value"], c["proposal_id"]) for c in history] == [
        ("2000", "3000", proposal_id),
        ("0", "2000", None),
    ]
    detail = get(anyone, "proposal_detail", proposal_id)
    assert detail["state"] == "executed" and detail["timeline"][-1]["what"] == "Executed"


def test_a_deployment_proposal_bonds_its_stake_and_approves_the_version_through_the_api(gov, voters, anvil) -> None:
    alice, bob = voters
    version = stand_in_version(owner=bob.user, base_model=default_base(), name="bob-v1")
    prepared = post(bob, "proposal_prepare_deployment", body={"proposer": bob.address, "version_id": version.pk})
    assert prepared["kind"] == "deployment" and prepared["stake"] == str(10**16)
    relay = {k: prepared[k] for k in ("targets", "values", "calldatas", "description")}
    relay |= {"proposer": bob.address, "signature": sign(prepared["typed_data"], bob.key)}
    confirmed(bob, post(bob, "proposal_relay", body=relay, expect=202))
    indexer.index_to_head()
    proposal_id = prepared["proposal_id"]

    # someone else's version: hidden while unpublished; once published they may see it, not propose it
    post(alice, "proposal_prepare_deployment", body={"proposer": alice.address, "version_id": version.pk}, expect=404)
    version.published = True
    version.save(update_fields=["published"])
    refused = post(alice, "proposal_prepare_deployment", body={"proposer": alice.address, "version_id": version.pk},
                   expect=403)  # fmt: skip
    assert refused["code"] == "forbidden"

    permit = post(bob, "stake_permit", proposal_id, body={"account": bob.address})["typed_data"]
    assert permit["primaryType"] == "Permit" and permit["message"]["value"] == str(10**16)
    body = {"account": bob.address, "deadline": permit["message"]["deadline"], "signature": sign(permit, bob.key)}
    confirmed(bob, post(bob, "stake_bond", proposal_id, body=body, expect=202))
    again = post(bob, "stake_bond", proposal_id, body=body, expect=409)
    assert again["code"] == "already_bonded"  # checked before the signature (which was used, too)

    mine(anvil, 2)
    vote(alice, proposal_id, 1)
    mine(anvil, 25)
    confirmed(alice, post(alice, "proposal_queue", proposal_id, expect=202))
    travel(anvil, 61)
    confirmed(alice, post(alice, "proposal_execute", proposal_id, expect=202))
    indexer.index_to_head()
    ledger_governance.rules_changed()

    assert ledger_governance.is_approved(version.manifest_hash)
    detail = get(APIClient(), "proposal_detail", proposal_id)
    assert detail["stake"]["status"] == "returned" and detail["model_version"] == version.pk
    assert detail["actions"][0]["words"].startswith("Approve model version")


# Hostile input: each refused in words, nothing written, nothing sent


class Unchanged:
    """Neither a GovernanceTransaction row written nor a transaction sent from the server's signer."""

    def __init__(self, anvil: Any) -> None:
        self.anvil = anvil

    def nonce(self) -> int:
        return int(self.anvil.rpc("eth_getTransactionCount", chain.signer().address, "pending"), 16)

    def __enter__(self) -> Unchanged:
        self.rows, self.sent = GovernanceTransaction.objects.count(), self.nonce()
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            assert GovernanceTransaction.objects.count() == self.rows
            assert self.nonce() == self.sent


def refused(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) >= {"detail", "code"} and body["detail"]
    if code is not None:
        assert body["code"] == code, body
    return body


def test_writes_need_a_signed_in_user_and_their_own_wallet(gov, voters, anvil) -> None:
    alice, bob = voters
    anonymous = APIClient()
    with Unchanged(anvil):
        for name in ("delegation_message", "delegation_relay", "proposal_prepare_parameters", "proposal_relay"):
            refused(anonymous.post(url(name), {"account": alice.address}, format="json"), 401)
        refused(anonymous.get(url("voting_power")), 401)
        typed = post(alice, "delegation_message", body={"account": alice.address, "delegatee": bob.address})
        message = typed["typed_data"]["message"]
        stolen = {
            "account": alice.address,
            "delegatee": bob.address,
            "nonce": message["nonce"],
            "expiry": message["expiry"],
            "signature": sign(typed["typed_data"], alice.key),
        }
        body = refused(bob.client.post(url("delegation_relay"), stolen, format="json"), 403, "not_your_wallet")
        assert alice.address in body["detail"] and "link it on your profile" in body["detail"]
        asked = {"account": alice.address, "delegatee": bob.address}
        refused(bob.client.post(url("delegation_message"), asked, format="json"), 403, "not_your_wallet")
        proposal = {"proposer": alice.address, "title": "Mine", "changes": [split_change(5000, 3000)]}
        refused(bob.client.post(url("proposal_prepare_parameters"), proposal, format="json"), 403, "not_your_wallet")


def test_a_session_needs_its_csrf_token_and_an_api_token_works(gov, voters, anvil) -> None:
    alice, _ = voters
    session = APIClient(enforce_csrf_checks=True)
    session.force_login(alice.user)
    body = {"account": alice.address, "delegatee": alice.address}
    with Unchanged(anvil):
        refused(session.post(url("delegation_message"), body, format="json"), 403, "permission_denied")
    token = APIClient(HTTP_AUTHORIZATION=f"Token {api_token_create(user=alice.user).key}")
    answer = token.post(url("delegation_message"), body, format="json")
    assert answer.status_code == 200 and answer.json()["typed_data"]["primaryType"] == "Delegation"


def test_malformed_oversized_and_mistyped_bodies_are_refused(gov, voters, anvil) -> None:
    alice, _ = voters
    client = alice.client
    good = {"account": alice.address, "delegatee": alice.address, "nonce": "1", "expiry": str(int(time.time()) + 60),
            "signature": "0x" + "11" * 65}  # fmt: skip
    with Unchanged(anvil):
        raw = lambda text: client.post(url("delegation_relay"), text, content_type="application/json")  # noqa: E731
        refused(raw("{not json"), 400, "parse_error")
        refused(raw("[" * 50 + "]" * 50), 400, "too_deep")
        refused(raw(json.dumps({**good, "padding": "x" * 600_000})), 413, "too_large")
        largest = {"proposer": alice.address, "targets": [gov.parameters_address] * 10, "values": ["0"] * 10,
                   "calldatas": ["0x" + "ab" * 2047] * 10, "description": "\U0001f600" * 20_000,
                   "signature": "0x" + "11" * 65}  # fmt: skip
        answer = client.post(url("proposal_relay"), json.dumps(largest), content_type="application/json")
        refused(answer, 400, "bad_signature")  # read whole, checked, refused for its made-up signature only
        refused(raw(json.dumps({**good, "nonce": 2**70})), 400, "integer_out_of_range")  # uint256s go as strings
        refused(client.post(url("delegation_relay"), "a=b", content_type="application/x-www-form-urlencoded"), 415)
        for field, value in [
            ("nonce", -1),
            ("nonce", 1.5),
            ("nonce", "0x10"),
            ("expiry", True),
            ("account", "alice"),
            ("delegatee", 12),
            ("signature", "0x" + "11" * 66),
            ("signature", ["0x"]),
        ]:
            body = refused(client.post(url("delegation_relay"), {**good, field: value}, format="json"), 400)
            assert field in body["fields"], (field, value, body)
        body = refused(client.post(url("delegation_relay"), {**good, "signature": 12345}, format="json"), 400)
        assert body["code"] == "bad_signature" and "65 bytes" in body["detail"]
        bad_changes = [
            [{"name": "reward_split", "values": {"contributors_bps": 6000}}],
            [{"name": "reward_split", "values": {"contributors_bps": 6000.5, "builder_bps": 10}}],
            [{"name": "reward_split", "values": {"contributors_bps": 9000, "builder_bps": 2000}}],
            [{"name": "deployment_gate", "values": {"deployment_gate": 1}}],
            [{"name": "treasury", "values": {}}],
            [split_change(10, 10), split_change(20, 20)],
            [],
            "reward_split",
        ]
        for changes in bad_changes:
            body = {"proposer": alice.address, "title": "Bad", "changes": changes}
            answer = refused(client.post(url("proposal_prepare_parameters"), body, format="json"), 400)
            assert answer["code"] in ("invalid", "bad_input", "invalid_choice", "not_a_list", "empty"), answer
        relay = {"proposer": alice.address, "targets": alice.address, "values": [0], "calldatas": ["0x"],
                 "description": "x", "signature": "0x" + "11" * 65}  # fmt: skip
        refused(client.post(url("proposal_relay"), relay, format="json"), 400)
        relay |= {"targets": [gov.parameters_address, gov.parameters_address], "calldatas": ["0x"]}
        refused(client.post(url("proposal_relay"), relay, format="json"), 400, "bad_input")


def test_an_unknown_proposal_is_a_404(gov, voters, anvil) -> None:
    alice, _ = voters
    with Unchanged(anvil):
        for proposal_id in ("12345", "abc", "1" * 79, "-1", "0x10"):
            refused(APIClient().get(url("proposal_detail", proposal_id)), 404, "not_found")
            for name in ("ballot", "vote", "stake_permit", "stake_bond", "proposal_queue", "proposal_execute",
                         "stake_settle"):  # fmt: skip
                refused(alice.client.post(url(name, proposal_id), {"account": alice.address, "support": 1},
                                          format="json"), 404, "not_found")  # fmt: skip
        refused(alice.client.get(url("transaction_detail", "99999999")), 404, "not_found")
        refused(alice.client.get(url("transaction_detail", str(2**64))), 404, "not_found")
        refused(APIClient().get(url("proposal_list"), {"state": "won"}), 400)
        refused(APIClient().get(url("parameter_history"), {"name": "treasury"}), 400)


def test_signatures_for_another_chain_or_used_once_already_are_refused(gov, voters, anvil) -> None:
    alice, bob = voters
    typed = post(alice, "delegation_message", body={"account": alice.address, "delegatee": bob.address})["typed_data"]
    body = {"account": alice.address, "delegatee": bob.address, "nonce": typed["message"]["nonce"],
            "expiry": typed["message"]["expiry"]}  # fmt: skip
    foreign = {**typed, "domain": {**typed["domain"], "chainId": 1}}
    with Unchanged(anvil):
        answer = refused(alice.client.post(url("delegation_relay"), {**body, "signature": sign(foreign, alice.key)},
                                           format="json"), 400, "bad_signature")  # fmt: skip
        assert "another chain" in answer["detail"]
    signature = sign(typed, alice.key)
    confirmed(alice, post(alice, "delegation_relay", body={**body, "signature": signature}, expect=202))
    with Unchanged(anvil):
        refused(alice.client.post(url("delegation_relay"), {**body, "signature": signature}, format="json"), 409,
                "replayed")  # fmt: skip


def test_voting_out_of_its_window_or_twice_and_executing_early_are_refused(gov, voters, anvil) -> None:
    alice, bob = voters
    proposal_id = propose(alice, "Window", [split_change(6500, 2500)])["proposal_id"]
    with Unchanged(anvil):
        early = vote(bob, proposal_id, 1, expect=409)
        assert early["code"] == "not_active" and "not started" in early["detail"]
        refused(bob.client.post(url("proposal_queue", proposal_id)), 409, "not_succeeded")
    mine(anvil, 2)
    with Unchanged(anvil):
        for support in ("yes", True, 3, None, [1]):
            body = {"account": bob.address, "support": support, "signature": "0x" + "11" * 65}
            answer = refused(bob.client.post(url("vote", proposal_id), body, format="json"), 400)
            assert "support" in answer["fields"]
    vote(bob, proposal_id, 1)
    with Unchanged(anvil):
        twice = vote(bob, proposal_id, 0, expect=409)
        assert twice["code"] == "already_voted"
        refused(alice.client.post(url("proposal_execute", proposal_id)), 409, "not_ready")
    mine(anvil, 25)
    with Unchanged(anvil):
        late = vote(alice, proposal_id, 1, expect=409)
        assert late["code"] == "not_active" and "voting is over" in late["detail"]


def test_proposing_below_the_threshold_is_refused(gov, voters, anvil) -> None:
    poor = person("poor", gov)
    fund({poor.key: 10**14})
    delegate_self(poor)
    mine(anvil, 1)
    prepared = post(poor, "proposal_prepare_parameters", body={"proposer": poor.address, "title": "Too poor",
                                                               "changes": [split_change(5000, 3000)]})  # fmt: skip
    relay = {k: prepared[k] for k in ("targets", "values", "calldatas", "description")}
    relay |= {"proposer": poor.address, "signature": sign(prepared["typed_data"], poor.key)}
    with Unchanged(anvil):
        answer = refused(poor.client.post(url("proposal_relay"), relay, format="json"), 403, "below_threshold")
        assert "proposing needs 1000000000000000" in answer["detail"]


def test_relays_are_rate_limited_per_user(gov, voters, anvil, settings) -> None:
    alice, _ = voters
    settings.GOVERNANCE_RELAY_RATE_LIMIT = "2/minute"  # a window of its own: the fixture relayed a delegation
    body = {"account": alice.address, "delegatee": alice.address, "nonce": "0", "expiry": "1",
            "signature": "0x" + "11" * 65}  # fmt: skip
    with Unchanged(anvil):
        for _ in range(2):
            refused(alice.client.post(url("delegation_relay"), body, format="json"), 400)  # counted, then refused
        limited = alice.client.post(url("delegation_relay"), body, format="json")
        refused(limited, 429, "rate_limited")
        assert int(limited["Retry-After"]) > 0


def test_a_relayed_transaction_is_read_by_its_requester_and_staff_only(gov, voters, anvil) -> None:
    alice, bob = voters
    typed = post(alice, "delegation_message", body={"account": alice.address, "delegatee": bob.address})["typed_data"]
    body = {"account": alice.address, "delegatee": bob.address, "nonce": typed["message"]["nonce"],
            "expiry": typed["message"]["expiry"], "signature": sign(typed, alice.key)}  # fmt: skip
    relayed = post(alice, "delegation_relay", body=body, expect=202)
    assert confirmed(alice, relayed)["kind"] == "delegate"
    refused(bob.client.get(url("transaction_detail", relayed["id"])), 404, "not_found")
    refused(APIClient().get(url("transaction_detail", relayed["id"])), 401)
    staff = APIClient()
    staff.force_authenticate(UserFactory(is_staff=True))
    assert staff.get(url("transaction_detail", relayed["id"])).json()["account"] == alice.address


def test_a_chain_that_is_away_is_a_503_with_retry_after_and_reads_still_answer(gov, voters, anvil) -> None:
    alice, _ = voters
    proposal_id = propose(alice, "While the chain sleeps", [split_change(6100, 2900)])["proposal_id"]
    get(APIClient(), "parameter_list")  # read once: the rules are cached from here
    relay = {"account": alice.address, "delegatee": alice.address, "nonce": "1",
             "expiry": str(int(time.time()) + 600), "signature": "0x" + "11" * 65}  # fmt: skip
    rows = GovernanceTransaction.objects.count()
    anvil.stop()
    try:
        for name, body in [("delegation_message", {"account": alice.address, "delegatee": alice.address}),
                           ("delegation_relay", relay)]:  # fmt: skip
            answer = alice.client.post(url(name), body, format="json")
            assert refused(answer, 503)["code"] in ("chain_unavailable", "unavailable")
            assert int(answer["Retry-After"]) > 0
        detail = get(APIClient(), "proposal_detail", proposal_id)
        assert detail["chain_state"] is None and detail["state"] == "pending"
        assert get(APIClient(), "parameter_list")["source"] == "chain"  # the cached reading, from the chain
    finally:
        anvil.start()
    assert GovernanceTransaction.objects.count() == rows
