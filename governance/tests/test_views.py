"""The governance pages on a real anvil: reading proposals, signing (the typed data a view answers, signed as a wallet
would, relayed by the same view), the steps anyone may take, and every hostile input refused in words with nothing
relayed."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import Client
from eth_account import Account

from accounts.models import User, Wallet
from governance import indexer
from governance.models import Proposal
from ledger import chain, governance
from ledger.models import GovernanceTransaction
from ledger.tests.gov import delegate_self, fund, governance_contracts, mine, propose, sign, travel

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
    settings.GOVERNANCE_DEPLOYMENT_STAKE = 10**16
    settings.REWARDS_POOL_ADDRESS = POOL
    return governance_contracts()


def linked(username: str, key: Any) -> User:
    user = User.objects.create_user(username, f"{username}@example.org")
    Wallet.objects.create(user=user, address=key.address, chain_id=31337, message="m", signature="0x" + "00" * 65)
    return user


@pytest.fixture
def world(gov, anvil):
    """Alice (1 token, delegated to herself) proposed a new reward split; voting is open; Bob holds a wallet too."""
    alice_key, bob_key = Account.create(), Account.create()
    fund({alice_key: TOKEN, bob_key: TOKEN // 4})
    delegate_self(alice_key, gov)
    mine(anvil, 1)
    call = chain.contract("ProtocolParameters", gov.parameters_address).functions.setRewardSplit(6000, 3000)
    actions = {"targets": [gov.parameters_address], "values": [0], "calldatas": [call._encode_transaction_data()],
               "description": "# Pay builders more\n\n60 / 30 / **10**.<script>alert(1)</script>"}  # fmt: skip
    proposal_id, _ = propose(alice_key, actions["targets"], actions["calldatas"], actions["description"])
    mine(anvil, 2)
    indexer.index_to_head(gov)
    alice, bob = linked("alice", alice_key), linked("bob", bob_key)
    return SimpleNamespace(gov=gov, alice_key=alice_key, bob_key=bob_key, alice=alice, bob=bob,
                           proposal_id=str(proposal_id), actions=actions)  # fmt: skip


def client_for(user: User, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def url(w: Any, suffix: str = "") -> str:
    return f"/governance/proposals/{w.proposal_id}/{suffix}"


def signed_post(client: Client, path: str, key: Any, data: dict[str, str]) -> Any:
    """What governance.js does: ask for the typed data, sign it with the wallet's key, post it back with the fields."""
    first = client.post(path, data)
    assert first.status_code == 200, first.content
    answer = first.json()
    return client.post(path, {**data, **answer["fields"], "signature": sign(answer["typed_data"], key)})


def test_the_list_filters_by_state_with_counts_and_ignores_an_unknown_state(world) -> None:
    page = Client().get("/governance/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Pay builders more" in html and 'data-tab="active"' in html
    assert Client().get("/governance/?state=executed").content.decode().count("data-proposal=") == 0
    assert "Pay builders more" in Client().get("/governance/?state=active").content.decode()
    assert "Pay builders more" in Client().get("/governance/?state=<script>").content.decode()


def test_a_proposal_page_shows_actions_in_words_safe_markdown_timeline_and_tally(world) -> None:
    html = Client().get(url(world)).content.decode()
    assert "Set the reward split to 60.00 % for contributors, 30.00 % for the builder" in html
    assert "<strong>10</strong>" in html and "<script>alert(1)" not in html
    assert "Proposed" in html and "Voting closes" in html
    assert 'id="tally-data"' in html and 'data-tally="for"' in html
    assert "Log in</a> to vote" in html


@pytest.mark.parametrize("proposal_id", ["12345", "abc", "9" * 79, "-1"])
def test_an_unknown_or_malformed_proposal_id_is_a_404(world, proposal_id) -> None:
    assert Client().get(f"/governance/proposals/{proposal_id}/").status_code == 404
    assert client_for(world.alice).post(f"/governance/proposals/{proposal_id}/vote/", {}).status_code == 404


def test_a_relayed_but_not_yet_indexed_proposal_says_it_is_on_its_way(world) -> None:
    GovernanceTransaction.objects.filter(kind="propose").update(proposal_id="424242")
    page = Client().get("/governance/proposals/424242/")
    assert page.status_code == 200 and "on its way" in page.content.decode()


def test_a_vote_signed_in_the_browser_is_relayed_and_the_tally_and_quorum_move(world) -> None:
    client = client_for(world.alice)
    before = client.get(url(world) + "?part=tally", HTTP_HX_REQUEST="true").content.decode()
    assert 'data-quorum-percent="0"' in before

    relayed = signed_post(client, url(world, "vote/"), world.alice_key, {"account": world.alice_key.address,
                                                                          "support": "1"})  # fmt: skip

    assert relayed.status_code == 202, relayed.content
    assert relayed.json()["transaction"]["status"] == "confirmed"
    after = client.get(url(world) + "?part=tally", HTTP_HX_REQUEST="true").content.decode()
    assert 'data-quorum-percent="100"' in after and "data-quorum-reached" in after
    steps = client.get(url(world) + "?part=steps", HTTP_HX_REQUEST="true").content.decode()
    assert f'data-voted="{world.alice_key.address}"' in steps and "Vote for" not in steps
    assert json.loads(after.split('id="tally-data" type="application/json">')[1].split("<")[0])["votes"][0] == 1.0
    row = GovernanceTransaction.objects.get(kind="vote")
    status = client.get(f"/governance/transactions/{row.id}/").json()
    assert status["transaction"]["status"] == "confirmed"
    # someone else cannot read it, and a second vote is refused in words
    assert client_for(world.bob).get(f"/governance/transactions/{row.id}/").status_code == 404
    again = signed_post(client, url(world, "vote/"), world.alice_key, {"account": world.alice_key.address,
                                                                       "support": "0"})  # fmt: skip
    assert again.status_code == 409 and "already voted" in again.json()["error"]


def test_hostile_votes_are_refused_in_words_and_nothing_is_relayed(world) -> None:
    alice = client_for(world.alice)
    vote = url(world, "vote/")
    # not signed in: to the login page; a GET on a POST-only view; no CSRF token
    assert Client().post(vote, {"account": world.alice_key.address, "support": "1"}).status_code == 302
    assert alice.get(vote).status_code == 405
    assert client_for(world.alice, csrf=True).post(vote, {"account": world.alice_key.address}).status_code == 403
    # someone else's wallet
    other = alice.post(vote, {"account": world.bob_key.address, "support": "1"})
    assert other.status_code == 403 and "not one of your linked wallets" in other.json()["error"]
    # bad support, bad account, malformed and forged signatures
    assert alice.post(vote, {"account": world.alice_key.address, "support": "7"}).status_code == 400
    assert alice.post(vote, {"account": "0xnope", "support": "1"}).status_code == 400
    malformed = alice.post(vote, {"account": world.alice_key.address, "support": "1", "signature": "0x1234"})
    assert malformed.status_code == 400 and malformed.json()["error"]
    typed = alice.post(vote, {"account": world.alice_key.address, "support": "1"}).json()["typed_data"]
    forged = alice.post(vote, {"account": world.alice_key.address, "support": "1",
                               "signature": sign(typed, world.bob_key)})  # fmt: skip
    assert forged.status_code == 400 and forged.json()["code"] == "bad_signature"
    assert not GovernanceTransaction.objects.filter(kind="vote").exists()


def test_relays_past_the_rate_limit_are_refused_with_a_429(world, settings) -> None:
    settings.GOVERNANCE_RELAY_RATE_LIMIT = "1/hour"
    alice = client_for(world.alice)
    data = {"account": world.alice_key.address, "support": "1", "signature": "0x" + "11" * 65}
    assert alice.post(url(world, "vote/"), data).status_code == 400  # counted, then refused for its signature
    limited = alice.post(url(world, "vote/"), data)
    assert limited.status_code == 429 and "Too many governance requests" in limited.json()["error"]


def test_delegating_on_the_page_gives_votes_to_yourself_or_to_an_address(world, anvil) -> None:
    bob = client_for(world.bob)
    page = bob.get("/governance/delegate/").content.decode()
    assert world.bob_key.address in page and "nobody yet" in page

    relayed = signed_post(bob, "/governance/delegate/sign/", world.bob_key,
                          {"account": world.bob_key.address, "to": "self"})  # fmt: skip

    assert relayed.status_code == 202 and relayed.json()["transaction"]["status"] == "confirmed"
    assert governance.voting_power(world.bob_key.address)["votes"] == TOKEN // 4
    profile = bob.get("/accounts/profile/").content.decode()
    assert 'id="voting-power"' in profile and f'data-votes="{TOKEN // 4}"' in profile
    # at once, in the next block: the gas estimated at the latest block (where Bob's checkpoint would be updated in
    # place) must still cover new checkpoints (ledger.governance.GAS_ALLOWANCE)
    to_alice = signed_post(
        bob,
        "/governance/delegate/sign/",
        world.bob_key,
        {"account": world.bob_key.address, "to": "address", "delegatee": world.alice_key.address},
    )
    assert to_alice.status_code == 202, to_alice.content
    assert governance.voting_power(world.bob_key.address)["delegate"] == world.alice_key.address
    bad = bob.post("/governance/delegate/sign/", {"account": world.bob_key.address, "to": "address",
                                                  "delegatee": "someone"})  # fmt: skip
    assert bad.status_code == 400 and "address" in bad.json()["error"]
    assert Client().get("/governance/delegate/").status_code == 302


def test_a_parameter_proposal_made_on_the_page_is_relayed_and_hostile_forms_are_refused(world) -> None:
    alice = client_for(world.alice)
    assert 'name="change_reward_split"' in alice.get("/governance/new/").content.decode()
    form = {"kind": "parameters", "account": world.alice_key.address, "title": "Stricter quality",
            "body": "Raise the bar.", "change_min_quality_score": "on", "min_quality_score": "40"}  # fmt: skip

    first = alice.post("/governance/new/", form).json()
    assert first["words"] == ["Require a quality score of at least 40 for a contribution to enter a snapshot"]
    relayed = alice.post("/governance/new/", {**form, "signature": sign(first["typed_data"], world.alice_key)})

    assert relayed.status_code == 202, relayed.content
    proposal_id = relayed.json()["redirect"].rstrip("/").rsplit("/", 1)[1]
    assert alice.get(relayed.json()["redirect"]).status_code == 200  # on its way, then indexed
    indexer.index_to_head(world.gov)
    assert Proposal.objects.get(proposal_id=proposal_id).title == "Stricter quality"
    refusals = {
        "nothing ticked": ({**form, "change_min_quality_score": ""}, "tick at least one"),
        "out of range": ({**form, "min_quality_score": "101"}, "from 0 to 100"),
        "not a number": ({**form, "min_quality_score": "ten"}, "whole number"),
        "no title": ({**form, "title": " "}, "needs a title"),
        "bad kind": ({**form, "kind": "coup"}, "parameters or deploys"),
        "split over 100 %": ({**form, "change_reward_split": "on", "contributors_bps": "9000", "builder_bps": "2000"},
                             "at most 10,000"),
        "someone else's version": ({**form, "kind": "deployment", "version": "999999"}, "your own model versions"),
    }  # fmt: skip
    for what, (data, words) in refusals.items():
        answer = alice.post("/governance/new/", data)
        assert answer.status_code == 400, what
        assert words in answer.json()["error"], what
    assert Client().post("/governance/new/", form).status_code == 302
    assert alice.put("/governance/new/").status_code == 405
    assert GovernanceTransaction.objects.filter(kind="propose").count() == 2


def test_queue_and_execute_from_the_page_change_the_parameters_page(world, anvil) -> None:
    alice = client_for(world.alice)
    signed_post(alice, url(world, "vote/"), world.alice_key, {"account": world.alice_key.address, "support": "1"})
    early = alice.post(url(world, "queue/"))
    assert early.status_code == 409 and "voting is still open" in early.content.decode()
    assert alice.get(url(world, "queue/")).status_code == 405
    assert Client().post(url(world, "queue/")).status_code == 302
    assert alice.post(url(world, "dance/")).status_code == 404

    mine(anvil, 25)
    assert "Queue in the timelock" in alice.get(url(world)).content.decode()
    assert alice.post(url(world, "queue/")).status_code == 302
    too_soon = alice.post(url(world, "execute/"))
    assert too_soon.status_code == 409 and "delay is not over" in too_soon.content.decode()
    travel(anvil, 61)
    done = alice.post(url(world, "execute/"), follow=True)
    assert "Executed: transaction" in done.content.decode()
    indexer.index_to_head(world.gov)

    page = Client().get("/governance/parameters/").content.decode()
    assert "60.00 %" in page and "Pay builders more" in page
    assert Client().get(url(world)).content.decode().count('data-state="executed"') >= 1


def test_the_pages_work_before_governance_is_deployed(db) -> None:
    user = User.objects.create_user("zoe")
    client = client_for(user)
    for path in ("/governance/", "/governance/parameters/", "/governance/new/", "/governance/delegate/",
                 "/accounts/profile/"):  # fmt: skip
        page = client.get(path)
        assert page.status_code == 200, path
    assert "not deployed" in client.get("/governance/").content.decode()
    refused = client.post(
        "/governance/new/",
        {"kind": "parameters", "account": "0x" + "12" * 20, "change_min_quality_score": "on", "min_quality_score": "1"},
    )
    assert refused.status_code == 403


def test_a_deployment_proposal_made_on_the_page_shows_its_stake_and_takes_the_bond(world, anvil) -> None:
    from modelfactory.tests.factories import default_base, stand_in_version

    version = stand_in_version(owner=world.bob, base_model=default_base(), name="lantern-v9")
    bob = client_for(world.bob)
    mine(anvil, 1)
    # Bob needs votes of his own to propose
    delegated = signed_post(bob, "/governance/delegate/sign/", world.bob_key,
                            {"account": world.bob_key.address, "to": "self"})  # fmt: skip
    assert delegated.status_code == 202
    mine(anvil, 1)
    new = bob.get("/governance/new/").content.decode()
    assert "lantern-v9" in new and "0.01 OLTR" in new  # the stake, shown before proposing
    form = {"kind": "deployment", "account": world.bob_key.address, "version": str(version.pk)}

    first = bob.post("/governance/new/", form).json()
    assert first["stake"] == str(10**16) and first["words"][0].startswith("Approve model version “lantern-v9”")
    relayed = bob.post("/governance/new/", {**form, "signature": sign(first["typed_data"], world.bob_key)})
    assert relayed.status_code == 202, relayed.content
    indexer.index_to_head(world.gov)
    proposal = Proposal.objects.get(kind="deployment")
    page = bob.get(f"/governance/proposals/{proposal.proposal_id}/").content.decode()
    assert "Bond the stake" in page and "lantern-v9" in page
    # someone else's version, and a bond on a parameter proposal, are refused
    alice = client_for(world.alice)
    theirs = alice.post("/governance/new/", {**form, "account": world.alice_key.address})
    assert theirs.status_code == 400 and "your own model versions" in theirs.json()["error"]
    not_deployment = alice.post(url(world, "stake/"), {"account": world.alice_key.address})
    assert not_deployment.status_code == 400 and "deployment proposal" in not_deployment.json()["error"]

    bonded = signed_post(bob, f"/governance/proposals/{proposal.proposal_id}/stake/", world.bob_key,
                         {"account": world.bob_key.address})  # fmt: skip

    assert bonded.status_code == 202 and bonded.json()["transaction"]["status"] == "confirmed"
    indexer.index_to_head(world.gov)
    page = bob.get(f"/governance/proposals/{proposal.proposal_id}/").content.decode()
    assert 'data-stake="bonded"' in page and "Bond the stake" not in page

    # nobody votes: once voting is over it is defeated, and the page settles the stake (half forfeited to the pool)
    mine(anvil, 25)
    assert "Settle the stake" in bob.get(f"/governance/proposals/{proposal.proposal_id}/").content.decode()
    settled = bob.post(f"/governance/proposals/{proposal.proposal_id}/settle/", follow=True)
    assert "Stake settled: transaction" in settled.content.decode()
    indexer.index_to_head(world.gov)
    assert 'data-stake="slashed"' in bob.get(f"/governance/proposals/{proposal.proposal_id}/").content.decode()
    assert bob.get("/governance/delegate/sign/").status_code == 405
