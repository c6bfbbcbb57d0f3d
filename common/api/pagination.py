"""Paged lists: DRF's ``PageNumberPagination`` envelope, and its description for the schema."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.db.models import QuerySet
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


def page_serializer(item: type[serializers.Serializer], name: str) -> type[serializers.Serializer]:
    """The response envelope of a paginated list of ``item`` (what ``PageNumberPagination`` sends)."""
    return type(
        f"{name}PageSerializer",
        (serializers.Serializer,),
        {
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": item(many=True),
        },
    )


def paginated(
    view: APIView,
    request: Request,
    items: QuerySet[Any] | list[Any],
    serializer: type[serializers.Serializer],
    *,
    shown: Callable[[list[Any]], Iterable[Any]] | None = None,
) -> Response:
    """One page of ``items`` in the envelope ``page_serializer`` describes; ``shown`` turns the page's items into
    what ``serializer`` reads, when it reads something else."""
    paginator = PageNumberPagination()
    page = paginator.paginate_queryset(items, request, view=view)
    rows = page if shown is None else shown(page)
    return paginator.get_paginated_response(serializer(rows, many=True, context={"request": request}).data)
