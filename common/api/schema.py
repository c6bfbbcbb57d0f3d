"""An app's operations in the OpenAPI schema: ``extend_schema`` with the app's tags and the refusals its reads and its
writes may answer filled in, so that a view states only its summary, its body and its answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drf_spectacular.utils import extend_schema

from .errors import READ_ERRORS, WRITE_ERRORS


@dataclass(frozen=True)
class ApiSchema:
    """The schema decorators of one app's views: ``tags`` on each, ``read_errors`` after a read's answer and
    ``write_errors`` after a write's, unless the view names its own ``errors``."""

    tags: list[str]
    read_errors: dict[int, Any] = field(default_factory=lambda: READ_ERRORS)
    write_errors: dict[int, Any] = field(default_factory=lambda: WRITE_ERRORS)

    def read(
        self, summary: str, response: Any, *, status: Any = 200, errors: dict[int, Any] | None = None, **kwargs: Any
    ) -> Callable[[Any], Any]:
        """A read answering ``response`` (with ``status``, or ``(status, media type)``) or one of the refusals."""
        refusals = self.read_errors if errors is None else errors
        return self.operation(summary, {status: response, **refusals}, **kwargs)

    def write(
        self,
        summary: str,
        request: Any,
        response: Any,
        *,
        status: int = 200,
        errors: dict[int, Any] | None = None,
        **kwargs: Any,
    ) -> Callable[[Any], Any]:
        """A write taking ``request`` (``None``: no body) and answering ``response`` with ``status``, or one of the
        refusals."""
        refusals = self.write_errors if errors is None else errors
        return self.operation(summary, {status: response, **refusals}, request=request, **kwargs)

    def operation(self, summary: str, responses: Any, **kwargs: Any) -> Callable[[Any], Any]:
        """Any other operation: ``responses`` as they are."""
        return extend_schema(summary=summary, responses=responses, tags=self.tags, **kwargs)
