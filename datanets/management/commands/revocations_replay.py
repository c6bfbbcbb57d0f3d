"""Tell the apps above about every revocation again (``datanets.revocation.revocations_replay``)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from datanets.revocation import revocations_replay


class Command(BaseCommand):
    help = (
        "Call every records-revoked receiver again for every revocation (their work is idempotent): after a receiver "
        "failed, or after an index was restored from a backup older than an erasure."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--erased-only", action="store_true", help="only the revocations whose bytes were erased")

    def handle(self, *args: Any, **options: Any) -> None:
        sent = revocations_replay(erased_only=options["erased_only"])
        self.stdout.write(f"{sent} revocations sent again to their receivers")
