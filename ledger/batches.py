"""The one shape of a sealed batch (inference runs, contribution receipts): a set of bytes32 hashes under one Merkle
root, which one anchor puts on chain. ``ledger.services.seal_batches`` seals them."""

from __future__ import annotations

from django.db import models


class SealedBatch(models.Model):
    """A sealed set of hashes anchored by one Merkle root: one transaction whatever the number of hashes.

    Layout (OpenZeppelin StandardMerkleTree): leaf values ``("bytes32",)`` = ``(hash,)``, leaf =
    keccak256(keccak256(abi.encode(hash))), sorted pairs. ``tree`` holds the dumped tree, so a member's proof is a
    lookup that any standard tool (``@openzeppelin/merkle-tree``, ``MerkleProof.sol``) verifies as it is. Each
    concrete batch adds its ``anchor`` (a one-to-one link to ``ledger.Anchor``, with a related name of its own).
    """

    LEAF_TYPES = ("bytes32",)
    # each concrete batch names what it seals: the anchor kind of its root, the field of an item holding its bytes32
    # hash (its leaf), the one its age is counted from, and the settings that make a batch due (full at SIZE_SETTING
    # items, or its oldest item AGE_SETTING seconds old)
    ANCHOR_KIND: str
    LEAF_FIELD: str
    AGE_FIELD: str
    SIZE_SETTING: str
    AGE_SETTING: str

    root = models.CharField(max_length=66, unique=True)
    size = models.PositiveIntegerField()
    tree = models.JSONField(help_text="StandardMerkleTree.dump(): format, leafEncoding, tree, values.")
    sealed_at = models.DateTimeField()

    class Meta:
        abstract = True
        ordering = ["-sealed_at", "-id"]
