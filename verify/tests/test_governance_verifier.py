"""`node verify/governance.js` against a real anvil after real lifecycles (ledger/tests/gov.py): a parameter change
and a deployment approval executed, a deployment defeated and its stake slashed. The verifier reads the chain alone
(the Governor's address and a proposal id are all it is given) and must tell what the tests know happened."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest
from eth_account import Account

from ledger import chain, governance
from ledger.testing import ROOT, free_port
from ledger.tests.gov import delegate_self, fund, governance_contracts, mine, propose, settled, sign, travel, vote

pytestmark = [pytest.mark.chain, pytest.mark.django_db]

# the protocol pool the contracts are deployed with: one address for the module, so that its tests share one
# deployment (ledger.tests.gov.governance_contracts); each starts with the pool holding nothing all the same
POOL = Account.create().address

TOKEN = 10**18
STAKE = 10**16


def verifier(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", "verify/governance.js", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def verified(anvil: Any, gov: Any, proposal_id: int) -> dict[str, Any]:
    done = verifier(
        "--rpc", anvil.rpc_url, "--governor", gov.governor_address, "--proposal", str(proposal_id), "--json"
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout)


@pytest.fixture
def gov(chain_settings, db, settings):
    settings.GOVERNANCE_VOTING_DELAY_BLOCKS = 1
    settings.GOVERNANCE_VOTING_PERIOD_BLOCKS = 20
    settings.GOVERNANCE_TIMELOCK_SECONDS = 60
    settings.GOVERNANCE_PROPOSAL_THRESHOLD = 10**15
    settings.GOVERNANCE_QUORUM_PERCENT = 4
    settings.GOVERNANCE_DEPLOYMENT_STAKE = STAKE
    settings.GOVERNANCE_STAKE_SLASH_BPS = 5000
    settings.REWARDS_POOL_ADDRESS = POOL
    return governance_contracts()


@pytest.fixture
def voters(gov, anvil):
    alice, bob = Account.create(), Account.create()
    fund({alice: TOKEN, bob: TOKEN // 10})
    for key in (alice, bob):
        delegate_self(key, gov)
    mine(anvil, 1)
    return alice, bob


def executed(anvil: Any, proposal: dict[str, Any]) -> None:
    mine(anvil, 25)
    settled(governance.request_queue(**proposal))
    travel(anvil, 61)
    settled(governance.request_execute(**proposal))


def bonded(gov: Any, builder: Any, manifest: str, description: str) -> None:
    deadline = int(time.time()) + 3600
    typed = governance.permit_typed_data(builder.address, gov.registry_address, STAKE, deadline=deadline)
    settled(
        governance.relay_bond(manifest_hash=manifest, description=description, builder=builder.address,
                              deadline=deadline, signature=sign(typed, builder))
    )  # fmt: skip


def test_an_executed_parameter_change_is_told_from_chain_data_alone(gov, voters, anvil) -> None:
    alice, bob = voters
    call = chain.contract("ProtocolParameters", gov.parameters_address).functions.setRewardSplit(6000, 3000)
    proposal = {
        "targets": [gov.parameters_address],
        "values": [0],
        "calldatas": [call._encode_transaction_data()],
        "description": "Pay builders more: 60 / 30 / 10",
    }
    proposal_id, created = propose(alice, proposal["targets"], proposal["calldatas"], proposal["description"])
    pending = verified(anvil, gov, proposal_id)
    assert pending["proposal"]["state"] == "pending" and pending["votes"] == []
    assert pending["tally"]["quorum"] is None  # counted at the snapshot block, still to come
    mine(anvil, 2)
    vote(alice, proposal_id, 1)
    vote(bob, proposal_id, 0)
    executed(anvil, proposal)

    report = verified(anvil, gov, proposal_id)

    assert report["problems"] == []
    assert report["proposal"]["state"] == "executed" and report["proposal"]["proposer"] == alice.address
    assert report["proposal"]["created"]["tx"] == created.tx_hash
    assert report["governor"]["timelock"] == gov.timelock_address
    [action] = report["actions"]
    assert action["target"] == gov.parameters_address and action["owned_by_timelock"]
    assert action["function"] == "setRewardSplit(uint16,uint16)"
    assert action["args"] == {"contributorsBps": "6000", "builderBps": "3000"}
    assert {(v["voter"], v["support"], v["weight"]) for v in report["votes"]} == {
        (alice.address, "for", str(TOKEN)), (bob.address, "against", str(TOKEN // 10)),
    }  # fmt: skip
    tally = governance.tally(proposal_id)
    assert report["tally"] == {
        "against": str(tally.against), "for": str(tally.for_), "abstain": "0", "quorum": str(tally.quorum),
        "quorum_reached": True,
    }  # fmt: skip
    assert len(report["timelock"]["scheduled"]) == 1 and len(report["timelock"]["executed"]) == 1
    assert report["timelock"]["scheduled"][0]["delay"] == "60"
    effects = {(e["args"]["name"], e["args"]["oldValue"], e["args"]["newValue"]) for e in report["effects"]}
    assert effects == {("contributorsBps", "7000", "6000"), ("builderBps", "2000", "3000")}
    assert all(e["event"] == "ParameterSet" and e["address"] == gov.parameters_address for e in report["effects"])

    text = verifier("--rpc", anvil.rpc_url, "--governor", gov.governor_address, "--proposal", hex(proposal_id))
    assert text.returncode == 0, text.stderr
    assert "state: executed" in text.stdout
    assert f"{gov.parameters_address}.setRewardSplit(contributorsBps=6000, builderBps=3000)" in text.stdout
    assert "ParameterSet at" in text.stdout and "contributorsBps: 7000 -> 6000" in text.stdout
    assert text.stdout.rstrip().endswith("summary: the chain data agree")


def test_a_deployment_approval_and_a_defeated_deployment_show_their_stake(gov, voters, anvil, settings) -> None:
    alice, bob = voters
    passed_manifest, defeated_manifest = "0x" + "ab" * 32, "0x" + "cd" * 32
    passed = {
        "targets": [gov.registry_address],
        "values": [0],
        "calldatas": [governance.deployment_calldata(passed_manifest)],
        "description": "Deploy bob's model v1",
    }
    passed_id, _ = propose(bob, passed["targets"], passed["calldatas"], passed["description"])
    bonded(gov, bob, passed_manifest, passed["description"])
    defeated_description = "Deploy an untested model"
    defeated_id, _ = propose(bob, [gov.registry_address], [governance.deployment_calldata(defeated_manifest)],
                             defeated_description)  # fmt: skip
    bonded(gov, bob, defeated_manifest, defeated_description)
    mine(anvil, 2)
    vote(alice, passed_id, 1)
    vote(alice, defeated_id, 0)
    executed(anvil, passed)
    settled(governance.request_settle(proposal_id=defeated_id))

    approval = verified(anvil, gov, passed_id)
    assert approval["problems"] == [] and approval["proposal"]["state"] == "executed"
    assert approval["actions"][0]["function"] == "approve(bytes32)"
    assert approval["actions"][0]["args"] == {"manifestHash": passed_manifest}
    [approved] = [e for e in approval["effects"] if e["event"] == "ModelApproved"]
    assert approved["args"] == {"manifestHash": passed_manifest, "proposalId": str(passed_id)}
    assert [(e["event"], e["args"].get("amount")) for e in approval["stake"]] == [
        ("StakeBonded", str(STAKE)), ("StakeReturned", str(STAKE)),
    ]  # fmt: skip

    refused = verified(anvil, gov, defeated_id)
    assert refused["problems"] == [] and refused["proposal"]["state"] == "defeated"
    assert refused["effects"] == [] and refused["lifecycle"]["executed"] is None
    assert refused["tally"]["quorum_reached"] is False
    slashed = refused["stake"][-1]
    assert slashed["event"] == "StakeSlashed"
    assert slashed["args"]["slashed"] == str(STAKE // 2) and slashed["args"]["pool"] == settings.REWARDS_POOL_ADDRESS


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "--rpc is required"),
        (("--rpc", "http://127.0.0.1:1", "--governor", "0x12", "--proposal", "1"), "not an address"),
        (("--rpc", "http://127.0.0.1:1", "--governor", "0x" + "11" * 20, "--proposal", "one"), "not a proposal id"),
        (("--rpc", "nope", "--governor", "0x" + "11" * 20, "--proposal", "1"), "not a URL"),
        (("--rpc", "http://127.0.0.1:1", "--bogus"), "Unknown option"),
        (("--rpc", "http://127.0.0.1:1", "--governor", "0x" + "11" * 20, "--proposal", str(2**256)), "not a proposal"),
        (("--rpc", "http://127.0.0.1:1", "--governor", "0x" + "11" * 20, "--proposal", "0"), "not a proposal id"),
        (
            ("--rpc", "http://127.0.0.1:1", "--governor", "0x" + "11" * 20, "--proposal", "1", "--from-block", "x"),
            "--from-block must be a block number",
        ),
    ],
)
def test_bad_usage_exits_2_with_the_usage(args: tuple[str, ...], message: str) -> None:
    done = verifier(*args)

    assert done.returncode == 2
    assert message in done.stderr and "usage: node verify/governance.js" in done.stderr
    assert done.stdout == ""


def test_an_unknown_proposal_or_governor_or_an_unreachable_rpc_exits_2(gov, anvil) -> None:
    unknown = verifier("--rpc", anvil.rpc_url, "--governor", gov.governor_address, "--proposal", "12345")
    assert unknown.returncode == 2 and "knows no proposal 12345" in unknown.stderr
    nothing = verifier("--rpc", anvil.rpc_url, "--governor", Account.create().address, "--proposal", "1")
    assert nothing.returncode == 2 and "no contract at" in nothing.stderr
    down = verifier("--rpc", f"http://127.0.0.1:{free_port()}", "--governor", gov.governor_address, "--proposal", "1")
    assert down.returncode == 2 and down.stderr.startswith("error: eth_chainId at")
    assert "    at " not in unknown.stderr + nothing.stderr + down.stderr  # messages, not stack traces
