"""The project's own API: the health of every real part."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.views import BaseApi

from .health import system_health


class HealthApi(BaseApi):
    """The state of database, broker, workers, chain and model; 503 when any is down."""

    permission_classes = [AllowAny]

    class OutputSerializer(serializers.Serializer):
        ok = serializers.BooleanField()
        checked_at = serializers.DateTimeField()
        components = serializers.DictField(child=serializers.DictField())

    @extend_schema(responses={200: OutputSerializer, 503: OutputSerializer})
    def get(self, request: Request) -> Response:
        health = system_health()
        return Response(health, status=200 if health["ok"] else 503)
