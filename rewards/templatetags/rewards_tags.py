"""``{{ amount|tokens }}``: an integer amount in the smallest unit, shown in whole test tokens."""

from __future__ import annotations

import json
from decimal import Decimal

from django import template

from rewards.selectors import tokens as format_tokens

register = template.Library()


@register.filter
def tokens(amount: int | Decimal | None) -> str:
    return format_tokens(amount or 0)


@register.filter
def proof_json(proof: list[str]) -> str:
    """A proof as the JSON text the claim form posts back (the template escapes it for the attribute)."""
    return json.dumps(list(proof or []))
