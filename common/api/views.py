"""The base of every API view but the OpenAI-compatible ``/v1`` ones."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.serializers import Serializer
from rest_framework.views import APIView

from common.jsonguard import GuardedJSONParser, JsonLimits, PayloadTooLarge


class BaseApi(APIView):
    """JSON bodies only, read through the guard and bounded in size before anything reads them; refusals in the one
    shape (``common.api.exception_handlers``). A view widens a limit by overriding ``max_body_bytes`` or
    ``json_limits``."""

    parser_classes = [GuardedJSONParser]

    def max_body_bytes(self) -> int:
        return settings.JSON_MAX_BODY_BYTES

    def json_limits(self) -> JsonLimits:
        return JsonLimits.from_settings()

    def validated(self, serializer_class: type[Serializer], data: Any) -> dict[str, Any]:
        """``data`` (a body, query parameters) as ``serializer_class`` reads it; a 400 naming the bad fields if it
        does not validate."""
        serializer = serializer_class(data=data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Before authentication: session auth's CSRF check reads a POST body, and the point is to never read this one.
        limit = self.max_body_bytes()
        if _content_length(request) > limit:
            raise PayloadTooLarge(f"the request is {_size(_content_length(request))}; at most {_size(limit)} here")
        super().initial(request, *args, **kwargs)


def _content_length(request: Request) -> int:
    try:
        return max(int(request.META.get("CONTENT_LENGTH") or 0), 0)
    except ValueError:
        return 0


def _size(size: int) -> str:
    return f"{size / (1024 * 1024):.1f}".removesuffix(".0") + " MB"
