"""``{{ amount|tokens }}``: an integer amount in the smallest unit, shown in whole test tokens; ``{{ amount|amount }}``
the same inside a span whose title gives the raw amount (hover it), the one way the pages show a reward."""

from __future__ import annotations

import json
from decimal import Decimal

from django import template
from django.contrib.humanize.templatetags.humanize import intcomma
from django.utils.html import format_html
from django.utils.safestring import SafeString

from rewards.selectors import tokens as format_tokens

register = template.Library()


@register.filter
def tokens(amount: int | Decimal | None) -> str:
    return format_tokens(amount or 0)


@register.filter
def amount(value: int | Decimal | None) -> SafeString:
    raw = int(value or 0)
    return format_html('<span class="amount" title="{} smallest units">{}</span>', intcomma(raw), format_tokens(raw))


@register.filter
def proof_json(proof: list[str]) -> str:
    """A proof as the JSON text the claim form posts back (the template escapes it for the attribute)."""
    return json.dumps(list(proof or []))


@register.filter
def bps(value: int | None) -> str:
    """Basis points as a percentage: 7000 -> "70%", 2550 -> "25.5%"."""
    return f"{(value or 0) / 100:g}%"
