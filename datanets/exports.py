"""A frozen snapshot as files anyone can use: its records as JSON Lines and a manifest that ties them to the chain.

The JSONL has one object per leaf, in leaf order: the record's own fields, then ``record_hash``, ``contribution_id``,
``contributor`` (the leaf's address, EIP-55) , ``licence`` (the contribution's), ``leaf_index``, ``record_id`` (what
the record proof API takes), ``datanet_id`` (the number in the anchor's subject ``snapshot:<datanet id>:<n>``),
``revoked`` (true once the record was withdrawn or taken down: it is in no later snapshot) and ``erased`` (true once
its bytes were erased: its record fields are then empty, its hash and leaf unchanged, so its proof still verifies);
the leaf value is ``[record_hash, contributor, contribution_id]``. Fields are only ever added at the end. Every row of a
snapshot has the same keys with the same types, so Hugging Face ``datasets`` (``load_dataset("json", ...)``) and
pyarrow load it as it is: an optional field the record left out is written as an empty string (the parser refuses
empty text, so an empty string never is real data). The bytes are deterministic: the same snapshot always gives the
same file, so the manifest's ``jsonl_sha256`` holds, until a record of it is revoked or erased (revocation.py):
the manifest is computed from the file as it is now.

The same rows as Parquet (``snapshot_parquet_path``): one column per JSONL key with a fixed type per record type (chat
``messages`` a list of ``{role, content}`` structs, the ids 64-bit integers), written in row groups of
``EXPORT_BATCH`` rows by pyarrow, with the Datanet, the snapshot and its Merkle root in the file's key-value
metadata. A snapshot never changes, so its file is built once, on first download, into ``MEDIA_ROOT/exports/`` and
served from there; ``pandas.read_parquet`` and ``datasets.Dataset.from_parquet`` read it as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.db.models import Count
from eth_utils import to_checksum_address

from ledger import merkle

from .models import RevokedRecord, Snapshot, SnapshotRecord
from .storage import media_path

EXPORT_BATCH = 2_000
# The record fields of each type, in output order; every row carries all of them (see the module docstring).
FIELDS_BY_RECORD_TYPE: dict[str, tuple[str, ...]] = {
    "text": ("text",),
    "instruction": ("prompt", "response", "system"),
    "chat": ("messages",),
    "classification": ("text", "label"),
}
EXTRA_FIELDS = (
    "record_hash",
    "contribution_id",
    "contributor",
    "licence",
    "leaf_index",
    "record_id",
    "datanet_id",
    "revoked",
    "erased",
)
LEAF_VALUE_FIELDS = ("record_hash", "contributor", "contribution_id")


def jsonl_filename(snapshot: Snapshot) -> str:
    return f"{snapshot.datanet.slug}-snapshot-{snapshot.number}.jsonl"


def parquet_filename(snapshot: Snapshot) -> str:
    return f"{snapshot.datanet.slug}-snapshot-{snapshot.number}.parquet"


def _parquet_schema(record_type: str) -> Any:
    import pyarrow as pa  # only the export needs it: the web process loads it on the first Parquet download

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    record_fields = [
        (name, pa.list_(message) if name == "messages" else pa.string()) for name in FIELDS_BY_RECORD_TYPE[record_type]
    ]
    extra_types = {
        "contribution_id": pa.int64(),
        "leaf_index": pa.int64(),
        "record_id": pa.int64(),
        "datanet_id": pa.int64(),
        "revoked": pa.bool_(),
        "erased": pa.bool_(),
    }
    return pa.schema([*record_fields, *((name, extra_types.get(name, pa.string())) for name in EXTRA_FIELDS)])


def snapshot_parquet_path(*, snapshot: Snapshot) -> Path:
    """The snapshot's Parquet file, built on first use (atomically: a half-written file never has the final name)
    and kept, since a snapshot never changes. Rows stream from the JSONL export in batches: memory stays that of one
    row group whatever the snapshot's size."""
    import pyarrow as pa  # 28 MB more in a process: loaded by the first Parquet download only, as above
    import pyarrow.parquet as pq

    root = snapshot.merkle_root.removeprefix("0x")
    path = media_path(f"exports/parquet/{snapshot.datanet_id}/{snapshot.number}-{root[:16]}.parquet")
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = _parquet_schema(snapshot.datanet.record_type).with_metadata(
        {
            "openledger.datanet": snapshot.datanet.slug,
            "openledger.datanet_id": str(snapshot.datanet_id),
            "openledger.snapshot": str(snapshot.number),
            "openledger.merkle_root": snapshot.merkle_root,
            "openledger.record_type": snapshot.datanet.record_type,
        }
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            batch: list[dict[str, Any]] = []
            for line in snapshot_jsonl_lines(snapshot=snapshot):
                batch.append(json.loads(line))
                if len(batch) == EXPORT_BATCH:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    batch = []
            if batch or not snapshot.record_count:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def snapshot_jsonl_lines(*, snapshot: Snapshot) -> Iterator[bytes]:
    """Each leaf of ``snapshot`` as one UTF-8 JSON line (ending in ``\\n``), in leaf order. Rows are read with a
    database cursor in batches, so memory stays constant whatever the snapshot's size."""
    fields = FIELDS_BY_RECORD_TYPE[snapshot.datanet.record_type]
    checksummed: dict[str, str] = {}  # few contributors, many rows: checksum each address once
    rows = (
        SnapshotRecord.objects.filter(snapshot=snapshot)
        .order_by("leaf_index")
        .values_list(
            "leaf_index", "record__canonical", "record__record_hash", "contribution_id", "address", "record_id"
        )
    )
    licences = dict(
        SnapshotRecord.objects.filter(snapshot=snapshot)
        .order_by()
        .values_list("contribution_id", "contribution__licence")
        .distinct()
    )
    revoked = dict(
        RevokedRecord.objects.filter(record__snapshot_leaves__snapshot=snapshot).values_list("record_id", "erased")
    )
    datanet_id = snapshot.datanet_id
    for leaf_index, canonical, record_hash, contribution_id, address, record_id in rows.iterator(
        chunk_size=EXPORT_BATCH
    ):
        erased = revoked.get(record_id, False)
        record = {"messages": []} if erased else json.loads(canonical)
        row: dict[str, Any] = {name: record.get(name, "") for name in fields}
        if address not in checksummed:
            checksummed[address] = to_checksum_address(address)
        row["record_hash"] = record_hash
        row["contribution_id"] = contribution_id
        row["contributor"] = checksummed[address]
        row["licence"] = licences[contribution_id]
        row["leaf_index"] = leaf_index
        row["record_id"] = record_id
        row["datanet_id"] = datanet_id
        row["revoked"] = record_id in revoked
        row["erased"] = erased
        yield (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def snapshot_manifest(*, snapshot: Snapshot) -> dict[str, Any]:
    """What the snapshot holds and where its root is anchored: the Datanet's and the snapshot's ids, counts, the
    JSONL's SHA-256 (computed by streaming it), contributors and licences with their record counts, the Merkle root
    and leaf encoding, and the anchor's chain, contract, transaction, block, subject and status (null until it is
    sent)."""
    digest = hashlib.sha256()
    size = 0
    for line in snapshot_jsonl_lines(snapshot=snapshot):
        digest.update(line)
        size += len(line)
    leaves = SnapshotRecord.objects.filter(snapshot=snapshot).order_by()
    contributors = [
        {"address": to_checksum_address(row["address"]), "records": row["records"], "contributions": row["n"]}
        for row in leaves.values("address")
        .annotate(records=Count("id"), n=Count("contribution", distinct=True))
        .order_by("-records", "address")
    ]
    licences = {
        row["contribution__licence"]: row["records"]
        for row in leaves.values("contribution__licence")
        .annotate(records=Count("id"))
        .order_by("contribution__licence")
    }
    anchor = snapshot.anchor
    deployment = anchor.deployment
    datanet = snapshot.datanet
    return {
        "datanet": {"id": datanet.pk, "slug": datanet.slug, "name": datanet.name, "licence": datanet.licence},
        "snapshot": snapshot.number,
        "snapshot_id": snapshot.pk,
        "created_at": snapshot.created_at.isoformat(),
        "record_type": datanet.record_type,
        "fields": [*FIELDS_BY_RECORD_TYPE[datanet.record_type], *EXTRA_FIELDS],
        "records": snapshot.record_count,
        "contributions": snapshot.contribution_count,
        "words": snapshot.words,
        "duplicates_skipped": snapshot.duplicates_skipped,
        "jsonl": {"filename": jsonl_filename(snapshot), "sha256": digest.hexdigest(), "bytes": size},
        "contributors": contributors,
        "licences": licences,
        "merkle": {
            "root": snapshot.merkle_root,
            "format": "standard-v1",
            "leaf_encoding": list(merkle.DEFAULT_LEAF_TYPES),
            "leaf_value_fields": list(LEAF_VALUE_FIELDS),
            "tree_sha256": snapshot.tree_sha256,
        },
        "anchor": {
            "status": anchor.status,
            "chain_id": deployment.chain_id if deployment else None,
            "contract_address": deployment.contract_address if deployment else None,
            "tx_hash": anchor.tx_hash or None,
            "block_number": anchor.block_number,
            "block_hash": anchor.block_hash or None,
            "confirmations": anchor.confirmations,
            "subject_id": anchor.subject_id,
            "subject": anchor.subject,
            "uri": anchor.uri,
        },
    }
