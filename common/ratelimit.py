"""Fixed-window request limits, and who a request comes from.

``limit_hit`` counts one request of a client in a scope and says, once the window's allowance is spent, how long to
wait. It counts in Django's cache: Redis when ``CACHE_URL`` names one (INCR is atomic there), else the database cache,
whose read-then-write increment can let a burst of concurrent requests through by a few: good enough for the pages
it guards, whose cost is a bounded read. The inference API keeps its own Redis-first counter
(``inference.services._rate_check``), where the allowance is spent on generations.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)\s*$")
_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def parse_rate(rate: str, *, setting: str) -> tuple[int, int]:
    """ "60/minute" -> (60, 60): requests allowed per window, window seconds. A malformed value is a configuration
    error naming ``setting``."""
    match = _RATE.match(rate or "")
    if match is None:
        raise ImproperlyConfigured(f"{setting} must look like '60/minute', got {rate!r}")
    return int(match[1]), _PERIODS[match[2]]


def client_ip(request: HttpRequest | None) -> str | None:
    """The peer address. X-Forwarded-For is anyone's to write, so it counts only behind a proxy we were told of,
    and then only its last entry: the one our own proxy appended."""
    if request is None:
        return None
    if getattr(settings, "TRUST_X_FORWARDED_FOR", False):
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded.strip():
            return forwarded.split(",")[-1].strip()
    return request.META.get("REMOTE_ADDR") or None


def client_key(request: HttpRequest) -> str:
    """Whom a limit counts: the signed-in user, else the peer address."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"ip:{client_ip(request) or 'unknown'}"


@dataclass(frozen=True)
class Limited:
    """The allowance is spent: ``message`` for a person, ``retry_after`` seconds until the next window."""

    message: str
    retry_after: int


def limit_hit(request: HttpRequest, *, scope: str, rate: str, setting: str) -> Limited | None:
    """Count this request of its client in ``scope``; a ``Limited`` once more than ``rate`` came in this window."""
    allowed, period = parse_rate(rate, setting=setting)
    now = time.time()
    window = int(now // period)
    retry_after = max(1, math.ceil((window + 1) * period - now))
    key = f"openledger:limit:{scope}:{client_key(request)}:{period}:{window}"
    cache.add(key, 0, period + 1)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, period + 1)
        count = 1
    if count <= allowed:
        return None
    return Limited(f"Too many requests: at most {rate.strip()}. Try again in {retry_after} s.", retry_after)


def chain_read_limited(request: HttpRequest) -> Limited | None:
    """Count one chain read (an eth_call a page or API call makes for whoever asks) against CHAIN_READ_RATE_LIMIT."""
    return limit_hit(request, scope="chain-read", rate=settings.CHAIN_READ_RATE_LIMIT, setting="CHAIN_READ_RATE_LIMIT")
