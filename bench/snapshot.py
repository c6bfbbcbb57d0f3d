"""Freezing a snapshot of 1,000,000 records: time to build the Merkle root, total freeze time, and proof that the
whole snapshot is anchored by one transaction.

The records go into PostgreSQL by COPY (not through the upload path: bench/ingest.py measures that), as 100 accepted
contributions of 10,000 records from 100 contributors with wallets. Then ``services.snapshot_freeze`` runs as it
does for a curator; the root's build time is measured around ``StandardMerkleTree.of`` inside it. The anchor is sent
to a fresh anvil started here (``ledger.devchain.Anvil``) and the transactions in the blocks it took are counted.

Needs PostgreSQL at 127.0.0.1:5432 (user postgres; override with BENCH_PG_URL): it creates a throwaway database
``openledger_bench_snapshot``, migrates it and drops it at the end.

Run from the repository root: .venv/bin/python bench/snapshot.py
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PG_URL = os.getenv("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
DB_NAME = "openledger_bench_snapshot"
WORK = Path(tempfile.mkdtemp(prefix="bench-snapshot-"))
RECORDS = 1_000_000
CONTRIBUTIONS = 100

from ledger.devchain import ANVIL_CHAIN_ID, Anvil, free_port  # noqa: E402  (after sys.path)

ANVIL = Anvil(port=free_port(), state_file=WORK / "anvil.json", log_file=WORK / "anvil.log")
os.environ.update(
    DJANGO_SETTINGS_MODULE="openledger_web.settings",
    DATA_DIR=str(WORK),
    DATABASE_URL=f"{PG_URL}/{DB_NAME}",
    CELERY_BROKER_URL="memory://",
    EVM_RPC_URL=ANVIL.rpc_url,
    EVM_CHAIN_ID=str(ANVIL_CHAIN_ID),
)


def admin_sql(statement: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(statement)


def populate() -> Any:
    """A Datanet with RECORDS accepted records in CONTRIBUTIONS contributions, every contributor with a wallet."""
    from django.db import connection
    from django.utils import timezone

    from accounts.models import User, Wallet
    from datanets.models import Contribution, Datanet

    owner = User.objects.create_user("bench-owner")
    datanet = Datanet.objects.create(name="Bench", slug="bench", owner=owner, record_type="text")
    users = User.objects.bulk_create(User(username=f"contributor-{i}") for i in range(CONTRIBUTIONS))
    Wallet.objects.bulk_create(
        Wallet(user=u, address="0x" + secrets.token_hex(20), chain_id=ANVIL_CHAIN_ID, message="m", signature="0x00")
        for u in users
    )
    now = timezone.now()
    per = RECORDS // CONTRIBUTIONS
    contributions = Contribution.objects.bulk_create(
        Contribution(
            datanet=datanet,
            contributor=u,
            licence="CC-BY-4.0",
            status=Contribution.Status.ACCEPTED,
            check_status=Contribution.CheckStatus.DONE,  # a freeze scans any accepted contribution not yet checked
            source_filename="bench.jsonl",
            content_sha256=secrets.token_hex(32),
            size_bytes=per * 60,
            storage_path="contributions/bench",
            record_count=per,
            reviewer=owner,
            reviewed_at=now,
            submitted_at=now,
        )
        for u in users
    )
    columns = "contribution_id, datanet_id, position, source, line, canonical, record_hash, words, size_bytes, "
    columns += "excluded, excluded_reason, flags"
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg 3
        with raw.copy(f"COPY datanets_record ({columns}) FROM STDIN") as copy:
            n = 0
            for contribution in contributions:
                for position in range(per):
                    canonical = f'{{"text":"benchmark record number {n} of the snapshot"}}'
                    copy.write_row(
                        (
                            contribution.pk,
                            datanet.pk,
                            position,
                            "bench.jsonl",
                            position + 1,
                            canonical,
                            "0x" + secrets.token_hex(32),
                            7,
                            len(canonical),
                            False,
                            "",
                            "[]",
                        )
                    )
                    n += 1
    return datanet


def chain_transactions(first_block: int, last_block: int) -> int:
    return sum(
        int(ANVIL.rpc("eth_getBlockTransactionCountByNumber", hex(number)), 16)
        for number in range(first_block, last_block + 1)
    )


def main() -> None:
    admin_sql(f"DROP DATABASE IF EXISTS {DB_NAME}")
    admin_sql(f"CREATE DATABASE {DB_NAME}")
    ANVIL.start(state=False)
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from datanets import services
        from ledger import chain, deployments
        from ledger import services as ledger_services
        from ledger.models import Anchor

        deployments.ensure_deployed()
        started = time.perf_counter()
        datanet = populate()
        print(f"inserted {RECORDS:,} records by COPY in {time.perf_counter() - started:.1f} s", flush=True)

        timings: dict[str, float] = {}
        build = services.merkle.StandardMerkleTree.of

        def timed_build(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            tree = build(*args, **kwargs)
            timings["root"] = time.perf_counter() - t
            return tree

        services.merkle.StandardMerkleTree.of = timed_build  # type: ignore[method-assign]
        anchors_before = Anchor.objects.count()
        started = time.perf_counter()
        snapshot = services.snapshot_freeze(datanet=datanet, user=datanet.owner)
        freeze_s = time.perf_counter() - started
        services.merkle.StandardMerkleTree.of = build  # type: ignore[method-assign]
        anchors = Anchor.objects.count() - anchors_before

        first_block = int(ANVIL.rpc("eth_blockNumber"), 16) + 1
        started = time.perf_counter()
        ledger_services.anchor_send(anchor_id=snapshot.anchor_id)
        ledger_services.anchors_confirm()
        anchor_s = time.perf_counter() - started
        snapshot.anchor.refresh_from_db()
        last_block = int(ANVIL.rpc("eth_blockNumber"), 16)
        transactions = chain_transactions(first_block, last_block)
        on_chain = chain.root_info(snapshot.merkle_root)
        record = snapshot.leaves.order_by("leaf_index")[RECORDS // 2].record
        proof_ok = services.proof_verify_on_chain(snapshot=snapshot, record=record)
        from django.db import connections

        connections.close_all()
    finally:
        ANVIL.stop()
        admin_sql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        shutil.rmtree(WORK, ignore_errors=True)

    print(f"snapshot: {snapshot.record_count:,} records, root {snapshot.merkle_root}")
    print(f"root build (StandardMerkleTree.of, 1M leaves): {timings['root']:.2f} s (target under 30 s)")
    print(f"total freeze (leaves query, root, tree file, 1M leaf rows, anchor row): {freeze_s:.2f} s")
    print(
        f"anchor: {anchors} Anchor row, {transactions} transaction in blocks {first_block}-{last_block}, "
        f"status {snapshot.anchor.status}, gas-free check rootInfo={'found' if on_chain else 'missing'}, "
        f"a proof verified on chain: {proof_ok} ({anchor_s:.2f} s to send and confirm)"
    )
    print(
        json.dumps(
            {
                "records": snapshot.record_count,
                "root_seconds_1m": round(timings["root"], 2),
                "freeze_seconds_1m": round(freeze_s, 2),
                "anchor_rows": anchors,
                "anchor_transactions": transactions,
                "anchor_status": snapshot.anchor.status,
                "proof_verified_on_chain": proof_ok,
            }
        )
    )


if __name__ == "__main__":
    main()
