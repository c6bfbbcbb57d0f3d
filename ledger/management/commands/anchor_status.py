from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ledger.models import Anchor
from ledger.selectors import anchor_status_counts


def _short(value: str | None, width: int) -> str:
    if not value:
        return "-"
    return value if len(value) <= width else value[: width - 1] + "…"


class Command(BaseCommand):
    help = "Show the anchor outbox: how many anchors are in each status, then the most recent ones."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--status", choices=Anchor.Status.values, help="only anchors in this status")
        parser.add_argument("--limit", type=int, default=20, help="how many recent anchors to list (default 20)")

    def handle(self, *args: Any, **options: Any) -> None:
        counts = anchor_status_counts()
        self.stdout.write(
            "  ".join(f"{status}: {n}" for status, n in counts.items()) + f"  total: {sum(counts.values())}"
        )
        anchors = Anchor.objects.select_related("deployment").order_by("-updated_at", "-id")
        if options["status"]:
            anchors = anchors.filter(status=options["status"])
        rows = [
            (
                str(a.id),
                a.kind,
                a.status,
                _short(a.root, 14),
                "-" if a.nonce is None else str(a.nonce),
                _short(a.tx_hash, 14),
                "-" if a.block_number is None else str(a.block_number),
                str(a.confirmations),
                str(a.attempts),
                a.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
                _short(a.last_error, 60),
            )
            for a in anchors[: options["limit"]]
        ]
        if not rows:
            self.stdout.write("no anchors")
            return
        header = ("id", "kind", "status", "root", "nonce", "tx", "block", "conf", "tries", "updated", "last error")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
