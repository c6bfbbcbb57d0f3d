"""Reward epochs in the open: the epoch document closed with each epoch, the public epochs API and pages, and a
user's claims with proofs that outlive payment; on the real database and (for the chain) a real anvil."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from inference.models import InferenceRun
from ledger import chain, deployments, hashing, merkle
from ledger import services as ledger_services
from ledger.models import Anchor, RewardEpoch
from rewards.models import RewardAccrual
from rewards.services import reward_claim, rewards_epoch_close, user_label

from .support import build_world, paid_run, publish

pytestmark = pytest.mark.django_db

RUN_HASH = "0x" + "ab" * 32


@pytest.fixture
def world():
    return build_world()


def _anchor_all() -> None:
    for anchor in Anchor.objects.filter(status="pending"):
        ledger_services.anchor_send(anchor_id=anchor.pk)
    ledger_services.anchors_confirm()


def _closed(world) -> RewardEpoch:
    run = paid_run(world)
    InferenceRun.objects.filter(pk=run.pk).update(run_hash=RUN_HASH)
    paid_run(world)
    return rewards_epoch_close().epoch


def test_an_epoch_document_lists_the_accruals_that_make_each_leaf_and_its_hash_is_anchored(world) -> None:
    epoch = _closed(world)

    document = epoch.document
    assert document["schema"] == "openledger.reward_epoch.v1"
    assert (document["epoch"], document["root"], document["total"]) == (epoch.number, epoch.root, str(epoch.total))
    entries = {e.index: e for e in epoch.entries.all()}
    assert [leaf["index"] for leaf in document["leaves"]] == sorted(entries)
    for leaf in document["leaves"]:
        entry = entries[leaf["index"]]
        assert (leaf["account"], leaf["amount"]) == (entry.account, str(entry.amount))
        assert all(isinstance(a["amount"], str) for a in leaf["accruals"])
        assert sum(int(a["amount"]) for a in leaf["accruals"]) == int(leaf["amount"])
        for a in leaf["accruals"]:
            accrual = RewardAccrual.objects.get(id=a["id"])
            assert accrual.epoch == epoch.number and a["kind"] == accrual.recipient_kind
            assert (a["version"], a["contribution"]) == (world.version.pk, accrual.contribution_id)
            assert a["run"] is None  # the run's link is its asker's: the run is named by its anchored hash
    closed = set(RewardAccrual.objects.filter(epoch=epoch.number).values_list("id", flat=True))
    assert {a["id"] for leaf in document["leaves"] for a in leaf["accruals"]} == closed
    assert {a["run_hash"] for leaf in document["leaves"] for a in leaf["accruals"]} == {RUN_HASH, None}
    assert epoch.document_hash == hashing.keccak_hex(hashing.jcs(document))
    anchor = epoch.document_anchor
    assert (anchor.kind, anchor.subject, anchor.root) == ("reward_epoch", "reward_epoch:1", epoch.document_hash)
    assert anchor.subject_id == hashing.subject_id("reward_epoch:1") and anchor.kind_code == 5


@pytest.mark.chain
def test_an_anonymous_client_reads_epochs_and_leaf_proofs_that_verify_off_and_on_chain(world, deployed_chain) -> None:
    # given a closed epoch, published on the distributor, its document anchored on the registry
    epoch = publish(_closed(world))
    _anchor_all()
    contracts = deployments.active_reward_contracts()
    anonymous = APIClient()

    # when anyone lists the epochs and reads this one
    listed = anonymous.get(reverse("rewards_api:epoch_list")).json()
    detail = anonymous.get(reverse("rewards_api:epoch_detail", args=[epoch.number])).json()

    # then the epoch names its distributor and publication, its tree, and its anchored document
    assert listed["count"] == 1 and listed["results"][0]["number"] == epoch.number
    assert listed["results"][0]["document_hash"] == epoch.document_hash
    publication = {
        "chain_id": 31337,
        "contract": "RewardDistributor",
        "contract_address": contracts.distributor_address,
        "tx_hash": epoch.tx_hash,
        "block_number": epoch.block_number,
    }
    assert detail["chain"] == listed["results"][0]["chain"] == publication
    assert (detail["number"], detail["root"], detail["total"], detail["status"]) == (
        epoch.number,
        epoch.root,
        str(epoch.total),
        "confirmed",
    )
    assert merkle.StandardMerkleTree.load(detail["tree"]).root == detail["root"]
    assert hashing.document_hash(detail["document"]) == detail["document_hash"] == epoch.document_hash
    anchor = detail["document_anchor"]
    assert anchor["root"] == detail["document_hash"] and anchor["status"] == "confirmed"
    assert anchor["subject"] == f"reward_epoch:{epoch.number}" and anchor["subject_id"] == hashing.subject_id(
        anchor["subject"]
    )
    assert anchor["contract_address"] == deployed_chain.contract_address and anchor["tx_hash"].startswith("0x")
    info = chain.root_info(detail["document_hash"])
    assert info is not None and (info.kind, info.subject_id, info.block_number) == (
        5,
        anchor["subject_id"],
        anchor["block_number"],
    )
    on_chain = chain.epoch_info(epoch.number)
    assert on_chain is not None and on_chain.root == detail["root"] and on_chain.total == int(detail["total"])

    # and every leaf's proof verifies with nothing but itself, for the amount the document explains
    leaves = {leaf["index"]: leaf for leaf in detail["document"]["leaves"]}
    for index, leaf in leaves.items():
        proof = anonymous.get(reverse("rewards_api:leaf_proof", args=[epoch.number, index])).json()
        assert proof["schema"] == "openledger.proof.v1" and proof["artifact"] == "claim"
        assert proof["leafEncoding"] == ["uint256", "address", "uint256"]
        assert proof["value"] == [str(index), leaf["account"], leaf["amount"]]
        assert merkle.verify(proof["root"], proof["leafEncoding"], proof["value"], proof["proof"])
        assert proof["root"] == on_chain.root
        assert proof["anchor"] == {**publication, "epoch": epoch.number, "status": "confirmed"}
        assert proof["claim"] == {"status": "unclaimed", "tx_hash": None, "block_number": None}
        assert not chain.is_claimed(epoch.number, index)


@pytest.mark.chain
def test_a_paid_leaf_keeps_its_proof_and_shows_its_claim_transaction(world, deployed_chain) -> None:
    # given Alice's leaf paid on chain
    epoch = publish(_closed(world))
    entry = epoch.entries.get(beneficiary=user_label(world.alice.pk))
    claim = reward_claim(user=world.alice, epoch_number=epoch.number, index=entry.index)
    assert claim.status == "confirmed"
    alice = APIClient()
    alice.force_authenticate(world.alice)

    # when she lists her claims
    mine = alice.get(reverse("rewards_api:claims")).json()

    # then the paid leaf is there with its proof and the claim's transaction
    assert mine["count"] == 1
    (item,) = mine["results"]
    assert (item["epoch"], item["index"], item["account"], item["amount"], item["state"]) == (
        epoch.number,
        entry.index,
        world.alice_wallet,
        str(entry.amount),
        "claimed",
    )
    proof = item["proof"]
    assert proof["claim"] == {"status": "claimed", "tx_hash": claim.tx_hash, "block_number": claim.block_number}
    assert merkle.verify(proof["root"], proof["leafEncoding"], proof["value"], proof["proof"])
    assert chain.is_claimed(epoch.number, entry.index) and chain.get_receipt(claim.tx_hash).status == 1
    public = APIClient().get(reverse("rewards_api:leaf_proof", args=[epoch.number, entry.index])).json()
    assert public == proof
    earnings = Client()
    earnings.force_login(world.alice)
    page = earnings.get(reverse("rewards:earnings")).content.decode()
    assert f'data-claim-tx="{claim.tx_hash}"' in page

    # and nobody else's leaves are listed to anyone
    builder = APIClient()
    builder.force_authenticate(world.builder)
    theirs = builder.get(reverse("rewards_api:claims")).json()["results"]
    assert [(i["epoch"], i["account"], i["state"]) for i in theirs] == [
        (epoch.number, world.builder_wallet, "claimable")
    ]
    bob = APIClient()
    bob.force_authenticate(world.bob)  # no wallet: nothing closed to him yet
    assert bob.get(reverse("rewards_api:claims")).json()["count"] == 0
    refused = APIClient().get(reverse("rewards_api:claims"))
    assert refused.status_code in (401, 403) and set(refused.json()) == {"detail", "code"}


@pytest.mark.parametrize(
    "path",
    [
        "/api/rewards/epochs/2/",
        "/api/rewards/epochs/0/",
        "/api/rewards/epochs/abc/",
        "/api/rewards/epochs/-1/",
        "/api/rewards/epochs/1.0/",
        "/api/rewards/epochs/%D9%A1/",  # an Arabic-Indic one
        "/api/rewards/epochs/99999999999999999999999/",
        "/api/rewards/epochs/2/leaves/0/proof/",
        "/api/rewards/epochs/1/leaves/99/proof/",
        "/api/rewards/epochs/1/leaves/x/proof/",
        "/api/rewards/epochs/1/leaves/-1/proof/",
        "/api/rewards/epochs/1/leaves/4294967296/proof/",
    ],
)
def test_hostile_ids_answer_404_in_the_apis_error_shape(world, path) -> None:
    _closed(world)

    response = APIClient().get(path)

    assert response.status_code == 404
    assert response.json() == {"detail": response.json()["detail"], "code": "not_found"}


def test_the_epoch_pages_show_leaves_and_accruals_to_anyone_and_link_a_run_only_for_its_asker(world) -> None:
    epoch = _closed(world)
    run = InferenceRun.objects.get(run_hash=RUN_HASH)
    alice_entry = epoch.entries.get(beneficiary=user_label(world.alice.pk))

    listing = Client().get(reverse("rewards:epoch_list"))
    page = Client().get(reverse("rewards:epoch_detail", args=[epoch.number]))
    asker = Client()
    asker.force_login(world.asker)
    asked = asker.get(reverse("rewards:epoch_detail", args=[epoch.number])).content.decode()

    assert listing.status_code == 200 and reverse("rewards:epoch_detail", args=[epoch.number]) in listing.text
    assert page.status_code == 200
    html = page.content.decode()
    assert epoch.root in html and epoch.document_hash in html and "reward_epoch:1" in html
    assert alice_entry.account in html
    for accrual_id in RewardAccrual.objects.filter(epoch=epoch.number).values_list("id", flat=True):
        assert f'data-accrual="{accrual_id}"' in html
    assert reverse("rewards:contribution_impact", args=[world.alice_contribution.pk]) in html
    assert "data-run-link" not in html and str(run.public_id) not in html
    assert reverse("inference:run_detail", args=[run.public_id]) in asked
    assert Client().get(reverse("rewards:epoch_detail", args=[99])).status_code == 404
    earnings = Client()
    earnings.force_login(world.alice)
    assert reverse("rewards:epoch_list") in earnings.get(reverse("rewards:earnings")).content.decode()
