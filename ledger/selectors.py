"""Reads of the outbox, for pages, the API and the management commands."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, QuerySet

from . import chain
from .models import Anchor, ChainDeployment, GovernanceContracts, RewardContracts


def anchors_for_subject(*, kind: str, subject_id: str) -> QuerySet[Anchor]:
    """The anchors of one subject, newest first: the first confirmed one is its on-chain proof."""
    return Anchor.objects.filter(kind=kind, subject_id=subject_id.lower()).select_related("deployment")


def anchor_status_counts() -> dict[str, int]:
    """How many anchors are in each status, every status present (zero when none)."""
    counts = dict.fromkeys(Anchor.Status.values, 0)
    for row in Anchor.objects.values("status").annotate(n=Count("id")).order_by():
        counts[row["status"]] = row["n"]
    return counts


# What a verifier needs to know of the chain (GET /api/chain/ and the /chain/ page): read from the database and the
# committed artifacts; the chain itself is asked only for the reward contracts' deploy blocks, once (see below).

# How each anchored subject is written; its subject id is keccak256 of the UTF-8 string (hashing.subject_id).
SUBJECT_FORMATS = {
    "snapshot": "snapshot:<datanet id>:<snapshot number>",
    "model_version": "model_version:<fine-tune job id>",
    "inference_batch": "inference_batch:<batch root>",
    "receipt_batch": "receipt_batch:<batch root>",
    "reward_epoch": "reward_epoch:<epoch number>",
}
# Each tree's leaf, in OpenZeppelin StandardMerkleTree terms: leaf = keccak256(keccak256(abi.encode(value))).
LEAF_ENCODINGS = {
    "record": ["bytes32", "address", "uint256"],  # [record_hash, contributor, contribution id]: snapshots
    "run": ["bytes32"],  # [run_hash]: inference batches
    "receipt": ["bytes32"],  # [document_hash]: receipt batches
    "claim": ["uint256", "address", "uint256"],  # [leaf index, account, amount]: reward epochs
}
LEAF_VALUES = {
    "record": ["record_hash", "contributor", "contribution_id"],
    "run": ["run_hash"],
    "receipt": ["document_hash"],
    "claim": ["index", "account", "amount"],
}
_DEPLOY_BLOCK_KEY = "ledger:deploy-block:{chain_id}:{anchor_block}:{tx_hash}"


def _abi(name: str, deployed_sha256: str) -> list[dict[str, Any]] | None:
    """The committed ABI of ``name`` when the deployed creation bytecode is the committed one, else None: an older
    deployment may have been compiled from another source, whose ABI this server no longer has."""
    if deployed_sha256 != chain.contract_artifact_sha256(name):
        return None
    return chain.load_contract_artifact(name)["abi"]


def _deploy_block(row: RewardContracts | GovernanceContracts, tx_hash: str) -> int | None:
    """The block of one of ``row``'s deployment transactions, asked of the chain once and then remembered. None
    while the chain cannot be asked. RewardContracts stores only the block of the last of its three transactions.
    The key holds that block's hash: a reset chain replays the same transactions (same hashes) into other blocks,
    and its new row has another block hash."""
    key = _DEPLOY_BLOCK_KEY.format(chain_id=row.chain_id, anchor_block=row.deploy_block_hash, tx_hash=tx_hash.lower())
    if (block := cache.get(key)) is not None or not (row.active and row.chain_id == settings.EVM_CHAIN_ID):
        return block  # a retired row's chain may be gone, or hold the same transaction in another block now
    try:
        chain.chain_id()  # the node is the configured chain: another one may hold the same hash elsewhere
        receipt = chain.get_receipt(tx_hash)
    except chain.ChainError:
        return None
    if receipt is None:
        return None
    cache.set(key, receipt.block_number, timeout=None)
    return receipt.block_number


def _contract(
    name: str,
    row: ChainDeployment | RewardContracts | GovernanceContracts,
    *,
    address: str,
    deploy_block: int | None,
    tx_hash: str,
    artifact_sha256: str,
) -> dict[str, Any]:
    return {
        "name": name,
        "chain_id": row.chain_id,
        "address": address,
        "deploy_block": deploy_block,
        "deploy_tx_hash": tx_hash,
        "abi": _abi(name, artifact_sha256),
        "active": row.active,
        "deployed_at": row.created_at,
        "retired_at": row.retired_at,
        "retired_reason": row.retired_reason,
    }


def _registry(row: ChainDeployment) -> dict[str, Any]:
    return _contract(
        "LineageRegistry",
        row,
        address=row.contract_address,
        deploy_block=row.deploy_block_number,
        tx_hash=row.deploy_tx_hash,
        artifact_sha256=row.artifact_sha256,
    )


def _contracts(
    row: RewardContracts | GovernanceContracts, contracts: list[tuple[str, str, str, str]]
) -> list[dict[str, Any]]:
    """``(name, address, deploy tx hash, artifact sha256)`` of each contract a row deployed. The rows store the block
    of their last transaction only: each contract's own block comes from the chain."""
    return [
        _contract(
            name,
            row,
            address=address,
            deploy_block=_deploy_block(row, tx_hash),
            tx_hash=tx_hash,
            artifact_sha256=artifact_sha256,
        )
        for name, address, tx_hash, artifact_sha256 in contracts
    ]


def _rewards(row: RewardContracts) -> list[dict[str, Any]]:
    return _contracts(
        row,
        [
            ("RewardToken", row.token_address, row.token_tx_hash, row.token_artifact_sha256),
            ("RewardDistributor", row.distributor_address, row.distributor_tx_hash, row.distributor_artifact_sha256),
        ],
    )


def _governance(row: GovernanceContracts) -> list[dict[str, Any]]:
    steps = [
        ("OpenLedgerTimelock", row.timelock_address, "timelock"),
        ("OpenLedgerGovernor", row.governor_address, "governor"),
        ("ProtocolParameters", row.parameters_address, "parameters"),
        ("ModelRegistry", row.registry_address, "registry"),
    ]
    return _contracts(
        row,
        [(name, address, row.transactions[step], row.artifacts_sha256.get(name, "")) for name, address, step in steps],
    )


def chain_facts() -> dict[str, Any]:
    """The chain this server anchors to (``EVM_CHAIN_ID``), each contract in use there (address, deploy block and
    transaction, ABI), the deployments retired since (newest first, any chain), the anchor kinds' uint8 codes, how
    subjects are written and each tree's leaf encoding. Nothing is deployed here: before the first deployment the
    contract list is empty and ``note`` says so."""
    chain_id = settings.EVM_CHAIN_ID
    registries = list(ChainDeployment.objects.order_by("-created_at", "-id"))
    rewards = list(RewardContracts.objects.order_by("-created_at", "-id"))
    governance = list(GovernanceContracts.objects.select_related("rewards").order_by("-created_at", "-id"))
    in_use = [_registry(r) for r in registries if r.active and r.chain_id == chain_id]
    for row in rewards:
        if row.active and row.chain_id == chain_id:
            in_use += _rewards(row)
    for row in governance:
        if row.active and row.chain_id == chain_id:
            in_use += _governance(row)
    retired = sorted(
        [_registry(r) for r in registries if not (r.active and r.chain_id == chain_id)]
        + [c for r in rewards if not (r.active and r.chain_id == chain_id) for c in _rewards(r)]
        + [c for r in governance if not (r.active and r.chain_id == chain_id) for c in _governance(r)],
        key=lambda c: c["deployed_at"],
        reverse=True,
    )
    note = ""
    if not in_use:
        note = (
            f"No contract is deployed on chain {chain_id} yet: LineageRegistry is deployed with the first anchor, "
            "and the reward contracts with the first reward epoch."
        )
    elif len(in_use) == 1:
        note = "The reward contracts are not deployed yet: they are deployed with the first reward epoch."
    return {
        "chain_id": chain_id,
        "note": note,
        "contracts": in_use,
        "retired": retired,
        "anchor_kinds": {str(kind): code for kind, code in Anchor.KIND_CODES.items()},
        "subjects": SUBJECT_FORMATS,
        "subject_id": "keccak256 of the subject string's UTF-8 bytes",
        "leaf_encodings": LEAF_ENCODINGS,
        "leaf_values": LEAF_VALUES,
        "leaf_hash": "keccak256(keccak256(abi.encode(value))) (OpenZeppelin StandardMerkleTree, format standard-v1)",
    }
