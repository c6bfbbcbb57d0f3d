"""Our StandardMerkleTree against OpenZeppelin's own library, run by node: same root, same proofs, same dump."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest

from ledger import merkle

SCRIPT = Path(__file__).with_name("oz_merkle.js")


def openzeppelin(types: list[str], values: list[list[object]], proof_indices: list[int], **extra: object) -> dict:
    request = {"types": types, "values": values, "proofIndices": proof_indices, **extra}
    done = subprocess.run(
        ["node", str(SCRIPT)], input=json.dumps(request), capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(done.stdout)


def snapshot_values(count: int, seed: int) -> list[tuple[str, str, int]]:
    rng = random.Random(seed)
    return [
        ("0x" + rng.randbytes(32).hex(), "0x" + rng.randbytes(20).hex(), rng.randrange(1, 2**64)) for _ in range(count)
    ]


def as_json(values: list[tuple[str, str, int]]) -> list[list[object]]:
    return [[h, a, str(n)] for h, a, n in values]


@pytest.mark.parametrize("count", [1, 2, 3, 777, 1024])
def test_it_builds_the_same_root_and_proofs_as_openzeppelin(count: int) -> None:
    values = snapshot_values(count, seed=count)
    tree = merkle.StandardMerkleTree.of(values)
    indices = (
        list(range(count)) if count <= 8 else sorted({0, 1, count // 2, count - 2, count - 1, *range(3, count, 37)})
    )

    reference = openzeppelin(list(merkle.DEFAULT_LEAF_TYPES), as_json(values), indices)

    assert tree.root == reference["root"]
    for index in indices:
        assert tree.proof(index) == reference["proofs"][str(index)], index
        assert merkle.verify(tree.root, merkle.DEFAULT_LEAF_TYPES, values[index], tree.proof(index))


def test_its_dump_loads_in_openzeppelin_and_back_here() -> None:
    values = snapshot_values(5, seed=7)
    tree = merkle.StandardMerkleTree.of(values)
    dump = tree.dump()

    reference = openzeppelin(list(merkle.DEFAULT_LEAF_TYPES), as_json(values), [], load=dump)
    loaded = merkle.StandardMerkleTree.load(json.loads(json.dumps(dump)))

    assert dump["format"] == "standard-v1"
    assert reference["loadedRoot"] == tree.root
    assert loaded.root == tree.root
    assert [loaded.proof(i) for i in range(5)] == [tree.proof(i) for i in range(5)]


def test_it_matches_openzeppelin_for_other_leaf_encodings() -> None:
    types = ["address", "uint256", "string"]
    values = [["0x" + f"{i:040x}", i * 10**18, f"record {i}"] for i in range(1, 10)]
    tree = merkle.StandardMerkleTree.of(values, types)

    reference = openzeppelin(types, [[a, str(n), s] for a, n, s in values], list(range(9)), multiproof=[1, 4, 6])

    assert tree.root == reference["root"]
    assert [tree.proof(i) for i in range(9)] == [reference["proofs"][str(i)] for i in range(9)]
    ours = tree.multiproof([1, 4, 6])
    assert ours["proof"] == reference["multiproof"]["proof"]
    assert ours["proofFlags"] == reference["multiproof"]["proofFlags"]
    assert merkle.verify_multiproof(tree.root, types, ours)


def test_it_rejects_tampered_values_proofs_and_roots() -> None:
    values = snapshot_values(10, seed=3)
    tree = merkle.StandardMerkleTree.of(values)
    proof = tree.proof(4)
    record_hash, contributor, contribution_id = values[4]

    assert merkle.verify(tree.root, merkle.DEFAULT_LEAF_TYPES, values[4], proof)
    assert not merkle.verify(
        tree.root, merkle.DEFAULT_LEAF_TYPES, (record_hash, contributor, contribution_id + 1), proof
    )
    assert not merkle.verify(tree.root, merkle.DEFAULT_LEAF_TYPES, values[4], [proof[0][:-1] + "0", *proof[1:]])
    assert not merkle.verify("0x" + "11" * 32, merkle.DEFAULT_LEAF_TYPES, values[4], proof)


def test_it_finds_a_proof_by_value() -> None:
    values = snapshot_values(6, seed=11)
    tree = merkle.StandardMerkleTree.of(values)

    assert tree.proof_for(values[2]) == tree.proof(2)
    with pytest.raises(KeyError):
        tree.proof_for(("0x" + "00" * 32, "0x" + "00" * 20, 1))


def test_it_refuses_malformed_leaves() -> None:
    with pytest.raises(ValueError):
        merkle.StandardMerkleTree.of([])
    with pytest.raises(ValueError):
        merkle.StandardMerkleTree.of([("0x1234", "0x" + "00" * 20, 1)])
    with pytest.raises(ValueError):
        merkle.StandardMerkleTree.of([("0x" + "00" * 32, "0x" + "00" * 20, -1)])
