from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand

from modelfactory.services import base_model_register_default
from modelfactory.weights import bundled_model_prepare


class Command(BaseCommand):
    help = "Convert the bundled SmolLM2 GGUF file into a Hugging Face folder once, and register it as the default."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--force", action="store_true", help="convert again even if the folder is prepared")
        parser.add_argument("--no-register", action="store_true", help="prepare the folder only (no database)")

    def handle(self, *args: Any, force: bool, no_register: bool, **options: Any) -> None:
        started = time.monotonic()
        record = bundled_model_prepare(force=force)
        if not no_register:
            base_model_register_default(record=record)
        self.stdout.write(
            f"default model {record['name']}: {record['parameters']:,} parameters at {record['path']} "
            f"({time.monotonic() - started:.1f} s)"
        )
