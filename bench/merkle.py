"""Merkle roots and anchoring: our StandardMerkleTree against @openzeppelin/merkle-tree, and gas per anchor.

Builds trees of 1,000 / 10,000 / 100,000 snapshot-style leaves (record hash, contributor, contribution id) with
`ledger.merkle` and with the npm package (node) on the same values in the same run, checks the roots agree, and
prints the speed ratio. Then anchors roots of trees of 1, 1,000 and 100,000 leaves on a fresh anvil through
`ledger.chain` and prints the gas each used: the cost of an anchor does not depend on how many records it covers.

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


def anchor_gas(roots: dict[int, str]) -> dict[int, tuple[int, float]]:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from ledger import chain
    from ledger.testing import Anvil, free_port

    node = Anvil(port=free_port(), state_file=WORK / "anvil.json", log_file=WORK / "anvil.log")
    node.start()
    try:
        settings.EVM_RPC_URL = node.rpc_url
        call_command("migrate", verbosity=0)
        deployment = chain.ensure_deployed()
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
    gas = anchor_gas(roots)
    print(f"\n{'leaves under the root':>22} {'gas':>8} {'send to receipt (ms)':>21}")
    for n, (used, seconds) in gas.items():
        print(f"{n:>22,} {used:>8,} {seconds * 1000:>21.1f}")
    figures["anchor_gas"] = {str(n): used for n, (used, _) in gas.items()}
    figures["anchor_gas_spread"] = max(u for u, _ in gas.values()) - min(u for u, _ in gas.values())
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
