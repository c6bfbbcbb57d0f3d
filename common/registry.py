"""The registries behind the apps' extension points (``inference.hooks``, ``modelfactory.hooks``)."""

from __future__ import annotations

from typing import Generic, TypeVar

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
