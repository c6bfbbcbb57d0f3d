"""Snapshot exports: JSON Lines with one schema for every row, and a manifest that matches them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from datanets import exports, services
from datanets.models import Datanet

from .factories import DatanetFactory, accepted, jsonl, texts, wallet

pytestmark = pytest.mark.django_db

ALICE_ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def _instruction_snapshot() -> tuple[Datanet, object]:
    datanet = DatanetFactory(record_type="instruction", licence="CC-BY-4.0")
    alice = accepted(
        datanet,
        content=jsonl(
            {"prompt": "What is two and two?", "response": "Four, of course."},
            {"prompt": "Name a colour", "response": "Blue", "system": "Answer in one word."},
        ),
        licence="CC0-1.0",
    )
    wallet(alice.contributor, ALICE_ADDRESS)
    accepted(datanet, content=jsonl({"prompt": "Say hello", "response": "Bonjour, le monde !"}))
    return datanet, services.snapshot_freeze(datanet=datanet, user=datanet.owner)


def test_every_row_has_the_same_keys_and_types_and_the_leaf_values() -> None:
    _, snapshot = _instruction_snapshot()
    rows = [json.loads(line) for line in exports.snapshot_jsonl_lines(snapshot=snapshot)]
    assert len(rows) == snapshot.record_count == 3
    keys = ["prompt", "response", "system", "record_hash", "contribution_id", "contributor", "licence", "leaf_index"]
    # ids added at the end in issue 12, the revocation marks in issue 17
    assert all(list(row) == [*keys, "record_id", "datanet_id", "revoked", "erased"] for row in rows)
    assert not any(row["revoked"] or row["erased"] for row in rows)
    assert [row["system"] for row in rows] == ["", "Answer in one word.", ""]  # absent: an empty string, never null
    assert [row["licence"] for row in rows] == ["CC0-1.0", "CC0-1.0", "CC-BY-4.0"]
    assert rows[0]["contributor"] == ALICE_ADDRESS and rows[2]["contributor"] == "0x" + "0" * 40
    assert rows[2]["prompt"] == "Say hello" and rows[2]["response"] == "Bonjour, le monde !"
    for row in rows:
        record = snapshot.leaves.get(leaf_index=row["leaf_index"]).record
        assert row["record_id"] == record.pk and row["datanet_id"] == snapshot.datanet_id
        assert row["record_hash"] == record.record_hash and row["contribution_id"] == record.contribution_id
        proof = services.record_proof(snapshot=snapshot, record=record)
        assert proof["value"] == [row["record_hash"], row["contributor"], str(row["contribution_id"])]


def test_the_manifest_describes_the_jsonl_exactly() -> None:
    datanet, snapshot = _instruction_snapshot()
    data = b"".join(exports.snapshot_jsonl_lines(snapshot=snapshot))
    manifest = exports.snapshot_manifest(snapshot=snapshot)
    assert manifest["jsonl"] == {
        "filename": f"{datanet.slug}-snapshot-1.jsonl",
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }
    assert manifest["records"] == 3 and manifest["snapshot"] == 1 and manifest["datanet"]["slug"] == datanet.slug
    assert manifest["datanet"]["id"] == datanet.pk and manifest["snapshot_id"] == snapshot.pk
    assert manifest["anchor"]["subject"] == f"snapshot:{datanet.pk}:1"
    assert manifest["fields"][-9:] == [*exports.EXTRA_FIELDS]
    assert manifest["licences"] == {"CC-BY-4.0": 1, "CC0-1.0": 2}
    assert manifest["contributors"][0] == {"address": ALICE_ADDRESS, "records": 2, "contributions": 1}
    assert manifest["merkle"]["root"] == snapshot.merkle_root
    assert manifest["merkle"]["leaf_encoding"] == ["bytes32", "address", "uint256"]
    assert manifest["anchor"]["status"] == "pending" and manifest["anchor"]["tx_hash"] is None
    assert json.loads(json.dumps(manifest)) == manifest


def test_chat_rows_keep_their_messages_as_a_list_of_role_content_objects() -> None:
    datanet = DatanetFactory(record_type="chat")
    conversation = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"}]
    with_system = [{"role": "system", "content": "Be brief."}, *conversation]
    accepted(datanet, content=jsonl({"messages": conversation}, {"messages": with_system}))
    snapshot = services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    rows = [json.loads(line) for line in exports.snapshot_jsonl_lines(snapshot=snapshot)]
    assert [row["messages"] for row in rows] == [conversation, with_system]


@pytest.mark.parametrize("record_type", ["instruction", "chat", "text"])
def test_hugging_face_datasets_loads_the_jsonl_as_it_is(record_type: str, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    if record_type == "instruction":
        datanet, snapshot = _instruction_snapshot()
    else:
        datanet = DatanetFactory(record_type=record_type)
        if record_type == "chat":
            content = jsonl(
                *(
                    {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": "ok"}]}
                    for i in range(5)
                )
            )
        else:
            content = texts(*(f"a text record number {i}" for i in range(5)))
        accepted(datanet, content=content)
        snapshot = services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    path = tmp_path / "snapshot.jsonl"
    with path.open("wb") as out:
        out.writelines(exports.snapshot_jsonl_lines(snapshot=snapshot))

    loaded = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))

    assert loaded.num_rows == snapshot.record_count
    assert loaded.column_names[-9:] == [
        "record_hash", "contribution_id", "contributor", "licence", "leaf_index", "record_id", "datanet_id",
        "revoked", "erased",
    ]  # fmt: skip
    first = json.loads(path.read_text().splitlines()[0])
    assert loaded[0] == first
