"""Deployment, reset detection, on-chain verification and the health answer, against a real anvil."""

from __future__ import annotations

import json
import time

import pytest

from ledger import chain, deployments, merkle, services
from ledger.models import Anchor, AnchorEvent, ChainDeployment
from ledger.tasks import anchor_confirm_task, anchor_dispatch_task, chain_check_task
from ledger.testing import free_port

pytestmark = [pytest.mark.chain, pytest.mark.django_db]


def confirmed_anchor(n: int, root: str | None = None) -> Anchor:
    anchor = services.anchor_request(
        kind="inference_batch", subject_id=services.anchor_subject_id("batch", n), root=root or f"0x{n:064x}"
    )
    services.anchor_send(anchor_id=anchor.id)
    services.anchors_confirm()
    anchor.refresh_from_db()
    assert anchor.status == Anchor.Status.CONFIRMED, anchor.last_error
    return anchor


def test_ensure_deployed_is_idempotent(deployed_chain) -> None:
    again = deployments.ensure_deployed()

    assert again == deployed_chain
    assert ChainDeployment.objects.count() == 1
    assert deployed_chain.artifact_sha256 == chain.artifact_sha256()
    assert deployed_chain.deploy_block_hash == chain.block_hash(deployed_chain.deploy_block_number)


def test_a_chain_restarted_with_its_state_is_the_same_chain(deployed_chain, anvil) -> None:
    anvil.stop()
    anvil.start(state=True)

    assert deployments.deployment_problem(deployed_chain) is None
    assert deployments.ensure_deployed() == deployed_chain


def test_a_reset_chain_is_redeployed_and_confirmed_anchors_are_anchored_again(deployed_chain, anvil) -> None:
    first, second = confirmed_anchor(1), confirmed_anchor(2)

    anvil.stop()
    anvil.start(state=False)
    chain_check_task.apply()
    new = deployments.active_deployment()

    old = ChainDeployment.objects.get(id=deployed_chain.id)
    assert new != old and new.active and not old.active
    assert "no contract code" in old.retired_reason
    for anchor in (first, second):
        anchor.refresh_from_db()
        assert anchor.status == Anchor.Status.PENDING
        requeued = anchor.events.get(type=AnchorEvent.Type.REQUEUED)
        assert requeued.deployment == old and requeued.block_number is not None
        assert "chain reset" in requeued.detail

    anchor_dispatch_task.apply()
    anchor_confirm_task.apply()

    for anchor in (first, second):
        anchor.refresh_from_db()
        assert anchor.status == Anchor.Status.CONFIRMED
        assert anchor.deployment == new
        assert chain.root_info(anchor.root, deployment=new).subject_id == anchor.subject_id
        assert anchor.events.filter(type=AnchorEvent.Type.CONFIRMED).count() == 2


def test_a_reset_is_seen_by_the_deploy_block_hash_when_code_is_back_at_the_address(deployed_chain, anvil) -> None:
    anvil.stop()
    anvil.start(state=False)
    # a new chain as long as the old one, with the same code at the same address: only the block hash differs
    anvil.rpc("anvil_mine", hex(deployed_chain.deploy_block_number + 1))
    anvil.rpc("anvil_setCode", deployed_chain.contract_address, chain.load_artifact()["deployedBytecode"])
    try:
        problem = deployments.deployment_problem(deployed_chain)
        new = deployments.ensure_deployed()
    finally:
        # the planted code would collide with a later deployment from the nonce that first created it
        anvil.stop()
        anvil.start(state=False)

    assert problem.startswith(f"block {deployed_chain.deploy_block_number} is 0x")
    assert new != deployed_chain
    assert ChainDeployment.objects.get(id=deployed_chain.id).retired_reason == problem


def test_verify_accepts_our_proofs_and_rejects_tampered_ones(deployed_chain) -> None:
    values = [("0x" + f"{i:02x}" * 32, "0x" + f"{i:040x}", i) for i in range(1, 14)]
    tree = merkle.StandardMerkleTree.of(values)
    confirmed_anchor(3, root=tree.root)

    for index in (0, 6, 12):
        assert chain.verify_on_chain(tree.root, tree.leaf(index), tree.proof(index))
    proof, leaf = tree.proof(6), tree.leaf(6)
    tampered_leaf = merkle.leaf_hash(merkle.DEFAULT_LEAF_TYPES, (values[6][0], values[6][1], 999))
    assert not chain.verify_on_chain(tree.root, tampered_leaf, proof)
    assert not chain.verify_on_chain(tree.root, leaf, [proof[0][:-2] + "00", *proof[1:]])
    assert not chain.verify_on_chain(tree.root, leaf, proof[:-1])
    assert not chain.verify_on_chain(tree.root, tree.leaf(5), proof)
    assert not chain.verify_on_chain("0x" + "77" * 32, leaf, proof)


def test_verify_needs_the_root_anchored(deployed_chain) -> None:
    tree = merkle.StandardMerkleTree.of([("0x" + "01" * 32, "0x" + "02" * 20, 3)])

    assert tree.proof(0) == []
    assert not chain.verify_on_chain(tree.root, tree.leaf(0), [])
    confirmed_anchor(4, root=tree.root)
    assert chain.verify_on_chain(tree.root, tree.leaf(0), [])


def test_chain_status_reports_a_healthy_chain(deployed_chain) -> None:
    status = chain.chain_status()

    assert status["ok"] is True
    assert status["chain_id"] == 31337
    assert status["latest_block"] >= deployed_chain.deploy_block_number
    assert status["contract_address"] == deployed_chain.contract_address
    assert "error" not in status


def test_chain_status_says_when_nothing_is_deployed(chain_settings) -> None:
    status = chain.chain_status()

    assert status["ok"] is False
    assert "chain_deploy" in status["error"]


def test_chain_status_answers_fast_and_does_not_raise_when_the_node_is_down(settings) -> None:
    settings.EVM_RPC_URL = f"http://127.0.0.1:{free_port()}"

    started = time.monotonic()
    status = chain.chain_status()

    assert time.monotonic() - started < 2.5
    assert status["ok"] is False and status["chain_id"] is None and status["latest_block"] is None
    assert "Connection" in status["error"]


def test_chain_status_flags_a_wrong_chain_id(chain_settings, settings) -> None:
    settings.EVM_CHAIN_ID = 1

    status = chain.chain_status()

    assert status["ok"] is False and "EVM_CHAIN_ID is 1" in status["error"]
    with pytest.raises(chain.ChainError, match="EVM_CHAIN_ID"):
        deployments.ensure_deployed()


def test_only_anvil_gets_the_development_key(settings) -> None:
    settings.EVM_CHAIN_ID = 11155111

    with pytest.raises(chain.ChainError, match="EVM_SIGNER_KEY"):
        chain.signer()


def test_a_keystore_file_is_a_signer(settings, tmp_path) -> None:
    from eth_account import Account

    key = "0x" + "5a" * 32
    keystore = tmp_path / "key.json"
    keystore.write_text(json.dumps(Account.encrypt(key, "secret", kdf="pbkdf2", iterations=1000)))
    settings.EVM_CHAIN_ID = 11155111
    settings.EVM_SIGNER_KEY = ""
    settings.EVM_KEYSTORE_FILE = str(keystore)
    settings.EVM_KEYSTORE_PASSWORD = "secret"

    assert chain.signer().address == Account.from_key(key).address


def test_the_secret_part_of_an_rpc_url_is_not_stored() -> None:
    assert chain.redacted_rpc_url("https://user:pw@eth.example.org:8443/v3/abcdef") == "https://eth.example.org:8443"
