"""The verifier rebuilds, in JavaScript, the same hashes the server makes in Python: JCS documents with floats,
unicode and big integers as strings, canonical records, v1 documents from their stored text, subject ids. No
database: a disagreement here would make every verifier run fail."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from datanets.parsing import canonical_json, record_hash
from ledger.hashing import document_hash, keccak_hex, subject_id, uint_text

SCRIPT = Path(__file__).with_name("hashes.mjs")

DOCUMENTS = [
    {
        "schema": "openledger.inference_run.v2",
        "seed": uint_text(2**60 + 7),
        "options": {"temperature": 0.7, "top_p": 1.0},
    },
    {"schema": "openledger.receipt.curation.v1", "reason_hash": "0x" + "ab" * 32, "decided_at": "2026-12-05T20:00:00Z"},
    {"b": [1e21, 1e-7, 0.1, -0.0, 123456789.125], "a": {"é": "\u00e9", "\U0001f600": '\u2028 \t\n"\\'}, "n": None},
    {"amounts": [uint_text(10**30), "0"], "flag": True, "empty": {}, "list": []},
]
RECORDS = [
    {"prompt": "q Caf\u00e9", "response": 'na\u0131ve \U0001f600 "quoted"\n', "system": "s"},
    {"messages": [{"role": "user", "content": "tab\there"}, {"role": "assistant", "content": "\u0007 bell"}]},
    {"text": "Paris is the capital of France."},
]


def rebuilt(request: dict) -> dict:
    done = subprocess.run(
        ["node", str(SCRIPT)], input=json.dumps(request), capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(done.stdout)


def test_the_verifier_rebuilds_every_hash_the_server_makes() -> None:
    # given: a v1 document as Python's json.dumps stored it, with a seed no JavaScript number holds
    v1_text = json.dumps({"schema": "openledger.inference_run.v1", "seed": 2**60 + 7, "t": 1.0}, sort_keys=True)
    request = {
        "documents": DOCUMENTS,
        "records": RECORDS,
        "v1": [
            {"document": json.loads(v1_text), "text": v1_text},
            {"document": {"schema": "openledger.inference_run.v1", "seed": "7"}, "text": v1_text},
        ],
        "subjects": ["snapshot:1:3", "model_version:12", "reward_epoch:7"],
    }

    # when
    answer = rebuilt(request)

    # then
    assert answer["documents"] == [document_hash(d) for d in DOCUMENTS]
    assert answer["records"] == [record_hash(canonical_json(r)) for r in RECORDS]
    assert answer["v1"][0]["hash"] == keccak_hex(v1_text.encode())
    assert answer["v1"][1] == {"problem": "document_text does not parse to the served document"}
    assert answer["subjects"] == [subject_id(s) for s in request["subjects"]]


def test_an_erased_line_is_taken_at_its_stated_hash_and_the_new_keys_are_no_record_fields() -> None:
    """A snapshot JSONL line as datanets/exports.py writes it after a revocation: ``revoked`` and ``erased`` are no
    record fields; an erased line's fields are empty, so its stated hash is its leaf's (the root vouches for it)."""
    kept = {"prompt": "q Caf\u00e9", "response": "an answer", "system": ""}
    kept_hash = record_hash(canonical_json({"prompt": "q Caf\u00e9", "response": "an answer"}))
    erased_hash = "0x" + "ab" * 32
    address = "0x" + "11" * 20
    extras = {"contributor": address, "licence": "CC0-1.0", "leaf_index": 0, "record_id": 1, "datanet_id": 1}
    lines = [
        {**kept, "record_hash": kept_hash, "contribution_id": 3, **extras, "revoked": True, "erased": False},
        {"prompt": "", "response": "", "system": "", "record_hash": erased_hash, "contribution_id": 4, **extras,
         "revoked": True, "erased": True},
        {**kept, "response": "changed", "record_hash": kept_hash, "contribution_id": 5, **extras, "revoked": False,
         "erased": False},
    ]  # fmt: skip
    request = {"documents": [], "records": [], "v1": [], "subjects": [], "lines": lines}

    answer = rebuilt(request)["lines"]

    assert answer["erased"] == 1
    assert answer["values"][:2] == [[kept_hash, address, "3"], [erased_hash, address, "4"]]
    assert answer["bad"] == ["record 1 (line 3)"]  # a changed field still fails; only erased lines are taken as stated
