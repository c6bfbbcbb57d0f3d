"""GET /api/chain/ and the /chain/ page: what a verifier needs besides an RPC endpoint, readable without an account,
checked against the real anvil deployment (addresses, deploy blocks and transactions, ABIs that call the contracts)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from ledger import chain, deployments
from ledger.models import Anchor, ChainDeployment, RewardContracts
from ledger.services import anchor_subject

pytestmark = pytest.mark.django_db

KIND_CODES = {
    "generic": 0,
    "snapshot": 1,
    "model_version": 2,
    "inference_batch": 3,
    "receipt_batch": 4,
    "reward_epoch": 5,
}


def _chain() -> dict[str, Any]:
    response = APIClient().get(reverse("ledger-api:chain"))
    assert response.status_code == 200, response.content[:500]
    return response.json()


def test_before_any_deployment_it_says_so_and_deploys_nothing(settings: Any) -> None:
    settings.EVM_RPC_URL = "http://127.0.0.1:9"  # nothing listens: a GET that tried the chain would show it
    settings.EVM_CHAIN_ID = 31337

    facts = _chain()
    page = Client().get(reverse("ledger:chain"))

    assert facts["chain_id"] == 31337 and facts["contracts"] == [] and facts["retired"] == []
    assert facts["note"].startswith("No contract is deployed on chain 31337 yet")
    assert facts["anchor_kinds"] == KIND_CODES == {str(k): v for k, v in Anchor.KIND_CODES.items()}
    assert page.status_code == 200 and "No contract is deployed on chain 31337 yet" in page.content.decode()
    assert ChainDeployment.objects.count() == 0 and RewardContracts.objects.count() == 0


def test_it_gives_the_subject_formats_and_leaf_encodings_of_the_brief() -> None:
    facts = _chain()

    assert facts["subjects"] == {
        "snapshot": "snapshot:<datanet id>:<snapshot number>",
        "model_version": "model_version:<fine-tune job id>",
        "inference_batch": "inference_batch:<batch root>",
        "receipt_batch": "receipt_batch:<batch root>",
        "reward_epoch": "reward_epoch:<epoch number>",
    }
    assert set(facts["subjects"]) == set(KIND_CODES) - {"generic"}
    assert anchor_subject("snapshot", 7, 3) == "snapshot:7:3"  # the format, as the services write it
    assert facts["leaf_encodings"] == {
        "record": ["bytes32", "address", "uint256"],
        "run": ["bytes32"],
        "receipt": ["bytes32"],
        "claim": ["uint256", "address", "uint256"],
    }
    assert {tree: len(parts) for tree, parts in facts["leaf_values"].items()} == {
        tree: len(encoding) for tree, encoding in facts["leaf_encodings"].items()
    }


@pytest.mark.chain
def test_it_lists_every_contract_as_deployed_on_anvil(deployed_chain: ChainDeployment, anvil: Any) -> None:
    rewards = deployments.ensure_rewards_deployed()
    governance = deployments.ensure_governance_deployed()

    facts = _chain()

    assert facts["chain_id"] == int(anvil.rpc("eth_chainId"), 16) == 31337 and facts["note"] == ""
    contracts = {c["name"]: c for c in facts["contracts"]}
    assert list(contracts) == [
        "LineageRegistry",
        "RewardToken",
        "RewardDistributor",
        "OpenLedgerTimelock",
        "OpenLedgerGovernor",
        "ProtocolParameters",
        "ModelRegistry",
    ]
    assert contracts["OpenLedgerGovernor"]["address"] == governance.governor_address
    assert contracts["LineageRegistry"]["address"] == deployed_chain.contract_address
    assert contracts["RewardToken"]["address"] == rewards.token_address
    assert contracts["RewardDistributor"]["address"] == rewards.distributor_address
    for name, contract in contracts.items():
        # the chain's own word for each: the deploy transaction created this address in this block
        receipt = anvil.rpc("eth_getTransactionReceipt", contract["deploy_tx_hash"])
        # the token is created by the distributor's constructor, in the distributor's deploy transaction
        creates = contracts["RewardDistributor"] if name == "RewardToken" else contract
        assert receipt["contractAddress"].lower() == creates["address"].lower(), name
        assert int(receipt["blockNumber"], 16) == contract["deploy_block"], name
        assert anvil.rpc("eth_getCode", contract["address"], "latest") not in ("0x", "0x0"), name
        assert contract["abi"] == chain.load_contract_artifact(name)["abi"] and contract["active"] is True, name
    # the ABIs as served call the contracts
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(anvil.rpc_url))
    distributor = w3.eth.contract(
        address=contracts["RewardDistributor"]["address"], abi=contracts["RewardDistributor"]["abi"]
    )
    registry = w3.eth.contract(address=contracts["LineageRegistry"]["address"], abi=contracts["LineageRegistry"]["abi"])
    assert distributor.functions.token().call() == contracts["RewardToken"]["address"]
    assert registry.functions.isAnchored(b"\x01" * 32).call() is False


@pytest.mark.chain
def test_retired_deployments_are_listed_with_why(deployed_chain: ChainDeployment) -> None:
    old = ChainDeployment.objects.create(
        chain_id=deployed_chain.chain_id,
        rpc_url="http://127.0.0.1",
        contract_address="0x" + "ab" * 20,
        deployer="0x" + "cd" * 20,
        deploy_tx_hash="0x" + "01" * 32,
        deploy_block_number=3,
        deploy_block_hash="0x" + "02" * 32,
        artifact_sha256="00" * 32,  # compiled from another source: its ABI is not the committed one
        active=False,
        created_at=deployed_chain.created_at - timezone.timedelta(days=1),
        retired_at=deployed_chain.created_at,
        retired_reason="the chain was reset: no code at the address",
    )

    facts = _chain()
    page = Client().get(reverse("ledger:chain")).content.decode()

    assert [c["address"] for c in facts["retired"]] == [old.contract_address]
    retired = facts["retired"][0]
    assert (retired["active"], retired["abi"], retired["deploy_block"]) == (False, None, 3)
    assert retired["retired_reason"] == "the chain was reset: no code at the address"
    assert [c["address"] for c in facts["contracts"]] == [deployed_chain.contract_address]
    assert old.contract_address in page and "the chain was reset" in page


def test_the_schema_describes_the_chain_api() -> None:
    schema = Client().get(reverse("api_schema"), {"format": "json"}).json()

    operation = schema["paths"]["/api/chain/"]["get"]
    assert operation["tags"] == ["chain"]
    assert {} in operation.get("security", [{}])  # no credentials needed
    properties = schema["components"]["schemas"]["Chain"]["properties"]
    assert {"chain_id", "contracts", "retired", "anchor_kinds", "subjects", "leaf_encodings"} <= set(properties)
    contract = schema["components"]["schemas"]["ChainContract"]["properties"]
    assert {"name", "address", "deploy_block", "deploy_tx_hash", "active", "abi"} <= set(contract)


def test_while_the_chain_is_away_the_reward_contracts_deploy_blocks_are_unknown_not_guessed(settings: Any) -> None:
    settings.EVM_RPC_URL = "http://127.0.0.1:9"  # nothing listens
    settings.EVM_CHAIN_ID = 31337
    registry = ChainDeployment.objects.create(
        chain_id=31337,
        rpc_url="http://127.0.0.1",
        contract_address="0x" + "ab" * 20,
        deployer="0x" + "cd" * 20,
        deploy_tx_hash="0x" + "01" * 32,
        deploy_block_number=1,
        deploy_block_hash="0x" + "02" * 32,
        artifact_sha256=chain.artifact_sha256(),
    )
    RewardContracts.objects.create(
        deployment=registry,
        chain_id=31337,
        token_address="0x" + "11" * 20,
        distributor_address="0x" + "22" * 20,
        treasury="0x" + "cd" * 20,
        token_tx_hash="0x" + "03" * 32,
        distributor_tx_hash="0x" + "04" * 32,
        approve_tx_hash="0x" + "05" * 32,
        deploy_block_number=4,
        deploy_block_hash="0x" + "06" * 32,
        token_artifact_sha256=chain.contract_artifact_sha256("RewardToken"),
        distributor_artifact_sha256=chain.contract_artifact_sha256("RewardDistributor"),
    )

    facts = _chain()
    page = Client().get(reverse("ledger:chain")).content.decode()

    blocks = {c["name"]: c["deploy_block"] for c in facts["contracts"]}
    assert blocks == {"LineageRegistry": 1, "RewardToken": None, "RewardDistributor": None}
    assert all(c["abi"] for c in facts["contracts"]) and facts["note"] == ""
    assert "unknown (the chain could not be asked)" in page
