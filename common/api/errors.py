"""The one refusal shape, as the OpenAPI schema documents it, and the refusals every app's API may raise."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema_serializer
from rest_framework import exceptions, serializers


@extend_schema_serializer(component_name="ApiError")
class ErrorSerializer(serializers.Serializer):
    """A refusal. When the input was wrong, a ``fields`` object beside them maps each field to its messages."""

    detail = serializers.CharField(help_text="What went wrong, for people")
    code = serializers.CharField(help_text="What went wrong, for programs")


class ChainUnavailable(exceptions.APIException):
    status_code = 503
    default_detail = "the chain can't be reached now; try again later"
    default_code = "chain_unavailable"


def error_response(description: str = "Refused; nothing changed") -> OpenApiResponse:
    """A refusal in the schema: ``ErrorSerializer``'s shape with ``description``."""
    return OpenApiResponse(ErrorSerializer, description=description)


SIGNED_IN_ERRORS = {401: error_response("Not signed in")}
READ_ERRORS = {404: error_response("No such thing, or not visible to you")}
WRITE_ERRORS = {
    400: error_response("The input is wrong; nothing changed"),
    **SIGNED_IN_ERRORS,
    403: error_response("Signed in, but not allowed to do this"),
    **READ_ERRORS,
}
