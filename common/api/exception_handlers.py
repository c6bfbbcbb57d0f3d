"""The project's DRF ``EXCEPTION_HANDLER`` (settings): every refusal of every API, in one shape.

``{"detail": <for people>, "code": <for programs>}``, plus ``fields`` (field -> messages) when the input was wrong.
Django's own ``ValidationError`` (raised by models and services), ``PermissionDenied`` and ``Http404`` are refused
like DRF's: a service need not know it runs under an API. The OpenAI-compatible ``/v1`` views answer in OpenAI's
shape through a handler of their own (``inference.api``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler (its headers: ``WWW-Authenticate``, ``Retry-After``), with every refusal's body in the one shape;
    ``None`` for what is no refusal (a bug), which DRF then raises."""
    if isinstance(exc, DjangoValidationError):
        set_rollback()
        status = 413 if _error_code(exc) == "too_large" else 400
        return Response(_django_validation_body(exc), status=status)
    if isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or None)
    response = exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.APIException):
        response.data = _drf_error_body(exc, response.data)
    return response


def _error_code(error: DjangoValidationError) -> str:
    if hasattr(error, "error_dict"):
        first = next(iter(error.error_dict.values()))[0]
        return first.code or "invalid"
    if hasattr(error, "error_list") and error.error_list:
        return error.error_list[0].code or "invalid"
    return getattr(error, "code", None) or "invalid"


def _django_validation_body(error: DjangoValidationError) -> dict[str, Any]:
    if hasattr(error, "error_dict"):
        fields = error.message_dict
        detail = "; ".join(
            message if field == "__all__" else f"{field}: {message}"
            for field, messages in fields.items()
            for message in messages
        )
        return {"detail": detail, "code": _error_code(error), "fields": fields}
    return {"detail": "; ".join(error.messages), "code": _error_code(error)}


def _flatten(data: Any, prefix: str = "") -> Iterator[tuple[str, str, str]]:
    """(field, message, code) for each message of a DRF validation error's nested dicts and lists."""
    if isinstance(data, dict):
        for key, value in data.items():
            name = key if key == "non_field_errors" or not prefix else f"{prefix}.{key}"
            yield from _flatten(value, "" if key == "non_field_errors" else name)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _flatten(value, f"{prefix}[{index}]" if isinstance(value, dict | list) else prefix)
    else:
        yield prefix, str(data), getattr(data, "code", "invalid") or "invalid"


def _drf_error_body(exc: exceptions.APIException, data: Any) -> dict[str, Any]:
    if isinstance(data, dict) and set(data) == {"detail"}:
        detail = data["detail"]
        return {"detail": str(detail), "code": getattr(detail, "code", None) or exc.default_code}
    problems = list(_flatten(data))
    detail = "; ".join(f"{field}: {message}" if field else message for field, message, _ in problems)
    body: dict[str, Any] = {"detail": detail or str(exc), "code": problems[0][2] if problems else exc.default_code}
    if isinstance(data, dict):
        body["fields"] = data
    return body
