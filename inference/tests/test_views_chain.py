"""The verify pages and the ancestry panel against a real anvil with LineageRegistry deployed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from inference import services
from inference.models import InferenceRun
from ledger import services as ledger_services
from ledger.models import Anchor
from modelfactory.models import ModelVersion, ModelVersionParent
from modelfactory.tests.factories import BaseModelFactory, UserFactory, frozen_snapshot, instructions, make_v1

from .runs_support import make_v1_run
from .test_ancestry import lineage_version

pytestmark = [pytest.mark.django_db, pytest.mark.chain]


def _anchor_all() -> None:
    for anchor in Anchor.objects.filter(status="pending"):
        ledger_services.anchor_send(anchor_id=anchor.pk)
    ledger_services.anchors_confirm()


@pytest.fixture
def world(deployed_chain: Any) -> dict[str, Any]:
    builder, asker = UserFactory(username="builder"), UserFactory(username="asker")
    base = BaseModelFactory(name="Tiny-Base")
    snapshot = frozen_snapshot(owner=builder, records=instructions(3), name="Zorblat facts")
    parent = lineage_version(owner=builder, base_model=base, name="zorblat-v1", snapshots=[snapshot])
    version = lineage_version(
        owner=builder,
        base_model=base,
        name="zorblat-v2",
        parents=[(parent, ModelVersionParent.Relation.CONTINUED_FROM, 1.0)],
        snapshots=[snapshot],
    )
    client = Client()
    client.force_login(asker)
    return {"asker": asker, "snapshot": snapshot, "parent": parent, "version": version, "client": client}


def _answered(user: Any, version: ModelVersion) -> InferenceRun:
    run = services.run_submit(user=user, version=version, messages=[{"role": "user", "content": "Code?"}])
    services.run_claim(run_id=run.pk, worker="test-worker")
    return services.run_finish(run_id=run.pk, answer="7421", finish_reason="stop", completion_tokens=3)


def test_a_manifest_is_verified_once_its_anchor_is_on_chain(world: dict[str, Any]) -> None:
    client, version = world["client"], world["version"]
    url = reverse("inference:verify_version", args=[version.pk])

    before = client.get(url).content.decode()
    _anchor_all()
    after = client.get(url).content.decode()

    assert 'data-verified="false"' in before and "The chain does not hold this root" in before
    version.anchor.refresh_from_db()
    assert version.anchor.status == "confirmed"
    assert 'data-verified="true"' in after and f"<strong data-chain-block>{version.anchor.block_number}<" in after
    assert version.anchor.tx_hash in after and version.manifest_hash in after


def test_a_tampered_manifest_is_not_verified(world: dict[str, Any]) -> None:
    _anchor_all()
    version = world["version"]
    # the model refuses changes; a direct UPDATE stands in for someone editing the database behind its back
    ModelVersion.objects.filter(pk=version.pk).update(manifest=version.manifest.replace("unknown", "forged!"))

    page = world["client"].get(reverse("inference:verify_version", args=[version.pk])).content.decode()

    assert 'data-verified="false"' in page and "the stored manifest hashes to 0x" in page


def test_a_snapshot_root_is_verified_on_chain(world: dict[str, Any]) -> None:
    _anchor_all()

    page = world["client"].get(reverse("inference:verify_snapshot", args=[world["snapshot"].pk])).content.decode()

    assert 'data-verified="true"' in page and world["snapshot"].merkle_root in page


def test_a_runs_inclusion_in_its_anchored_batch_is_verified(world: dict[str, Any]) -> None:
    run = _answered(world["asker"], world["version"])
    _answered(world["asker"], world["version"])
    services.runs_seal_batches(force=True)
    url = reverse("inference:verify_run", args=[run.public_id])

    pending = world["client"].get(url).content.decode()
    _anchor_all()
    verified = world["client"].get(url).content.decode()

    assert 'data-verified="false"' in pending
    assert 'data-verified="true"' in verified and run.run_hash in verified


def test_the_ancestry_panel_shows_every_anchor_with_its_chain_state(world: dict[str, Any]) -> None:
    run = _answered(world["asker"], world["version"])
    services.runs_seal_batches(force=True)
    _anchor_all()

    page = Client().get(reverse("inference:run_detail", args=[run.public_id])).content.decode()

    anchors = Anchor.objects.all()
    assert {a.kind for a in anchors} == {"snapshot", "model_version", "inference_batch"} and len(anchors) == 4
    for anchor in anchors:
        assert anchor.status == "confirmed" and anchor.tx_hash[:12] in page
    assert page.count('data-anchor-status="confirmed"') >= 5  # four rows and the inclusion proof's badge
    for name, args in (
        ("inference:verify_snapshot", [world["snapshot"].pk]),
        ("inference:verify_version", [world["parent"].pk]),
        ("inference:verify_version", [world["version"].pk]),
        ("inference:verify_run", [run.public_id]),
    ):
        assert reverse(name, args=args) in page


def test_a_run_proof_names_its_chain_contract_transaction_and_subject(world: dict[str, Any]) -> None:
    from ledger import chain, deployments, hashing, merkle

    # given a run in an anchored batch
    run = _answered(world["asker"], world["version"])
    _answered(world["asker"], world["version"])
    (batch,) = services.runs_seal_batches(force=True)
    _anchor_all()
    batch.anchor.refresh_from_db()

    # when anyone with the run's link downloads its proof
    proof = Client().get(reverse("inference:run_proof", args=[run.public_id])).json()

    # then the envelope verifies off chain and on chain with nothing but itself
    assert proof["schema"] == "openledger.proof.v1" and proof["artifact"] == "run"
    assert proof["leafEncoding"] == ["bytes32"] and proof["value"] == [run.run_hash]
    assert proof["batch"]["id"] == batch.pk and proof["batch"]["size"] == 2
    assert merkle.verify(proof["root"], proof["leafEncoding"], proof["value"], proof["proof"])
    anchor = proof["anchor"]
    subject = f"inference_batch:{batch.root}"
    assert anchor["chain_id"] == 31337 and anchor["contract"] == "LineageRegistry"
    assert anchor["contract_address"] == deployments.active_deployment().contract_address
    assert anchor["tx_hash"] == batch.anchor.tx_hash and anchor["block_number"] > 0
    assert anchor["subject"] == subject and anchor["subject_id"] == hashing.subject_id(subject)
    assert anchor["kind"] == "inference_batch" and anchor["kind_code"] == 3
    assert chain.verify_on_chain(proof["root"], proof["leaf"], proof["proof"])
    info = chain.root_info(proof["root"])
    assert info is not None and info.subject_id == anchor["subject_id"] and info.kind == 3
    page = world["client"].get(reverse("inference:verify_run", args=[run.public_id])).content.decode()
    assert f"<code data-subject>{subject}</code>" in page and anchor["contract_address"] in page

    # an anchor requested before subjects were stored is still named
    Anchor.objects.filter(pk=batch.anchor_id).update(subject="")
    again = Client().get(reverse("inference:run_proof", args=[run.public_id])).json()
    assert again["anchor"]["subject"] == subject


def test_an_anonymous_visitor_with_the_links_verifies_a_run_its_version_and_its_snapshot(
    world: dict[str, Any],
) -> None:
    run = _answered(world["asker"], world["version"])
    services.runs_seal_batches(force=True)
    _anchor_all()
    anonymous = Client()

    pages = {
        name: anonymous.get(reverse(name, args=args))
        for name, args in (
            ("inference:run_detail", [run.public_id]),
            ("inference:run_proof", [run.public_id]),
            ("inference:verify_run", [run.public_id]),
            ("inference:verify_version", [world["version"].pk]),
            ("inference:verify_snapshot", [world["snapshot"].pk]),
            ("inference-api:run_detail", [run.public_id]),
        )
    }

    assert {name: r.status_code for name, r in pages.items()} == dict.fromkeys(pages, 200)
    for name in ("inference:verify_run", "inference:verify_version", "inference:verify_snapshot"):
        assert 'data-verified="true"' in pages[name].content.decode(), name
    assert run.run_hash in pages["inference:run_proof"].content.decode()
    assert anonymous.get(reverse("inference:history")).status_code == 302  # the list of one's runs stays private


def test_a_v1_manifest_and_a_v1_run_stored_before_jcs_still_verify(world: dict[str, Any]) -> None:
    version = make_v1(world["version"])
    run = make_v1_run(_answered(world["asker"], version))
    _answered(world["asker"], version)
    services.runs_seal_batches(force=True)
    _anchor_all()

    manifest_page = world["client"].get(reverse("inference:verify_version", args=[version.pk])).content.decode()
    run_page = world["client"].get(reverse("inference:verify_run", args=[run.public_id])).content.decode()

    assert json.loads(version.manifest)["schema"] == "openledger.model_version.v1"
    assert 'data-verified="true"' in manifest_page and version.manifest_hash in manifest_page
    assert '"schema":"openledger.inference_run.v1"' in run.facts
    assert 'data-verified="true"' in run_page and run.run_hash in run_page
