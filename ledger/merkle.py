"""Merkle trees in OpenZeppelin's StandardMerkleTree layout, so that `@openzeppelin/merkle-tree` and `MerkleProof.sol`
verify our proofs and load our dumps.

The layout, exactly as their library builds it:

- leaf = keccak256(keccak256(abi.encode(values))), the double hash guarding against second-preimage attacks;
- leaves sorted by hash, then stored right to left at the end of a flat array of 2n-1 nodes, so node i has children
  2i+1 and 2i+2 and the root is node 0 (a complete tree, not a power-of-two one);
- inner node = keccak256 of the two children in ascending byte order (sorted pairs: proofs carry no left/right).

Built for a million leaves: the default leaf encoding ``(bytes32, address, uint256)`` is assembled as fixed-width
bytes instead of going through eth_abi, and the build's loops hash with safe-pysha3's hash objects made inline
(``ledger.hashing.new_keccak256``): two C calls and no Python frame per node.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import to_checksum_address

from .hashing import keccak256, new_keccak256

DEFAULT_LEAF_TYPES: tuple[str, ...] = ("bytes32", "address", "uint256")
FORMAT = "standard-v1"

_UINT256_LIMIT = 1 << 256
_ADDRESS_PAD = bytes(12)


def _leaf_hashes(encoded: Iterable[bytes]) -> list[bytes]:
    """keccak256(keccak256(data)) of each item: the hot loop of a tree build, hash objects made inline."""
    new = new_keccak256
    return [new(new(data).digest()).digest() for data in encoded]


def _fill(tree: list[bytes], count: int) -> None:
    """Hash the inner nodes ``count - 1 .. 0`` of a flat tree whose leaves are already in place."""
    new = new_keccak256
    for i in range(count - 1, -1, -1):
        a, b = tree[2 * i + 1], tree[2 * i + 2]
        tree[i] = new(a + b if a <= b else b + a).digest()


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _bytes32(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
    elif isinstance(value, str):
        text = value[2:] if value[:2] in ("0x", "0X") else value
        if len(text) != 64:
            raise ValueError(f"expected 32 bytes of hex, got {value!r}")
        raw = bytes.fromhex(text)
    else:
        raise TypeError(f"expected bytes or a hex string for bytes32, got {type(value).__name__}")
    if len(raw) != 32:
        raise ValueError(f"expected 32 bytes, got {len(raw)}")
    return raw


def _address(value: object) -> bytes:
    if isinstance(value, bytes | bytearray) and len(value) == 20:
        return bytes(value)
    if not isinstance(value, str) or value[:2] not in ("0x", "0X") or len(value) != 42:
        raise ValueError(f"expected a 0x-prefixed 20-byte hex address, got {value!r}")
    return bytes.fromhex(value[2:])


def _uint256(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"expected an integer for uint256, got {type(value).__name__}")
    number = int(value, 0) if isinstance(value, str) else value
    if not 0 <= number < _UINT256_LIMIT:
        raise ValueError(f"{value!r} does not fit uint256")
    return number


def _normalized(leaf_types: Sequence[str], value: Sequence[Any]) -> tuple[Any, ...]:
    if len(value) != len(leaf_types):
        raise ValueError(f"expected {len(leaf_types)} values {tuple(leaf_types)}, got {len(value)}")
    return tuple(_from_json(t, v) for t, v in zip(leaf_types, value, strict=True))


def _from_json(abi_type: str, value: Any) -> Any:
    """A value as eth_abi wants it, from what a dump (or a caller) holds: hex strings for bytes, decimal strings for
    integers that JSON cannot carry exactly."""
    if abi_type.endswith("]"):
        inner = abi_type[: abi_type.rindex("[")]
        return [_from_json(inner, item) for item in value]
    if abi_type.startswith(("uint", "int")):
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise TypeError(f"expected an integer for {abi_type}, got {value!r}")
        return int(value, 0) if isinstance(value, str) else value
    if abi_type.startswith("bytes") and isinstance(value, str):
        return bytes.fromhex(value[2:] if value[:2] in ("0x", "0X") else value)
    if abi_type == "address" and isinstance(value, bytes | bytearray):
        return _hex(bytes(value))
    if abi_type == "bytes32":
        return _bytes32(value)
    return value


def _to_json(abi_type: str, value: Any) -> Any:
    if abi_type.endswith("]"):
        inner = abi_type[: abi_type.rindex("[")]
        return [_to_json(inner, item) for item in value]
    value = _from_json(abi_type, value)
    if abi_type.startswith(("uint", "int")):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return _hex(bytes(value))
    if abi_type == "address":
        return to_checksum_address(value)
    return value


def _encode_default(value: Sequence[Any]) -> bytes:
    record_hash, account, number = value
    # the common shapes (32 raw bytes, a 0x address string, an int) skip the checking helpers: this runs per leaf
    if type(record_hash) is not bytes or len(record_hash) != 32:
        record_hash = _bytes32(record_hash)
    if type(account) is str and len(account) == 42 and account[:2] == "0x":
        account_bytes = bytes.fromhex(account[2:])
    else:
        account_bytes = _address(account)
    if type(number) is not int or not 0 <= number < _UINT256_LIMIT:
        number = _uint256(number)
    return record_hash + _ADDRESS_PAD + account_bytes + number.to_bytes(32, "big")


def encode_leaf(leaf_types: Sequence[str], value: Sequence[Any]) -> bytes:
    """abi.encode(values): fixed-width bytes for the default types, eth_abi for anything else."""
    if tuple(leaf_types) == DEFAULT_LEAF_TYPES:
        return _encode_default(value)
    return abi_encode(list(leaf_types), list(_normalized(leaf_types, value)))


def leaf_hash(leaf_types: Sequence[str], value: Sequence[Any]) -> str:
    """The leaf as MerkleProof.sol sees it: keccak256(bytes.concat(keccak256(abi.encode(values))))."""
    return _hex(keccak256(keccak256(encode_leaf(leaf_types, value))))


def _node_hash(a: bytes, b: bytes) -> bytes:
    return keccak256(a + b if a <= b else b + a)


def process_proof(leaf: str | bytes, proof: Iterable[str | bytes]) -> str:
    """The root that ``proof`` leads to from ``leaf`` (a leaf hash), with sorted-pair hashing."""
    node = _bytes32(leaf)
    for sibling in proof:
        node = _node_hash(node, _bytes32(sibling))
    return _hex(node)


def verify(root: str | bytes, leaf_types: Sequence[str], value: Sequence[Any], proof: Iterable[str | bytes]) -> bool:
    """True when ``proof`` shows that ``value`` is a leaf of the tree whose root is ``root``."""
    return process_proof(leaf_hash(leaf_types, value), proof) == _hex(_bytes32(root))


def verify_multiproof(root: str | bytes, leaf_types: Sequence[str], multiproof: dict[str, Any]) -> bool:
    """True when ``multiproof`` (``leaves`` as values, ``proof``, ``proofFlags``) proves all its leaves at once."""
    leaves = [_bytes32(leaf_hash(leaf_types, value)) for value in multiproof["leaves"]]
    proof = [_bytes32(node) for node in multiproof["proof"]]
    flags = list(multiproof["proofFlags"])
    if len(leaves) + len(proof) != len(flags) + 1 or len(proof) < flags.count(False):
        return False
    stack, extra = list(leaves), list(proof)
    for flag in flags:
        a = stack.pop(0)
        b = stack.pop(0) if flag else extra.pop(0)
        stack.append(_node_hash(a, b))
    computed = stack.pop() if stack else extra.pop(0)
    return _hex(computed) == _hex(_bytes32(root))


class StandardMerkleTree:
    """A built tree: ``root``, a proof per value, the ``standard-v1`` dump. Build it with :meth:`of`."""

    def __init__(
        self, *, tree: list[bytes], values: list[tuple[Any, ...]], tree_indices: list[int], leaf_types: Sequence[str]
    ) -> None:
        self._tree = tree
        self._values = values
        self._tree_indices = tree_indices
        self.leaf_types = tuple(leaf_types)
        self._lookup: dict[bytes, int] | None = None

    @classmethod
    def of(cls, values: Iterable[Sequence[Any]], leaf_types: Sequence[str] = DEFAULT_LEAF_TYPES) -> StandardMerkleTree:
        """Build the tree of ``values`` (tuples matching ``leaf_types``); proofs are asked by index in this order."""
        leaf_types = tuple(leaf_types)
        if leaf_types == DEFAULT_LEAF_TYPES:
            stored = [tuple(value) for value in values]
            encoded = map(_encode_default, stored)
        else:
            stored = [_normalized(leaf_types, value) for value in values]
            types = list(leaf_types)
            encoded = (abi_encode(types, list(value)) for value in stored)
        if not stored:
            raise ValueError("a Merkle tree needs at least one leaf")
        hashes = _leaf_hashes(encoded)
        n = len(hashes)
        order = sorted(range(n), key=hashes.__getitem__)
        tree: list[bytes] = [b""] * (n - 1) + [hashes[i] for i in reversed(order)]
        _fill(tree, n - 1)
        tree_indices = [0] * n
        last = 2 * n - 2
        for position, value_index in enumerate(order):
            tree_indices[value_index] = last - position
        return cls(tree=tree, values=stored, tree_indices=tree_indices, leaf_types=leaf_types)

    @classmethod
    def load(cls, data: dict[str, Any]) -> StandardMerkleTree:
        """A tree from a ``standard-v1`` dump (ours or `@openzeppelin/merkle-tree`'s), checked node by node."""
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown Merkle tree format {data.get('format')!r}")
        leaf_types = tuple(data["leafEncoding"])
        tree = [_bytes32(node) for node in data["tree"]]
        values = [_normalized(leaf_types, entry["value"]) for entry in data["values"]]
        loaded = cls(
            tree=tree, values=values, tree_indices=[e["treeIndex"] for e in data["values"]], leaf_types=leaf_types
        )
        loaded.validate()
        return loaded

    def validate(self) -> None:
        """Raise ValueError unless every value sits at its leaf and every inner node hashes its children."""
        tree, size = self._tree, len(self._tree)
        if size == 0 or size != 2 * len(self._values) - 1:
            raise ValueError("tree size does not match the number of values")
        for index, value in enumerate(self._values):
            if tree[self._tree_indices[index]] != _bytes32(leaf_hash(self.leaf_types, value)):
                raise ValueError(f"value {index} does not match its leaf")
        for i in range(size):
            left, right = 2 * i + 1, 2 * i + 2
            if right < size and tree[i] != _node_hash(tree[left], tree[right]):
                raise ValueError(f"node {i} does not hash its children")
            if left < size <= right:
                raise ValueError(f"node {i} has one child")

    @property
    def root(self) -> str:
        return _hex(self._tree[0])

    def __len__(self) -> int:
        return len(self._values)

    def value(self, index: int) -> tuple[Any, ...]:
        return self._values[index]

    def value_json(self, index: int) -> list[Any]:
        """Value ``index`` in the dump's JSON form (addresses checksummed, integers as decimal strings)."""
        return [_to_json(t, v) for t, v in zip(self.leaf_types, self._values[index], strict=True)]

    def nodes(self) -> Sequence[bytes]:
        """The flat node array (32 bytes each; root first, children of node i at 2i+1 and 2i+2), read-only, for
        callers that store the tree and serve proofs later without rebuilding it."""
        return tuple(self._tree)

    def tree_index(self, index: int) -> int:
        """Where value ``index``'s leaf sits in ``nodes()``."""
        return self._tree_indices[index]

    def leaf(self, index: int) -> str:
        """The leaf hash of value ``index`` (what ``LineageRegistry.verify`` takes as ``leaf``)."""
        return _hex(self._tree[self._tree_indices[index]])

    def index_of(self, value: Sequence[Any]) -> int:
        if self._lookup is None:
            self._lookup = {self._tree[tree_index]: i for i, tree_index in enumerate(self._tree_indices)}
        found = self._lookup.get(_bytes32(leaf_hash(self.leaf_types, value)))
        if found is None:
            raise KeyError("value is not a leaf of this tree")
        return found

    def proof(self, index: int) -> list[str]:
        """Sibling hashes from value ``index``'s leaf up to the root, as `getProof` returns them."""
        if not 0 <= index < len(self._values):
            raise IndexError(f"no value {index} in a tree of {len(self._values)}")
        tree, node, proof = self._tree, self._tree_indices[index], []
        while node > 0:
            proof.append(_hex(tree[node + 1 if node % 2 else node - 1]))
            node = (node - 1) // 2
        return proof

    def proof_for(self, value: Sequence[Any]) -> list[str]:
        return self.proof(self.index_of(value))

    def multiproof(self, indices: Iterable[int]) -> dict[str, Any]:
        """One proof for several values at once (`getMultiProof`), for MerkleProof.multiProofVerify."""
        nodes = sorted((self._tree_indices[i] for i in indices), reverse=True)
        if len(set(nodes)) != len(nodes):
            raise ValueError("cannot prove a duplicated index")
        by_node = {tree_index: i for i, tree_index in enumerate(self._tree_indices)}
        tree, stack, proof, flags = self._tree, list(nodes), [], []
        while stack and stack[0] > 0:
            j = stack.pop(0)
            sibling = j + 1 if j % 2 else j - 1
            if stack and stack[0] == sibling:
                flags.append(True)
                stack.pop(0)
            else:
                flags.append(False)
                proof.append(_hex(tree[sibling]))
            stack.append((j - 1) // 2)
        if not nodes:
            proof.append(_hex(tree[0]))
        return {"leaves": [self._values[by_node[n]] for n in nodes], "proof": proof, "proofFlags": flags}

    def dump(self) -> dict[str, Any]:
        """The ``standard-v1`` JSON that `StandardMerkleTree.load` reads (integers as decimal strings)."""
        return {
            "format": FORMAT,
            "leafEncoding": list(self.leaf_types),
            "tree": [_hex(node) for node in self._tree],
            "values": [
                {
                    "value": [_to_json(t, v) for t, v in zip(self.leaf_types, value, strict=True)],
                    "treeIndex": tree_index,
                }
                for value, tree_index in zip(self._values, self._tree_indices, strict=True)
            ],
        }
