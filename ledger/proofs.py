"""Self-describing proofs: every proof the site serves says, by itself, where to check it.

A proof is OpenZeppelin's StandardMerkleTree vocabulary (``format``, ``leafEncoding``, ``value``, ``treeIndex``,
``leaf``, ``proof``, ``root``: ``StandardMerkleTree.verify(root, leafEncoding, value, proof)`` takes it as it is)
plus an ``anchor`` block naming the chain, the contract, the anchoring transaction and block, and the anchored
subject (``subject_id`` and the ``subject`` string it hashes), so ``LineageRegistry.verify(root, leaf, proof)`` and
``rootInfo(root)`` can be called with nothing else. ``schema`` names this shape; ``artifact`` what the leaf is
(record, contribution_receipt, curation_receipt, run, claim). docs/proofs.md describes each leaf.
"""

from __future__ import annotations

from typing import Any

from . import hashing, merkle
from .models import Anchor

PROOF_SCHEMA = "openledger.proof.v1"
REGISTRY = "LineageRegistry"


def anchor_facts(anchor: Anchor | None) -> dict[str, Any] | None:
    """Where an anchored root lives on chain: ``chain_id``, ``contract``, ``contract_address``, ``tx_hash``,
    ``block_number`` (None until sent or mined), ``kind`` and ``kind_code`` (the uint8 the contract stores),
    ``subject_id`` and ``subject``, ``status``, ``confirmations``, ``confirmed_at``."""
    if anchor is None:
        return None
    deployment = anchor.deployment
    return {
        "id": anchor.pk,
        "status": anchor.status,
        "chain_id": deployment.chain_id if deployment is not None else None,
        "contract": REGISTRY,
        "contract_address": deployment.contract_address if deployment is not None else None,
        "tx_hash": anchor.tx_hash or None,
        "block_number": anchor.block_number,
        "confirmations": anchor.confirmations,
        "confirmed_at": anchor.confirmed_at,
        "kind": anchor.kind,
        "kind_code": anchor.kind_code,
        "subject_id": anchor.subject_id,
        "subject": anchor.subject or None,
        "root": anchor.root,
    }


def anchor_facts_for(anchor: Anchor | None, subject: str) -> dict[str, Any] | None:
    """``anchor_facts``, naming ``subject`` where the anchor predates stored subjects (its ``subject`` is blank) and
    ``subject`` is what its ``subject_id`` hashes: the caller knows what it anchored."""
    facts = anchor_facts(anchor)
    if facts is not None and facts["subject"] is None and subject_matches(subject, facts["subject_id"]):
        facts["subject"] = subject
    return facts


def tree_proof(
    tree: merkle.StandardMerkleTree, index: int, *, artifact: str, anchor: Anchor | None, **extra: Any
) -> dict[str, Any]:
    """The proof of value ``index`` of ``tree`` (its position in the tree's ``values``), self-described.

    ``extra`` adds the artifact's own keys (``run``, ``receipt``, ``snapshot``...). The proof is checked before it
    is returned: a stored tree that no longer proves its own value raises ValueError."""
    value = tree.value_json(index)
    proof = tree.proof(index)
    leaf = tree.leaf(index)
    if not merkle.verify(tree.root, tree.leaf_types, value, proof):
        raise ValueError(f"the stored tree does not prove its value {index}")
    return {
        "schema": PROOF_SCHEMA,
        "artifact": artifact,
        "format": merkle.FORMAT,
        "leafEncoding": list(tree.leaf_types),
        "value": value,
        "treeIndex": tree.tree_index(index),
        "leaf": leaf,
        "proof": proof,
        "root": tree.root,
        "anchor": anchor_facts(anchor),
        **extra,
    }


def subject_matches(subject: str | None, subject_id: str) -> bool:
    """True when ``subject`` is what ``subject_id`` hashes."""
    return bool(subject) and hashing.subject_id(subject) == subject_id
