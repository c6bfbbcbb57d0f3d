from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from openledger_web.models import User

DEMO_PASSWORD = "demo-password-123"
DEMO_USERS = (
    ("alice", "alice@example.org", {}),
    ("bob", "bob@example.org", {}),
    ("carol", "carol@example.org", {"is_global_curator": True}),
    ("admin", "admin@example.org", {"is_staff": True, "is_superuser": True}),
)


class Command(BaseCommand):
    help = "Create the demo users (idempotent). Refuses to run with DEBUG off: demo passwords are public."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("seed_demo creates users with a public password; it runs only with DEBUG on")
        for username, email, flags in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username, defaults={"email": email, **flags})
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save()
        self.stdout.write(f"demo users ready: {', '.join(u for u, _, _ in DEMO_USERS)} (password {DEMO_PASSWORD})")
