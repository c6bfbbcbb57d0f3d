"""Merkle trees in OpenZeppelin's StandardMerkleTree layout, so that `@openzeppelin/merkle-tree` and `MerkleProof.sol`
verify our proofs and load our dumps.

The layout, exactly as their library builds it:

- leaf = keccak256(keccak256(abi.encode(values))), the double hash guarding against second-preimage attacks;
- leaves sorted by hash, then stored right to left at the end of a flat array of 2n-1 nodes, so node i has children
  2i+1 and 2i+2 and the root is node 0 (a complete tree, not a power-of-two one);
- inner node = keccak256 of the two children in ascending byte order (sorted pairs: proofs carry no left/right).

Built for a million leaves: the default leaf encoding ``(bytes32, address, uint256)`` is assembled as fixed-width
bytes instead of going through eth_abi, and hashing calls pycryptodome's compiled Keccak directly, reusing one state,
which is about three times faster than a hash object per node.
"""

from __future__ import annotations

import ctypes
import importlib.util
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from Crypto.Hash import keccak as _pycryptodome_keccak
from eth_abi import encode as abi_encode
from eth_utils import to_checksum_address

DEFAULT_LEAF_TYPES: tuple[str, ...] = ("bytes32", "address", "uint256")
FORMAT = "standard-v1"

_UINT256_LIMIT = 1 << 256
_ADDRESS_PAD = bytes(12)


def keccak256(data: bytes) -> bytes:
    return _pycryptodome_keccak.new(data=data, digest_bits=256).digest()


def keccak256_hasher() -> Callable[[bytes], bytes]:
    """A keccak256 function for hashing many short inputs fast: pysha3's ``keccak_256`` where it is installed (a
    fresh C hash object per call, the cheapest), else a ``_Keccak`` (pycryptodome's compiled code through ctypes,
    ~3 us a call against ~8 us through eth_hash, or plain ``keccak256`` where that library can't be loaded).

    A ``_Keccak`` holds one hashing state, so it must not be shared between threads: make one per job.
    """
    if _SHA3_KECCAK is not None:
        return _sha3_hasher(_SHA3_KECCAK)
    return _Keccak()


def keccak256_object() -> Callable[[bytes], Any] | None:
    """pysha3's ``keccak_256`` constructor (``keccak256(data) == keccak256_object()(data).digest()``) where it is
    installed and checked, else None: a hot loop calls it inline, two C calls and no Python frame per hash."""
    return _SHA3_KECCAK


def _sha3_hasher(keccak_256: Any) -> Callable[[bytes], bytes]:
    def sha3_keccak256(data: bytes) -> bytes:
        return keccak_256(data).digest()

    return sha3_keccak256


def _agrees_with_keccak256(hasher: Callable[[bytes], bytes]) -> bool:
    """Whether a fast keccak gives the reference digests, on short, block-sized and long inputs."""
    samples = (b"", b"abc", bytes(range(256)) * 3, "é数据".encode() * 1000)
    return all(hasher(sample) == keccak256(sample) for sample in samples)


def _load_sha3_keccak() -> Any:
    """pysha3's (or safe-pysha3's) ``keccak_256``, if it is installed and gives Ethereum's keccak256."""
    try:
        from sha3 import keccak_256
    except ImportError:
        return None
    return keccak_256 if _agrees_with_keccak256(_sha3_hasher(keccak_256)) else None


def _load_keccak_lib() -> Any:
    """Our own handle on pycryptodome's keccak library, so nothing we set on it touches pycryptodome's.

    A PyDLL keeps the GIL during calls: releasing and retaking it would cost more than one short hash.
    """
    spec = importlib.util.find_spec("Crypto.Hash._keccak")
    if spec is None or not spec.origin:
        return None
    lib = ctypes.PyDLL(spec.origin)
    for name in ("keccak_init", "keccak_destroy", "keccak_reset", "keccak_absorb", "keccak_digest"):
        getattr(lib, name).restype = ctypes.c_int
    return lib


try:
    _KECCAK_LIB = _load_keccak_lib()
except (OSError, AttributeError):
    _KECCAK_LIB = None
_FAST_KECCAK = _KECCAK_LIB is not None  # until _Keccak, below, has been checked against the reference
_SHA3_KECCAK = _load_sha3_keccak()


class _Keccak:
    """One reusable Keccak-256 state in pycryptodome's compiled library, driven through ctypes: three foreign calls
    per hash and no Python object per hash, the cheapest way to hash millions of short inputs without a compiler.

    PyDLL keeps the GIL during the (sub-microsecond) calls, which is faster than releasing it and makes one state safe
    within a thread; still, make one per tree build. Falls back to hash objects where the library cannot be loaded.
    """

    def __init__(self) -> None:
        self.fast = _FAST_KECCAK
        if not self.fast:
            return
        lib, state = _KECCAK_LIB, ctypes.c_void_p()
        if lib.keccak_init(ctypes.byref(state), ctypes.c_size_t(64), ctypes.c_uint8(24)):
            self.fast = False
            return
        self._lib, self._state, self._out = lib, state, ctypes.create_string_buffer(32)

    def __call__(self, data: bytes) -> bytes:
        if not self.fast:
            return keccak256(data)
        lib, state, out = self._lib, self._state, self._out
        lib.keccak_reset(state)
        lib.keccak_absorb(state, data, len(data))
        lib.keccak_digest(state, out, 32, 1)
        return out.raw

    def leaves(self, encoded: Iterable[bytes]) -> list[bytes]:
        """keccak256(keccak256(data)) of each item."""
        if not self.fast:
            return [keccak256(keccak256(data)) for data in encoded]
        state, out = self._state, self._out
        reset, absorb, digest = self._lib.keccak_reset, self._lib.keccak_absorb, self._lib.keccak_digest
        result: list[bytes] = []
        append = result.append
        for data in encoded:
            reset(state)
            absorb(state, data, len(data))
            digest(state, out, 32, 1)
            reset(state)
            absorb(state, out, 32)
            digest(state, out, 32, 1)
            append(out.raw)
        return result

    def fill(self, tree: list[bytes], count: int) -> None:
        """Hash the inner nodes ``count - 1 .. 0`` of a flat tree whose leaves are already in place."""
        if not self.fast:
            for i in range(count - 1, -1, -1):
                a, b = tree[2 * i + 1], tree[2 * i + 2]
                tree[i] = keccak256(a + b if a <= b else b + a)
            return
        state, out = self._state, self._out
        reset, absorb, digest = self._lib.keccak_reset, self._lib.keccak_absorb, self._lib.keccak_digest
        for i in range(count - 1, -1, -1):
            a, b = tree[2 * i + 1], tree[2 * i + 2]
            reset(state)
            absorb(state, a + b if a <= b else b + a, 64)
            digest(state, out, 32, 1)
            tree[i] = out.raw

    def __del__(self) -> None:
        if getattr(self, "fast", False):
            self._lib.keccak_destroy(self._state)


def _ctypes_keccak_works() -> bool:
    try:
        hasher = _Keccak()
        return hasher.fast and _agrees_with_keccak256(hasher)
    except (OSError, AttributeError, ctypes.ArgumentError):
        return False


_FAST_KECCAK = _FAST_KECCAK and _ctypes_keccak_works()


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


def _node_hash(hasher: Any, a: bytes, b: bytes) -> bytes:
    return hasher(a + b if a <= b else b + a)


def process_proof(leaf: str | bytes, proof: Iterable[str | bytes]) -> str:
    """The root that ``proof`` leads to from ``leaf`` (a leaf hash), with sorted-pair hashing."""
    node = _bytes32(leaf)
    for sibling in proof:
        node = _node_hash(keccak256, node, _bytes32(sibling))
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
        stack.append(_node_hash(keccak256, a, b))
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
        hasher = _Keccak()
        if leaf_types == DEFAULT_LEAF_TYPES:
            stored = [tuple(value) for value in values]
            encoded = map(_encode_default, stored)
        else:
            stored = [_normalized(leaf_types, value) for value in values]
            types = list(leaf_types)
            encoded = (abi_encode(types, list(value)) for value in stored)
        if not stored:
            raise ValueError("a Merkle tree needs at least one leaf")
        hashes = hasher.leaves(encoded)
        n = len(hashes)
        order = sorted(range(n), key=hashes.__getitem__)
        tree: list[bytes] = [b""] * (n - 1) + [hashes[i] for i in reversed(order)]
        hasher.fill(tree, n - 1)
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
        hasher = _Keccak()
        for i in range(size):
            left, right = 2 * i + 1, 2 * i + 2
            if right < size and tree[i] != _node_hash(hasher, tree[left], tree[right]):
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
