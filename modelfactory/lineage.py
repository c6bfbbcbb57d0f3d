"""The lineage manifest of a model version: what made it, as canonical JSON, and the hash that goes on chain.

Canonical means ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)`` encoded
as UTF-8: anyone holding the manifest can re-serialise it and get the same bytes. The hash is keccak256 (like record
hashes and Merkle roots), so it is a ``bytes32`` the LineageRegistry stores as is, and an EVM contract can recompute
it; the adapter itself is identified by the SHA-256 of its weights file (``training.adapter_sha256``), the hash
ordinary tools (``sha256sum``) check.
"""

from __future__ import annotations

import functools
import json
import math
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from eth_utils import keccak

MANIFEST_SCHEMA = "openledger.model_version.v1"
ROOT = Path(__file__).resolve().parent.parent


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8; NaN and infinities are refused (they are not JSON)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def manifest_hash(data: bytes) -> str:
    """keccak256 of the manifest bytes as 0x-prefixed lowercase hex (a bytes32 for the chain)."""
    return "0x" + keccak(data).hex()


@functools.cache
def code_version() -> str:
    """The git commit this code runs from (``git rev-parse HEAD``), or "unknown" outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip()
    return commit if len(commit) == 40 else "unknown"


def finite(value: Any) -> Any:
    # a diverged run can report NaN losses; the manifest says "no value" rather than break canonical JSON
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def build_manifest(
    *,
    base_model: Mapping[str, str],
    parents: Iterable[Mapping[str, Any]],
    snapshots: Iterable[Mapping[str, Any]],
    config: Mapping[str, Any],
    seed: int,
    record_type: str,
    code_version: str,
    adapter_sha256: str,
    metrics: Mapping[str, Any],
    attribution_index: Mapping[str, Any] | None = None,
    job_id: int | None = None,
) -> bytes:
    """The canonical manifest bytes.

    ``base_model``: ``{"name", "weights_sha256"}``; ``parents``: ``{"id", "manifest_hash", "weight", "relation"}``
    each (sorted by id here); ``snapshots``: ``{"datanet", "number", "id", "merkle_root"}`` each (sorted by id);
    ``config``: ``TrainingConfig.to_dict()``. ``attribution_index``: the version's attribution index as
    ``AttributionIndex.manifest_entry`` gives it (status, method, seed, width, feature and span hashes, records),
    anchored with the rest; absent from manifests made before indexes existed, so those keep their bytes.
    ``job_id``: the fine-tune or merge job that made the version, so that two identical runs (training is
    deterministic) still make two versions with a manifest each (docs/decisions.md, "Identical fine-tunes");
    absent from manifests made before, which keep their bytes.
    """
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "base_model": {"name": base_model["name"], "weights_sha256": base_model["weights_sha256"]},
        "parents": sorted(
            (
                {
                    "id": int(p["id"]),
                    "manifest_hash": p["manifest_hash"],
                    "weight": float(p["weight"]),
                    "relation": p["relation"],
                }
                for p in parents
            ),
            key=lambda p: p["id"],
        ),
        "snapshots": sorted(
            (
                {
                    "datanet": s["datanet"],
                    "number": int(s["number"]),
                    "id": int(s["id"]),
                    "merkle_root": s["merkle_root"],
                }
                for s in snapshots
            ),
            key=lambda s: s["id"],
        ),
        "config": dict(config),
        "seed": int(seed),
        "record_type": record_type,
        "code_version": code_version,
        "adapter_sha256": adapter_sha256,
        "metrics": dict(metrics),
    }
    if attribution_index is not None:
        manifest["attribution_index"] = dict(attribution_index)
    if job_id is not None:
        manifest["job"] = {"id": int(job_id)}
    return canonical_json(finite(manifest))
