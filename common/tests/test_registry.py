from __future__ import annotations

from common.registry import Registry


def first() -> None: ...


def second() -> None: ...


def test_a_registry_keeps_each_item_once_in_registration_order() -> None:
    registry: Registry = Registry()
    assert registry.all() == ()

    registry.add(second)
    registry.add(first)
    registry.add(second)  # a second ready() registers again: nothing changes

    assert registry.all() == (second, first)
