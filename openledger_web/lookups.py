"""``__in`` on integer fields that ignores values beyond the database's integer range, as Django's own ``exact``,
``gt``, ``lt`` and friends already do: an id of 2^63 from a form or a query string can never match a row, and SQLite
would otherwise raise OverflowError (a 500) converting it. Registered once, in ``OpenledgerWebConfig.ready``."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db.models import IntegerField
from django.db.models.lookups import In


class IntegerFieldIn(In):
    def process_rhs(self, compiler: Any, connection: Any) -> Any:
        if self.rhs_is_direct_value():
            low, high = connection.ops.integer_field_range(self.lhs.output_field.get_internal_type())
            kept = [
                v
                for v in self.rhs
                if not isinstance(v, int) or ((low is None or v >= low) and (high is None or v <= high))
            ]
            if not kept:
                raise EmptyResultSet
            self.rhs = kept
        return super().process_rhs(compiler, connection)


def register() -> None:
    IntegerField.register_lookup(IntegerFieldIn)
