from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from datanets.models import Datanet
from datanets.services import contribution_submit_pasted, datanet_add_curator, datanet_create

DEMO_DATANETS = (
    {
        "owner": "alice",
        "name": "Kitchen Science Q&A",
        "record_type": "instruction",
        "licence": "CC-BY-4.0",
        "summary": "Questions and answers on the chemistry and physics of everyday cooking.",
        "description": "Each record is a question a home cook asks and a short, correct answer.\n\n"
        "* One fact per answer\n* Cite no brands\n* English only",
        "tags": ("cooking", "science", "qa"),
        "domain": "food",
        "language": "en",
    },
    {
        "owner": "carol",
        "name": "Open Science Abstracts",
        "record_type": "text",
        "licence": "CC0-1.0",
        "summary": "Plain-language summaries of openly licensed research papers.",
        "description": "Paragraph-length summaries, one per record, in **plain English**.",
        "tags": ("science", "summaries"),
        "domain": "research",
        "language": "en",
    },
)
PENDING_RECORDS = "\n".join(
    (
        '{"prompt": "Why does salt make water boil later?", "response": "Dissolved salt raises the boiling point '
        'slightly, by about half a degree per 30 g per litre."}',
        '{"prompt": "Why do onions make you cry?", "response": "Cutting them releases syn-propanethial-S-oxide, '
        'a gas that irritates the eyes."}',
        '{"prompt": "Why rest meat after cooking?", "response": "Resting lets the juices thicken and redistribute, '
        'so less runs out when you cut it."}',
    )
)

DEMO_PASSWORD = "demo-password-123"
DEMO_USERS = (
    ("alice", "alice@example.org", {}),
    ("bob", "bob@example.org", {}),
    ("carol", "carol@example.org", {"is_global_curator": True}),
    ("admin", "admin@example.org", {"is_staff": True, "is_superuser": True}),
)


class Command(BaseCommand):
    help = (
        "Create the demo users (idempotent). Refuses to run with DEBUG off unless --allow-without-debug is given: "
        "demo passwords are public."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--allow-without-debug",
            action="store_true",
            help="seed even with DEBUG off (a demo instance; `make run` passes it for SEED_DEMO=1 or --seed-demo)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG and not options["allow_without_debug"]:
            raise CommandError(
                "seed_demo creates users with a public password; it runs only with DEBUG on, "
                "or with --allow-without-debug (SEED_DEMO=1 for `make run`)"
            )
        for username, email, flags in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username, defaults={"email": email, **flags})
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save()
        self.stdout.write(f"demo users ready: {', '.join(u for u, _, _ in DEMO_USERS)} (password {DEMO_PASSWORD})")
        self._seed_datanets()

    def _seed_datanets(self) -> None:
        for spec in DEMO_DATANETS:
            if Datanet.objects.filter(name=spec["name"]).exists():
                continue
            fields = {k: v for k, v in spec.items() if k != "owner"}
            owner = User.objects.get(username=spec["owner"])
            datanet = datanet_create(owner=owner, **fields)
            datanet_add_curator(datanet=datanet, user=owner, curator=User.objects.get(username="carol"))
            if datanet.record_type == "instruction":
                contribution_submit_pasted(
                    datanet=datanet, contributor=User.objects.get(username="bob"), text=PENDING_RECORDS,
                    licence="CC-BY-4.0",
                )  # fmt: skip
        self.stdout.write(f"demo Datanets ready: {', '.join(d['name'] for d in DEMO_DATANETS)}")
