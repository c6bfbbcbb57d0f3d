"""Seeded count-sketch projection of named parameter blocks to a fixed width, numpy only.

Each coordinate ``j`` of a named block (a LoRA A or B matrix, flattened row-major) goes to bucket ``h(j) mod k``
with sign ``s(j)``, both read off a SplitMix64 hash of ``(seed, block name, j)``. The projection is never stored:
it is a pure function of the seed, the block names and the width, regenerated bit for bit on any machine and any
numpy version (numpy's own generators promise no stream stability across versions, a fixed integer hash does).
Applying it costs O(#parameters) per vector and no matrix. ``E[<Sx, Sy>] = <x, y>`` with variance at most
``2 |x|^2 |y|^2 / k``: the Johnson-Lindenstrauss behaviour of a dense Gaussian projection at a fraction of its cost.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

METHOD = "countsketch-splitmix64-v1"
_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser, vectorised over uint64 (wrapping arithmetic is the point)."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
        return z ^ (z >> np.uint64(31))


def _block_key(seed: int, name: str) -> np.uint64:
    digest = hashlib.sha256(f"{seed}\x00{name}".encode()).digest()
    return np.uint64(int.from_bytes(digest[:8], "little"))


def block_hashes(seed: int, name: str, size: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Bucket (int64 in ``[0, k)``) and sign (float32 +-1) of each of a block's ``size`` coordinates."""
    with np.errstate(over="ignore"):
        h = _splitmix64(np.arange(size, dtype=np.uint64) ^ _block_key(seed, name))
    buckets = (h % np.uint64(k)).astype(np.int64)
    # the top bit is independent of the low bits that pick the bucket
    signs = np.where((h >> np.uint64(63)) == 1, np.float32(-1.0), np.float32(1.0)).astype(np.float32)
    return buckets, signs


@dataclass(frozen=True)
class CountSketch:
    """A seeded projection of the named blocks ``sizes`` (name -> number of coordinates) to width ``k``.

    Promises: the same seed, names, sizes and ``k`` give the same projection; the block order in ``sizes`` does not
    matter (each block hashes on its own name).
    """

    seed: int
    k: int
    sizes: Mapping[str, int]

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("k must be at least 1")

    @property
    def method(self) -> str:
        return METHOD

    def hashes(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return block_hashes(self.seed, name, self.sizes[name], self.k)

    def project(self, blocks: Mapping[str, np.ndarray]) -> np.ndarray:
        """Project a batch: ``blocks[name]`` is ``[n, size]`` (or ``[size]`` for one vector); returns float32
        ``[n, k]`` (or ``[k]``). Every block of ``sizes`` must be present."""
        if set(blocks) != set(self.sizes):
            raise ValueError("the blocks must be exactly the sketch's named blocks")
        single = next(iter(blocks.values())).ndim == 1
        out: np.ndarray | None = None
        for name in sorted(blocks):
            values = np.asarray(blocks[name], dtype=np.float32)
            values = values.reshape(1, -1) if single else values.reshape(values.shape[0], -1)
            if values.shape[1] != self.sizes[name]:
                raise ValueError(f"block {name} has {values.shape[1]} coordinates, expected {self.sizes[name]}")
            if out is None:
                out = np.zeros((values.shape[0], self.k), dtype=np.float32)
            buckets, signs = self.hashes(name)
            for row in range(values.shape[0]):
                out[row] += np.bincount(buckets, weights=values[row] * signs, minlength=self.k).astype(np.float32)
        assert out is not None
        return out[0] if single else out


def project_vectors(vectors: np.ndarray, *, seed: int, k: int, block: str = "x") -> np.ndarray:
    """Project plain vectors (``[n, d]``) as one named block; a convenience for tests and benchmarks."""
    vectors = np.asarray(vectors, dtype=np.float32)
    sketch = CountSketch(seed=seed, k=k, sizes={block: vectors.shape[-1]})
    return sketch.project({block: vectors})


def cosine_scores(features: np.ndarray, norms: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine of ``query`` (``[k]``) with every row of ``features`` (``[n, k]``, row norms ``norms``): one
    matrix-vector product. Rows or a query of zero norm score 0."""
    query = np.asarray(query, dtype=np.float32)
    query_norm = float(np.linalg.norm(query))
    if query_norm == 0.0 or len(features) == 0:
        return np.zeros(len(features), dtype=np.float32)
    dots = np.asarray(features @ query, dtype=np.float32)
    safe = np.where(norms > 0, norms, 1.0).astype(np.float32)
    return np.where(norms > 0, dots / (safe * np.float32(query_norm)), np.float32(0.0)).astype(np.float32)


def row_norms(features: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """L2 norm of each row, in chunks so a memory-mapped matrix is never copied whole."""
    return np.concatenate(
        [np.linalg.norm(np.asarray(features[i : i + chunk]), axis=1) for i in range(0, len(features), chunk)]
        or [np.zeros(0, dtype=np.float32)]
    ).astype(np.float32)


def names_sizes(shapes: Mapping[str, Sequence[int]]) -> dict[str, int]:
    """Block sizes from parameter shapes."""
    return {name: int(np.prod(shape)) for name, shape in shapes.items()}
