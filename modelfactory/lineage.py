"""The lineage manifest of a model version: what made it, as canonical JSON, and the hash that goes on chain.

Manifests are schema ``openledger.model_version.v2``: RFC 8785 canonical JSON (``ledger.hashing.jcs``), so a
verifier in any language rebuilds the bytes from the object it parsed; the seeds are decimal strings (a JavaScript
reader cannot hold integers beyond 2**53 - 1), and ``adapter`` lists every file of the adapter (the weights and
``adapter_config.json``) with its SHA-256 and size. The hash is keccak256 of the manifest bytes
(``ledger.hashing.keccak_hex``, like record hashes and Merkle roots), so it is a ``bytes32`` the LineageRegistry
stores as is; the adapter itself is still identified by the SHA-256 of its weights file (``adapter_sha256``), the hash
ordinary tools (``sha256sum``) check.

Manifests stored before (schema ``openledger.model_version.v1``: ``ledger.hashing.canonical_json_v1``, integer
seeds, no ``adapter``) keep their bytes and hash: nothing re-serialises a stored manifest, every reader hashes or
parses the stored text, and ``manifest_adapter_files`` reads either form.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ledger import hashing

MANIFEST_SCHEMA = "openledger.model_version.v2"
MANIFEST_SCHEMA_V1 = "openledger.model_version.v1"
# What save_pretrained writes that a loader needs (peft also writes a README.md model card, which is not kept)
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
ROOT = Path(__file__).resolve().parent.parent


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def adapter_files(folder: str | Path) -> list[dict[str, Any]]:
    """``{"name", "sha256", "bytes"}`` of each adapter file in ``folder``, sorted by name: what the manifest lists.
    Raises FileNotFoundError when one is missing (an adapter without its config is not loadable)."""
    folder = Path(folder)
    return [
        {"name": name, "sha256": file_sha256(folder / name), "bytes": (folder / name).stat().st_size}
        for name in sorted(ADAPTER_FILES)
    ]


def manifest_schema(manifest: str | bytes) -> str:
    """The ``schema`` a stored manifest names."""
    return json.loads(manifest).get("schema", MANIFEST_SCHEMA_V1)


def manifest_adapter_files(manifest: str | bytes) -> list[dict[str, Any]] | None:
    """The adapter files a stored manifest hashes (v2), or None for a v1 manifest (it hashed only the weights, as
    ``adapter_sha256``)."""
    adapter = json.loads(manifest).get("adapter")
    return [dict(f) for f in adapter["files"]] if isinstance(adapter, Mapping) else None


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
    adapter_files: Iterable[Mapping[str, Any]],
    metrics: Mapping[str, Any],
    attribution_index: Mapping[str, Any] | None = None,
    job_id: int | None = None,
    supersedes: Mapping[str, Any] | None = None,
    world_size: int = 1,
) -> bytes:
    """The manifest bytes (schema v2, JCS).

    ``base_model``: ``{"name", "weights_sha256"}``; ``parents``: ``{"id", "manifest_hash", "weight", "relation"}``
    each (sorted by id here); ``snapshots``: ``{"datanet", "number", "id", "merkle_root"}`` each (sorted by id);
    ``config``: ``TrainingConfig.to_dict()``. ``adapter_files``: ``{"name", "sha256", "bytes"}`` of every file of
    the stored adapter (``adapter_files(folder)``), listed by name with their total as ``adapter.bytes``. ``seed``
    and the attribution index's seed are decimal strings. ``attribution_index``: the version's attribution index as
    ``AttributionIndex.manifest_entry`` gives it (status, method, seed, width, feature and span hashes, records),
    anchored with the rest; absent from manifests made before indexes existed, so those keep their bytes.
    ``job_id``: the fine-tune or merge job that made the version, so that two identical runs (training is
    deterministic) still make two versions with a manifest each (docs/decisions.md, "Identical fine-tunes");
    absent from manifests made before, which keep their bytes. ``supersedes``: ``{"id", "manifest_hash"}`` of the
    version trained on withdrawn records that this one retrains without them (issue 17); absent otherwise.
    ``world_size``: how many data-parallel processes trained the adapter (``modelfactory.distributed``), written as
    ``"world_size"`` only when above 1 (a one-process run states none, like the manifests made before it existed).
    """
    files = sorted(
        ({"name": str(f["name"]), "sha256": str(f["sha256"]), "bytes": int(f["bytes"])} for f in adapter_files),
        key=lambda f: f["name"],
    )
    if [f["name"] for f in files] != sorted(ADAPTER_FILES):
        raise ValueError(f"an adapter has {' and '.join(sorted(ADAPTER_FILES))}, got {[f['name'] for f in files]}")
    if next(f["sha256"] for f in files if f["name"] == ADAPTER_WEIGHTS) != adapter_sha256:
        raise ValueError("adapter_sha256 is not the SHA-256 of the listed weights file")
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
        "seed": hashing.uint_text(int(seed)),
        "record_type": record_type,
        "code_version": code_version,
        "adapter_sha256": adapter_sha256,
        "adapter": {"files": files, "bytes": sum(f["bytes"] for f in files)},
        "metrics": dict(metrics),
    }
    if attribution_index is not None:
        manifest["attribution_index"] = dict(attribution_index)
        if manifest["attribution_index"].get("seed") is not None:
            manifest["attribution_index"]["seed"] = hashing.uint_text(int(manifest["attribution_index"]["seed"]))
    if job_id is not None:
        manifest["job"] = {"id": int(job_id)}
    if supersedes is not None:
        manifest["supersedes"] = {"id": int(supersedes["id"]), "manifest_hash": str(supersedes["manifest_hash"])}
    if int(world_size) < 1:
        raise ValueError(f"a world size is at least 1, got {world_size}")
    if int(world_size) > 1:
        manifest["world_size"] = int(world_size)
    return hashing.jcs(finite(manifest))
