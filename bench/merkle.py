"""Merkle roots and anchoring: our StandardMerkleTree against @openzeppelin/merkle-tree, and gas per anchor.

Builds trees of 1,000 / 10,000 / 100,000 snapshot-style leaves (record hash, contributor, contribution id) with
`ledger.merkle` and with the npm package (node) on the same values in the same run, checks the roots agree, and
prints the speed ratio. Then anchors roots of trees of 1, 1,000 and 100,000 leaves on a fresh anvil through
`ledger.chain` and prints the gas each used: the cost of an anchor does not depend on how many records it covers.
Last, receipts (issue 12): batches of 1, 1,000 and 10,000 curation receipts (real rows, JCS documents) are sealed
through `datanets.receipts` and their anchors sent through the ledger's outbox; the chain's transaction count shows
one transaction a batch whatever its size.

Run from the repository root: .venv/bin/python bench/merkle.py
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = Path(tempfile.mkdtemp(prefix="bench-merkle-"))
os.environ.update(
    DJANGO_SETTINGS_MODULE="openledger_web.settings",
    DATA_DIR=str(WORK),
    DATABASE_URL=f"sqlite:///{WORK / 'bench.sqlite3'}",
    CELERY_BROKER_URL="memory://",
)


from ledger import hashing  # noqa: E402  (after the environment above)


def leaves(n: int) -> list[list[str | int]]:
    return [["0x" + secrets.token_hex(32), "0x" + secrets.token_hex(20), i + 1] for i in range(n)]


def build_ours(values: list[list[str | int]]) -> tuple[str, float]:
    from ledger.merkle import StandardMerkleTree

    started = time.perf_counter()
    tree = StandardMerkleTree.of(values)
    return tree.root, time.perf_counter() - started


def build_openzeppelin(values: list[list[str | int]]) -> tuple[str, float]:
    answer = subprocess.run(
        ["node", str(ROOT / "bench" / "merkle_build.js")],
        input=json.dumps({"values": values}),
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(answer.stdout)
    return result["root"], result["seconds"]


def anchor_gas(node: object, roots: dict[int, str]) -> dict[int, tuple[int, float]]:
    from ledger import chain, deployments

    deployment = deployments.ensure_deployed()
    account = chain.signer()
    used = {}
    for n, root in roots.items():
        started = time.perf_counter()
        subject = "0x" + secrets.token_hex(32)
        tx = chain.anchor_transaction(deployment, kind=1, subject_id=subject, root=root, uri="")
        signed = chain.sign(tx, nonce=chain.account_nonce(account.address))
        tx_hash = chain.broadcast(signed.raw)
        while (receipt := chain.get_receipt(tx_hash)) is None:
            time.sleep(0.01)
        used[n] = (receipt.gas_used, time.perf_counter() - started)
    return used


def receipt_batches(node: object, sizes: tuple[int, ...]) -> dict[int, tuple[int, float]]:
    """Seal ``size`` curation receipts into one batch for each size and send its anchor: (transactions on chain
    while it was sent and confirmed, seconds to seal) per size."""
    from django.conf import settings
    from django.utils import timezone

    from accounts.models import User
    from datanets import receipts
    from datanets.models import Contribution, Datanet, Receipt
    from ledger import services

    owner = User.objects.create_user("bench-receipts")
    datanet = Datanet.objects.create(name="Receipts", slug="receipts", owner=owner, record_type="text")
    now = timezone.now()
    contribution = Contribution.objects.create(
        datanet=datanet,
        contributor=owner,
        licence="CC-BY-4.0",
        source_filename="bench.jsonl",
        content_sha256=secrets.token_hex(32),
        size_bytes=1,
        storage_path="contributions/bench",
        record_count=1,
        submitted_at=now,
    )
    results = {}
    for size in sizes:
        documents = [
            {
                "schema": Receipt.SCHEMAS[Receipt.Kind.CURATION],
                "decision": "accept",
                "contribution": contribution.pk,
                "record": None,
                "datanet": {"id": datanet.pk, "slug": datanet.slug},
                "curator": None,
                "curator_account_hash": receipts.account_hash(owner.pk),
                "reason_hash": receipts.reason_hash(f"bench {size} {i}"),
                "decided_at": receipts.utc_text(now),
            }
            for i in range(size)
        ]
        Receipt.objects.bulk_create(
            Receipt(
                kind=Receipt.Kind.CURATION,
                contribution=contribution,
                datanet=datanet,
                document=d,
                document_hash=hashing.document_hash(d),
            )
            for d in documents
        )
        settings.RECEIPT_BATCH_SIZE = size
        first = int(node.rpc("eth_blockNumber"), 16) + 1
        started = time.perf_counter()
        (batch,) = receipts.receipts_seal_batches(force=True)
        sealed = time.perf_counter() - started
        services.anchor_send(anchor_id=batch.anchor_id)
        while services.anchors_confirm()["confirmed"] == 0:
            time.sleep(0.05)
        last = int(node.rpc("eth_blockNumber"), 16)
        sent = sum(
            int(node.rpc("eth_getBlockTransactionCountByNumber", hex(number)), 16) for number in range(first, last + 1)
        )
        results[size] = (sent, sealed)
    return results


def chain_figures(roots: dict[int, str]) -> tuple[dict[int, tuple[int, float]], dict[int, tuple[int, float]]]:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from ledger.devchain import Anvil, free_port

    node = Anvil(port=free_port(), state_file=WORK / "anvil.json", log_file=WORK / "anvil.log")
    node.start()
    try:
        settings.EVM_RPC_URL = node.rpc_url
        settings.CHAIN_CONFIRMATIONS = 1
        call_command("migrate", verbosity=0)
        return anchor_gas(node, roots), receipt_batches(node, (1, 1_000, 10_000))
    finally:
        node.stop()


def main() -> None:
    figures: dict[str, object] = {}
    print(f"{'leaves':>8} {'ours (s)':>9} {'openzeppelin (s)':>17} {'ours faster by':>15}  roots agree")
    for n in (1_000, 10_000, 100_000):
        values = leaves(n)
        ours_root, ours_s = build_ours(values)
        oz_root, oz_s = build_openzeppelin(values)
        ratio = oz_s / ours_s
        print(f"{n:>8,} {ours_s:>9.3f} {oz_s:>17.3f} {ratio:>14.1f}x  {ours_root == oz_root}")
        if ours_root != oz_root:
            raise SystemExit(f"roots differ for {n} leaves: {ours_root} != {oz_root}")
        figures[f"ours_seconds_{n}"] = round(ours_s, 4)
        figures[f"openzeppelin_seconds_{n}"] = round(oz_s, 4)
        figures[f"ours_over_openzeppelin_speed_{n}"] = round(ratio, 2)

    roots = {n: build_ours(leaves(n))[0] for n in (1, 1_000, 100_000)}
    gas, batches = chain_figures(roots)
    print(f"\n{'leaves under the root':>22} {'gas':>8} {'send to receipt (ms)':>21}")
    for n, (used, seconds) in gas.items():
        print(f"{n:>22,} {used:>8,} {seconds * 1000:>21.1f}")
    figures["anchor_gas"] = {str(n): used for n, (used, _) in gas.items()}
    figures["anchor_gas_spread"] = max(u for u, _ in gas.values()) - min(u for u, _ in gas.values())
    print(f"\n{'receipts in the batch':>22} {'transactions':>13} {'seal (s)':>9}")
    for n, (sent, seconds) in batches.items():
        print(f"{n:>22,} {sent:>13} {seconds:>9.3f}")
    figures["receipt_batch_transactions"] = {str(n): sent for n, (sent, _) in batches.items()}
    figures["receipt_seal_seconds"] = {str(n): round(seconds, 4) for n, (_, seconds) in batches.items()}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
