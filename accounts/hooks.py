"""Accounts' extension points for the apps above it, which register in their ``AppConfig.ready()``.

- profile sections: each renders a piece of the signed-in person's profile page (``section(request, user)`` returns
  HTML), in registration order, below the wallets. Accounts never imports the apps that add them (governance shows
  voting power here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from common.registry import Registry

if TYPE_CHECKING:
    from django.http import HttpRequest

    from .models import User

ProfileSection = Callable[["HttpRequest", "User"], str]  # (request, user) -> HTML

_sections: Registry[ProfileSection] = Registry()


def profile_section_register(section: ProfileSection) -> None:
    """Add ``section(request, user)``, which returns HTML, to the profile page (once per section)."""
    _sections.add(section)


def profile_sections() -> tuple[ProfileSection, ...]:
    return _sections.all()
