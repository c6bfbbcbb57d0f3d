"""The registries behind the apps' extension points (``inference.hooks``, ``modelfactory.hooks``,
``attribution.hooks``)."""

from __future__ import annotations

from typing import Generic, TypeVar

from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T")


class Registry(Generic[T]):
    """What the apps above registered, in registration order, each once: registering the same thing again (a second
    ``AppConfig.ready()``) changes nothing."""

    def __init__(self) -> None:
        self._items: list[T] = []

    def add(self, item: T) -> None:
        if item not in self._items:
            self._items.append(item)

    def all(self) -> tuple[T, ...]:
        return tuple(self._items)


class Slot(Generic[T]):
    """The one thing an app above registered where there is room for one (``what`` names it in the refusal):
    registering the same thing again changes nothing, registering another is refused."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._item: T | None = None

    def set(self, item: T) -> None:
        if self._item is not None and self._item is not item:
            raise ImproperlyConfigured(f"{self._what} is registered already: {self._item!r}")
        self._item = item

    def get(self) -> T | None:
        return self._item
