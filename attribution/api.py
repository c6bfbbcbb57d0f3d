"""The attribution API, mounted at ``/api/attribution/``: the full credit list of a run, paged; and the run API's
``attribution`` (``run_attribution_data``, a run extra of ``inference.hooks``).

A run's panel shows its top records; this lists every record it credited, by rank. The run page's rule applies:
anyone with the run's link (its unguessable id) reads it, signed in or not. Records of Datanets the caller may not
view are counted (rank and share) but not identified, as on the panel.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import exceptions, serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.errors import READ_ERRORS
from common.api.pagination import page_serializer
from common.api.views import BaseApi
from inference.models import InferenceRun
from inference.selectors import run_for_viewer

from . import hooks, selectors
from .models import RunAttribution

TAGS = ["attribution"]


class CreditPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


@extend_schema_serializer(component_name="RunCredit")
class CreditSerializer(serializers.Serializer):
    """One credited record. ``visible`` false: its Datanet is not visible to the caller, so only its rank and share
    are given (the identifying fields are null)."""

    rank = serializers.IntegerField()
    share = serializers.CharField(help_text='Exact share of the credit, "p/q"; all records of a run sum to 1')
    share_percent = serializers.FloatField()
    by_signal = serializers.JSONField(allow_null=True, help_text='{signal: "p/q"}, summing to share')
    visible = serializers.BooleanField()
    record = serializers.IntegerField(allow_null=True)
    record_hash = serializers.CharField(allow_null=True)
    contribution = serializers.IntegerField(allow_null=True)
    datanet = serializers.CharField(allow_null=True, help_text="The Datanet's slug")
    erased = serializers.BooleanField(
        allow_null=True, help_text="Its bytes were erased: only its hash and contribution remain (null when hidden)"
    )

    def to_representation(self, credit: selectors.Credit) -> dict[str, object]:
        row, shown = credit.row, credit.visible
        return {
            "rank": row.rank,
            "share": row.share,
            "share_percent": round(row.share_float * 100, 4),
            "by_signal": row.by_signal if shown else None,
            "visible": shown,
            "record": row.record_id if shown else None,
            "record_hash": row.record.record_hash if shown else None,
            "contribution": row.contribution_id if shown else None,
            "datanet": row.record.datanet.slug if shown else None,
            "erased": selectors.record_is_erased(row.record) if shown else None,
        }


class RunCreditListApi(BaseApi):
    """Every record credited for a run's answer, by rank (``page`` and ``page_size``, at most 200)."""

    permission_classes = [AllowAny]

    @extend_schema(
        summary="List a run's credited records",
        operation_id="attribution_run_credits_list",
        responses={200: page_serializer(CreditSerializer, "RunCredit"), **READ_ERRORS},
        tags=TAGS,
    )
    def get(self, request: Request, public_id: uuid.UUID) -> Response:
        run = run_for_viewer(public_id=public_id, user=request.user)
        if run is None:
            raise exceptions.NotFound("no such run")
        attribution = RunAttribution.objects.filter(run=run, status=RunAttribution.Status.OK).first()
        if attribution is None:
            raise exceptions.NotFound("this run has no attributed records (yet)")
        paginator = CreditPagination()
        page = paginator.paginate_queryset(selectors.run_credits(attribution=attribution), request, view=self)
        credits = selectors.credits_as_seen(rows=list(page), user=request.user)
        return paginator.get_paginated_response(CreditSerializer(credits, many=True).data)


def run_attribution_data(*, run: InferenceRun, user: Any) -> dict[str, Any]:
    """The run page's attribution panel as data: state, shares as exact "p/q" fractions, the fee, and what the apps
    above attribution add to a final one (``rewards``: the reward split).

    Records of Datanets the caller may not view are counted in the shares but not identified.
    """
    panel = selectors.run_panel(run=run, user=user)
    data: dict[str, Any] = {"state": panel.state}
    attribution = panel.attribution
    if attribution is None or not panel.final:
        return data
    datanet_shares = {int(d): share for d, share in attribution.datanets}
    data.update(
        policy_version=attribution.policy_version,
        reward_policy_version=attribution.reward_policy_version,
        index={"features_sha256": attribution.feature_hash, "spans_sha256": attribution.span_hash},
        signal_shares=attribution.signal_shares,
        revocation_policy=attribution.revocation_policy or None,
        revoked_excluded=list(attribution.revoked_excluded),
        explanation=attribution.explanation,
        verdict=attribution.verdict or None,
        confidence=attribution.confidence,
        reliability=(
            {
                "state": panel.reliability.state,
                "sentence": panel.reliability.sentence,
                "figures": panel.reliability.figures,
            }
            if panel.reliability is not None
            else None
        ),
        more_records=panel.more_count,
        contributors=[
            {"user": c.user_id, "name": c.name, "wallet": c.wallet or None, "share": s}
            for c, (_, s) in zip(panel.contributors, attribution.contributors, strict=True)
        ],
        datanets=[
            {"slug": datanet.slug, "share": datanet_shares[datanet.pk]}
            for datanet, _, visible in panel.datanets
            if visible
        ],
        records=[
            {
                "record": r.record.pk,
                "record_hash": r.record.record_hash,
                "contribution": r.row.contribution_id,
                "share": r.row.share,
                "by_signal": r.row.by_signal,
                "erased": r.erased,
            }
            for r in panel.records
            if r.visible
        ],
        fee=str(int(attribution.fee)),
    )
    for name, extra in hooks.attribution_extras().items():
        if name in data:
            raise ImproperlyConfigured(f"the attribution extra {name!r} would hide attribution's own {name!r}")
        data[name] = extra(run=run, user=user)
    return data
