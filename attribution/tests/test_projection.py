from __future__ import annotations

import numpy as np
import pytest

from attribution.projection import CountSketch, cosine_scores, project_vectors, row_norms


def test_the_same_seed_gives_the_same_projection_and_another_seed_another() -> None:
    vectors = np.random.default_rng(0).standard_normal((4, 5000)).astype(np.float32)

    first = project_vectors(vectors, seed=7, k=256)
    again = project_vectors(vectors, seed=7, k=256)
    other = project_vectors(vectors, seed=8, k=256)

    assert np.array_equal(first, again)
    assert not np.allclose(first, other)


def test_the_projection_is_pinned_so_a_numpy_upgrade_cannot_change_stored_features() -> None:
    sketch = CountSketch(seed=42, k=1024, sizes={"model.layers.0.self_attn.q_proj.lora_A": 8})

    buckets, signs = sketch.hashes("model.layers.0.self_attn.q_proj.lora_A")

    assert buckets.tolist() == PINNED_BUCKETS
    assert signs.tolist() == PINNED_SIGNS


PINNED_BUCKETS = [900, 455, 520, 47, 961, 474, 710, 174]
PINNED_SIGNS = [-1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0]


def test_inner_products_are_approximately_preserved() -> None:
    rng = np.random.default_rng(1)
    base = rng.standard_normal(20_000)
    # pairs from unrelated to nearly parallel, as gradients are
    vectors = np.stack([base + rng.standard_normal(20_000) * noise for noise in (0.0, 0.3, 1.0, 3.0, 100.0)])
    exact = vectors @ vectors.T / np.outer(np.linalg.norm(vectors, axis=1), np.linalg.norm(vectors, axis=1))

    projected = project_vectors(vectors, seed=3, k=1024).astype(np.float64)
    norms = np.linalg.norm(projected, axis=1)
    approx = projected @ projected.T / np.outer(norms, norms)

    # |error| of a cosine is about sqrt(2 / k) ~ 0.044 at most; 0.15 is over three standard deviations
    assert np.abs(approx - exact).max() < 0.15


def test_blocks_are_projected_independently_of_their_order() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((3, 100)), rng.standard_normal((3, 40))
    one = CountSketch(seed=1, k=64, sizes={"a": 100, "b": 40})
    two = CountSketch(seed=1, k=64, sizes={"b": 40, "a": 100})

    assert np.array_equal(one.project({"a": a, "b": b}), two.project({"b": b, "a": a}))
    assert np.allclose(one.project({"a": a[0], "b": b[0]}), one.project({"a": a, "b": b})[0])


def test_cosine_scores_rank_the_matching_row_first_and_zero_rows_score_zero() -> None:
    features = np.array([[1.0, 0.0], [0.0, 0.0], [3.0, 3.0]], dtype=np.float32)

    scores = cosine_scores(features, row_norms(features), np.array([2.0, 2.0], dtype=np.float32))

    assert scores.tolist() == pytest.approx([2**-0.5, 0.0, 1.0])
    assert cosine_scores(features, row_norms(features), np.zeros(2, dtype=np.float32)).tolist() == [0.0, 0.0, 0.0]
