"""The Datanets REST API, mounted at ``/api/datanets/``: one view per operation, each calling a selector or a service.

Who may do what is decided by ``selectors.user_can_*`` (docs/datanets.md): a Datanet the user may not see is a 404,
as if it did not exist; an action on one they may see but not act on is a 403. Every refusal is a JSON body
``{"detail": <for people>, "code": <for programs>}`` (plus ``fields`` for per-field problems), and leaves nothing
written: the services run in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models import Q
from django.http import FileResponse, Http404, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema_field,
    extend_schema_serializer,
    extend_schema_view,
)
from rest_framework import exceptions, serializers
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.errors import READ_ERRORS, SIGNED_IN_ERRORS, WRITE_ERRORS, ChainUnavailable, error_response
from common.api.pagination import page_serializer, paginated
from common.api.schema import ApiSchema
from common.api.views import BaseApi
from common.jsonguard import JsonLimits
from common.ratelimit import chain_read_limited
from ledger.chain import ChainError
from ledger.proofs import anchor_facts

from . import exports, revocation, selectors, services, statistics
from .licences import LICENCE_CHOICES
from .markdown import render_markdown
from .models import (
    LANGUAGE_CHOICES,
    RECORD_TYPE_CHOICES,
    Contribution,
    Datanet,
    Receipt,
    Record,
    Revocation,
    Snapshot,
)

TAGS = ["datanets"]
schema = ApiSchema(TAGS)
# Room for the multipart boundaries, part headers and the small fields sent beside the file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
DOWNLOAD_CHUNK_BYTES = 256 * 1024
MAX_DECISIONS = 500
MAX_PASTED_RECORDS = 10_000


# Errors


class RecordsStaged(exceptions.APIException):
    status_code = 409
    default_detail = "this contribution's records are still being indexed; try again in a moment"
    default_code = "records_staged"
    wait = 5  # DRF's handler sends it as Retry-After


# Lookups: what the user may see, or a 404.


def _datanet_for(user: Any, slug: str, *, with_numbers: bool = False) -> Datanet:
    datanets = selectors.datanets_visible_to(user=user).select_related("owner")
    if with_numbers:
        datanets = selectors.with_numbers(datanets)
    return get_object_or_404(datanets, slug=slug)


def _contribution_for(user: Any, contribution_id: int) -> Contribution:
    """A contribution in a Datanet ``user`` can see, or one of their own (a removed member still sees and withdraws
    what they sent), else 404; whether they may act on it is the service's call."""
    visible = selectors.datanets_visible_to(user=user).values("pk")
    return get_object_or_404(
        Contribution.objects.select_related("datanet", "contributor", "reviewer").filter(
            Q(datanet__in=visible) | Q(contributor_id=user.pk)
        ),
        pk=contribution_id,
    )


def _readable_contribution(user: Any, contribution_id: int) -> Contribution:
    """Its contributor and its Datanet's curators read a contribution; to anyone else it does not exist."""
    contribution = _contribution_for(user, contribution_id)
    if contribution.contributor_id != user.pk and not selectors.user_can_curate(
        user=user, datanet=contribution.datanet
    ):
        raise Http404("no such contribution")
    return contribution


def _snapshot_for(user: Any, slug: str, number: int) -> Snapshot:
    datanet = _datanet_for(user, slug)
    return get_object_or_404(selectors.snapshots_of(datanet=datanet).select_related("datanet"), number=number)


def _all_visible(user: Any, model: type[Contribution | Record], ids: Iterable[int], what: str) -> list[Any]:
    """The ``model`` rows with these ids, all in Datanets ``user`` can see, or a 404 naming every id that is not."""
    wanted = set(ids)
    visible = selectors.datanets_visible_to(user=user).values("pk")
    found = list(model.objects.filter(pk__in=wanted, datanet__in=visible))
    if missing := sorted(wanted - {row.pk for row in found}):
        raise exceptions.NotFound(f"no such {what}: {', '.join(f'#{i}' for i in missing)}")
    return found


def _require(allowed: bool, message: str) -> None:
    if not allowed:
        raise exceptions.PermissionDenied(message)


def _require_curator(user: Any, datanet: Datanet, action: str) -> None:
    _require(
        selectors.user_can_curate(user=user, datanet=datanet),
        f"only the owner or a curator of {datanet.name!r} may {action}",
    )


# Shared output shapes


@extend_schema_serializer(component_name="Datanet")
class DatanetSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The number in its snapshots' anchor subjects, snapshot:<id>:<number>")
    slug = serializers.SlugField()
    name = serializers.CharField()
    summary = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField())
    domain = serializers.CharField()
    record_type = serializers.CharField()
    licence = serializers.CharField()
    visibility = serializers.CharField()
    contribution_policy = serializers.CharField()
    language = serializers.CharField()
    owner = serializers.CharField(source="owner.username")
    record_count = serializers.IntegerField(help_text="Accepted records, not excluded")
    word_count = serializers.IntegerField()
    contributor_count = serializers.IntegerField(help_text="Contributors with an accepted contribution")
    created_at = serializers.DateTimeField()


@extend_schema_serializer(component_name="DatanetDetail")
class DatanetDetailSerializer(DatanetSerializer):
    description = serializers.CharField(help_text="Markdown source")
    description_html = serializers.SerializerMethodField(help_text="The description rendered: no raw HTML, no script")
    daily_quota_bytes = serializers.IntegerField()
    daily_quota_files = serializers.IntegerField()
    near_duplicate_threshold = serializers.FloatField()
    curators = serializers.SerializerMethodField()
    stats = serializers.SerializerMethodField()
    permissions = serializers.SerializerMethodField(help_text="What the requesting user may do here")
    updated_at = serializers.DateTimeField()

    def get_description_html(self, datanet: Datanet) -> str:
        return render_markdown(datanet.description)

    def get_curators(self, datanet: Datanet) -> list[str]:
        return sorted(datanet.curators.values_list("username", flat=True))

    @extend_schema_field(serializers.DictField(child=serializers.IntegerField()))
    def get_stats(self, datanet: Datanet) -> dict[str, int]:
        return selectors.datanet_stats(datanet=datanet)

    @extend_schema_field(serializers.DictField(child=serializers.BooleanField()))
    def get_permissions(self, datanet: Datanet) -> dict[str, bool]:
        user = self.context["user"]
        return {
            "manage": selectors.user_can_manage(user=user, datanet=datanet),
            "curate": selectors.user_can_curate(user=user, datanet=datanet),
            "contribute": selectors.user_can_contribute(user=user, datanet=datanet),
        }


@extend_schema_serializer(component_name="ParseError")
class ParseErrorSerializer(serializers.Serializer):
    source = serializers.CharField()
    line = serializers.IntegerField()
    code = serializers.CharField()
    message = serializers.CharField()


@extend_schema_serializer(component_name="Contribution")
class ContributionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    datanet = serializers.CharField(source="datanet.slug")
    contributor = serializers.CharField(source="contributor.username")
    licence = serializers.CharField()
    status = serializers.CharField()
    source_filename = serializers.CharField()
    content_sha256 = serializers.CharField()
    size_bytes = serializers.IntegerField()
    bad_rows = serializers.CharField()
    record_count = serializers.IntegerField()
    records_staged = serializers.BooleanField(
        help_text="A large upload whose records are still being indexed: its records endpoint answers 409 until the "
        "checks start"
    )
    error_count = serializers.IntegerField(help_text="Bad rows left out")
    duplicate_row_count = serializers.IntegerField(help_text="Repeated rows left out")
    excluded_count = serializers.IntegerField(help_text="Records a curator excluded")
    parse_errors = ParseErrorSerializer(many=True)
    check_status = serializers.CharField()
    checks = serializers.DictField(help_text="Evidence of each automatic check, by name")
    quality_score = serializers.IntegerField(allow_null=True)
    reviewer = serializers.CharField(source="reviewer.username", allow_null=True, default=None)
    reviewed_at = serializers.DateTimeField(allow_null=True)
    review_reason = serializers.CharField()
    submitted_at = serializers.DateTimeField()
    withdrawn_at = serializers.DateTimeField(allow_null=True)
    replayed = serializers.BooleanField(
        read_only=True,
        help_text="True when an upload was a retry (the same Idempotency-Key, or the same bytes within the replay "
        "window) and this is the contribution stored the first time; nothing was stored again",
    )


IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="Any unique string (a UUID) per upload: a retry with the same key answers 200 with the contribution "
    "stored the first time instead of storing it again",
)


def _idempotency_key(request: Request) -> str:
    key = request.headers.get("Idempotency-Key", "").strip()
    if len(key) > 255 or not key.isascii() or not key.isprintable():
        raise exceptions.ValidationError({"Idempotency-Key": ["at most 255 printable ASCII characters"]})
    return key


def _licence_field() -> serializers.ChoiceField:
    return serializers.ChoiceField(
        choices=LICENCE_CHOICES, required=False, help_text="Default: the Datanet's own licence"
    )


def _bad_rows_field() -> serializers.ChoiceField:
    return serializers.ChoiceField(choices=Contribution.BadRows.choices, default=Contribution.BadRows.REJECT_WHOLE)


def _submit_responses(too_large: str) -> dict[int, Any]:
    """What an upload or a paste answers: 201 stored, 200 a retry, 413 (``too_large``), or a write refusal."""
    return {
        201: ContributionSerializer,
        200: OpenApiResponse(ContributionSerializer, description="A retry: the contribution stored the first time"),
        413: error_response(too_large),
        **WRITE_ERRORS,
    }


def _submitted(contribution: Contribution) -> Response:
    """201 with a new contribution; 200, flagged, with the earlier one a retry repeated."""
    response = Response(ContributionSerializer(contribution).data, status=200 if contribution.replayed else 201)
    if contribution.replayed:
        response["Idempotent-Replayed"] = "true"
    return response


@extend_schema_serializer(component_name="Anchor")
class AnchorSerializer(serializers.Serializer):
    """Where an anchored root lives on chain (``ledger.proofs.anchor_facts``): give it an Anchor, or the facts
    already built (with their ``subject`` filled in by whoever knows it)."""

    id = serializers.IntegerField()
    status = serializers.CharField()
    chain_id = serializers.IntegerField(allow_null=True)
    contract = serializers.CharField(help_text="LineageRegistry")
    contract_address = serializers.CharField(allow_null=True)
    tx_hash = serializers.CharField(allow_null=True, help_text="null until the anchor is sent")
    block_number = serializers.IntegerField(allow_null=True)
    confirmations = serializers.IntegerField()
    confirmed_at = serializers.DateTimeField(allow_null=True)
    kind = serializers.CharField()
    kind_code = serializers.IntegerField(help_text="The uint8 kind LineageRegistry stores")
    subject_id = serializers.CharField(help_text="bytes32: keccak256 of subject's UTF-8")
    subject = serializers.CharField(allow_null=True, help_text="e.g. snapshot:<datanet id>:<number>")
    root = serializers.CharField()

    def to_representation(self, instance: Any) -> Any:
        return super().to_representation(instance if isinstance(instance, dict) else anchor_facts(instance))


@extend_schema_serializer(component_name="Snapshot")
class SnapshotSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    datanet = serializers.CharField(source="datanet.slug")
    datanet_id = serializers.IntegerField(help_text="With number, the anchor's subject: snapshot:<datanet_id>:<number>")
    number = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    created_by = serializers.CharField(source="created_by.username")
    previous = serializers.IntegerField(source="previous.number", allow_null=True, default=None)
    record_count = serializers.IntegerField()
    contribution_count = serializers.IntegerField()
    contributor_count = serializers.IntegerField()
    words = serializers.IntegerField()
    duplicates_skipped = serializers.IntegerField()
    min_quality_score = serializers.IntegerField(help_text="The governed minimum quality score applied (0: none)")
    below_quality_count = serializers.IntegerField(help_text="Accepted contributions left out: scored below it")
    added_count = serializers.IntegerField()
    removed_count = serializers.IntegerField()
    merkle_root = serializers.CharField()
    anchor = serializers.SerializerMethodField()

    @extend_schema_field(AnchorSerializer)
    def get_anchor(self, snapshot: Snapshot) -> dict[str, Any]:
        return AnchorSerializer(services.snapshot_anchor_facts(snapshot)).data


@extend_schema_serializer(component_name="Record")
class RecordSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    position = serializers.IntegerField()
    source = serializers.CharField()
    line = serializers.IntegerField()
    canonical = serializers.CharField(help_text="Canonical JSON; record_hash = keccak256 of its UTF-8 bytes")
    record_hash = serializers.CharField()
    words = serializers.IntegerField()
    excluded = serializers.BooleanField()
    excluded_reason = serializers.CharField()
    flags = serializers.ListField(child=serializers.DictField(), help_text="{kind, start, end} in canonical")


@extend_schema_serializer(component_name="LeaderboardRow")
class LeaderboardRowSerializer(serializers.Serializer):
    username = serializers.CharField()
    accepted = serializers.IntegerField()
    rejected = serializers.IntegerField()
    pending = serializers.IntegerField()
    accepted_records = serializers.IntegerField()
    acceptance_rate = serializers.FloatField(allow_null=True, help_text="accepted / decided; null before any decision")


@extend_schema_serializer(component_name="ContributionDecision")
class DecisionSerializer(serializers.Serializer):
    action = serializers.CharField()
    actor = serializers.CharField(source="actor.username")
    reason = serializers.CharField()
    record = serializers.IntegerField(source="record_id", allow_null=True)
    created_at = serializers.DateTimeField()


@extend_schema_serializer(component_name="ContributionSnapshot")
class HoldingSnapshotSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    merkle_root = serializers.CharField()
    anchor_status = serializers.CharField(source="anchor.status")


@extend_schema_serializer(component_name="Receipt")
class ReceiptSerializer(serializers.Serializer):
    """A receipt: its document (JCS; keccak256 of its canonical bytes is ``document_hash``) and, once its batch is
    sealed, its inclusion proof (docs/proofs.md)."""

    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=Receipt.Kind.choices)
    document = serializers.SerializerMethodField(
        help_text="openledger.receipt.contribution.v1, openledger.receipt.curation.v1 or "
        "openledger.receipt.revocation.v1; null for the few seconds "
        "before a contribution receipt's records root is computed"
    )
    document_hash = serializers.SerializerMethodField(help_text="keccak256 of the document's JCS bytes")
    proof = serializers.SerializerMethodField(
        help_text="The proof envelope (openledger.proof.v1, artifact contribution_receipt or curation_receipt, "
        "leafEncoding [bytes32], value [document_hash], plus batch {id, size, sealed_at}); null until sealed"
    )

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_document(self, receipt: Receipt) -> dict[str, Any] | None:
        return receipt.document if receipt.document_hash else None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_document_hash(self, receipt: Receipt) -> str | None:
        return receipt.document_hash or None

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_proof(self, receipt: Receipt) -> dict[str, Any] | None:
        # one cache of loaded batch trees for the whole page: its receipts share a few batches
        trees = self.root.context.setdefault("receipt_trees", {})
        return selectors.receipt_proof(receipt, trees=trees)


DatanetPage = page_serializer(DatanetSerializer, "Datanet")
ContributionPage = page_serializer(ContributionSerializer, "Contribution")
SnapshotPage = page_serializer(SnapshotSerializer, "Snapshot")
RecordPage = page_serializer(RecordSerializer, "Record")
ReceiptPage = page_serializer(ReceiptSerializer, "Receipt")


class _DatanetFields(serializers.Serializer):
    """The settings a Datanet's owner chooses; every field optional (an update sends only what changes)."""

    name = serializers.CharField(max_length=120, required=False)
    summary = serializers.CharField(max_length=300, required=False, allow_blank=True)
    description = serializers.CharField(
        max_length=50_000, required=False, allow_blank=True, trim_whitespace=False, help_text="Markdown"
    )
    tags = serializers.ListField(
        child=serializers.CharField(max_length=services.MAX_TAG_LENGTH), max_length=services.MAX_TAGS, required=False
    )
    domain = serializers.CharField(max_length=60, required=False, allow_blank=True)
    record_type = serializers.ChoiceField(choices=RECORD_TYPE_CHOICES, required=False)
    licence = serializers.ChoiceField(choices=LICENCE_CHOICES, required=False)
    visibility = serializers.ChoiceField(choices=Datanet.Visibility.choices, required=False)
    contribution_policy = serializers.ChoiceField(choices=Datanet.Policy.choices, required=False)
    language = serializers.ChoiceField(choices=LANGUAGE_CHOICES, required=False, allow_blank=True)
    daily_quota_bytes = serializers.IntegerField(min_value=1, max_value=2**62, required=False)
    daily_quota_files = serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False)
    near_duplicate_threshold = serializers.FloatField(min_value=0.5, max_value=1.0, required=False)


def _detail(datanet: Datanet, user: Any) -> dict[str, Any]:
    datanet = selectors.with_numbers(Datanet.objects.filter(pk=datanet.pk)).select_related("owner").get()
    return DatanetDetailSerializer(datanet, context={"user": user}).data


# Datanets


class DatanetListApi(BaseApi):
    """Browse the Datanets you can see: full-text search over name, summary and tags, filters, sorting."""

    permission_classes = [AllowAny]

    @extend_schema_serializer(component_name="DatanetFilter")
    class FilterSerializer(serializers.Serializer):
        search = serializers.CharField(required=False, allow_blank=True, max_length=200)
        domain = serializers.CharField(required=False, allow_blank=True, max_length=60)
        record_type = serializers.ChoiceField(choices=RECORD_TYPE_CHOICES, required=False)
        licence = serializers.ChoiceField(choices=LICENCE_CHOICES, required=False)
        sort = serializers.ChoiceField(choices=list(selectors.SORTS), required=False, default="newest")
        page = serializers.IntegerField(required=False, min_value=1)

    @schema.read("List Datanets", DatanetPage, operation_id="datanets_list", parameters=[FilterSerializer])
    def get(self, request: Request) -> Response:
        filters = self.validated(self.FilterSerializer, request.query_params)
        query = {k: v for k, v in filters.items() if k != "page"}
        return paginated(self, request, selectors.datanet_list(user=request.user, **query), DatanetSerializer)


class DatanetCreateApi(BaseApi):
    """Create a Datanet owned by you; its slug comes from the name and never changes."""

    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="DatanetCreateRequest")
    class InputSerializer(_DatanetFields):
        name = serializers.CharField(max_length=120)

    @schema.write("Create a Datanet", InputSerializer, DatanetDetailSerializer, status=201)
    def post(self, request: Request) -> Response:
        data = self.validated(self.InputSerializer, request.data)
        datanet = services.datanet_create(owner=request.user, **data)
        return Response(_detail(datanet, request.user), status=201)


class DatanetDetailApi(BaseApi):
    """One Datanet with its numbers, curators and what you may do with it."""

    permission_classes = [AllowAny]

    @schema.read("Get a Datanet", DatanetDetailSerializer)
    def get(self, request: Request, slug: str) -> Response:
        datanet = _datanet_for(request.user, slug, with_numbers=True)
        return Response(DatanetDetailSerializer(datanet, context={"user": request.user}).data)


class DatanetUpdateApi(BaseApi):
    """Change a Datanet's settings (owner or global curator); send only the fields that change."""

    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="DatanetUpdateRequest")
    class InputSerializer(_DatanetFields):
        pass

    @schema.write("Update a Datanet", InputSerializer, DatanetDetailSerializer)
    def patch(self, request: Request, slug: str) -> Response:
        datanet = _datanet_for(request.user, slug)
        _require(
            selectors.user_can_manage(user=request.user, datanet=datanet),
            f"only the owner of {datanet.name!r} may change its settings",
        )
        data = self.validated(self.InputSerializer, request.data)
        datanet = services.datanet_update(datanet=datanet, user=request.user, **data)
        return Response(_detail(datanet, request.user))


@extend_schema_serializer(component_name="UsernameRequest")
class UsernameSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)


def _named_user(username: str) -> Any:
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise DjangoValidationError({"username": f"there is no user named {username!r}"}, code="unknown_user")
    return user


class _RoleApi(BaseApi):
    """Add or remove a curator or member; the subclasses name the service and who may call it."""

    permission_classes = [IsAuthenticated]
    service: Any = None
    role = ""
    managers_only = False

    def post(self, request: Request, slug: str) -> Response:
        datanet = _datanet_for(request.user, slug)
        if self.managers_only:
            allowed = selectors.user_can_manage(user=request.user, datanet=datanet)
            who = "the owner"
        else:
            allowed = selectors.user_can_curate(user=request.user, datanet=datanet)
            who = "the owner or a curator"
        _require(allowed, f"only {who} of {datanet.name!r} may change its {self.role}s")
        data = self.validated(UsernameSerializer, request.data)
        other = _named_user(data["username"])
        type(self).service(datanet=datanet, user=request.user, **{self.role: other})
        return Response(_detail(datanet, request.user))


def _role_schema(summary: str) -> Any:
    return schema.write(summary, UsernameSerializer, DatanetDetailSerializer)


@extend_schema_view(post=_role_schema("Add a curator"))
class DatanetCuratorAddApi(_RoleApi):
    """Name a curator (owner or global curator). Adding twice is harmless."""

    service = services.datanet_add_curator
    role = "curator"
    managers_only = True


@extend_schema_view(post=_role_schema("Remove a curator"))
class DatanetCuratorRemoveApi(_RoleApi):
    """Remove a curator (owner or global curator)."""

    service = services.datanet_remove_curator
    role = "curator"
    managers_only = True


@extend_schema_view(post=_role_schema("Add a member"))
class DatanetMemberAddApi(_RoleApi):
    """Add a member (owner or curator): members see a private Datanet and contribute to a members-only one."""

    service = services.datanet_add_member
    role = "member"


@extend_schema_view(post=_role_schema("Remove a member"))
class DatanetMemberRemoveApi(_RoleApi):
    """Remove a member (owner or curator)."""

    service = services.datanet_remove_member
    role = "member"


class DatanetLeaderboardApi(BaseApi):
    """Contributors of one Datanet ranked by accepted records, with their acceptance rate."""

    permission_classes = [AllowAny]

    @schema.read("Datanet leaderboard", LeaderboardRowSerializer(many=True), operation_id="datanets_leaderboard")
    def get(self, request: Request, slug: str) -> Response:
        datanet = _datanet_for(request.user, slug)
        return Response(LeaderboardRowSerializer(selectors.leaderboard(datanet=datanet), many=True).data)


class LeaderboardApi(BaseApi):
    """Contributors across every Datanet ranked by accepted records, with their acceptance rate."""

    permission_classes = [AllowAny]

    @schema.read(
        "Overall leaderboard",
        LeaderboardRowSerializer(many=True),
        errors={},
        operation_id="datanets_leaderboard_overall",
    )
    def get(self, request: Request) -> Response:
        return Response(LeaderboardRowSerializer(selectors.leaderboard(), many=True).data)


# Contributions


class ContributionUploadApi(BaseApi):
    """Upload one file (``.jsonl``, ``.csv``, ``.txt``, ``.md``, or a ``.zip`` of those) as a contribution.

    A body over ``UPLOAD_MAX_BYTES`` is refused (413) before it is read. ``bad_rows`` says what happens to a file
    with some bad rows: ``reject_whole`` refuses it (400, naming the first rows by line), ``exclude_bad`` keeps the
    good rows and lists the bad ones on the contribution.
    """

    permission_classes = [IsAuthenticated]
    parser_classes = [MultiPartParser]

    @extend_schema_serializer(component_name="ContributionUploadRequest")
    class InputSerializer(serializers.Serializer):
        file = serializers.FileField(max_length=255)
        licence = _licence_field()
        bad_rows = _bad_rows_field()

    def max_body_bytes(self) -> int:
        return settings.UPLOAD_MAX_BYTES + MULTIPART_OVERHEAD_BYTES

    @schema.operation(
        "Upload a contribution",
        _submit_responses("Over the upload size limit; not read"),
        request={"multipart/form-data": InputSerializer},
        parameters=[IDEMPOTENCY_KEY],
    )
    def post(self, request: Request, slug: str) -> Response:
        datanet = _datanet_for(request.user, slug)
        # checked before request.data, which reads the whole body
        _require_contributor(request.user, datanet)
        data = self.validated(self.InputSerializer, request.data)
        contribution = services.contribution_submit(
            datanet=datanet,
            contributor=request.user,
            upload=data["file"],
            licence=data.get("licence", datanet.licence),
            bad_rows=data["bad_rows"],
            idempotency_key=_idempotency_key(request),
        )
        return _submitted(contribution)


def _require_contributor(user: Any, datanet: Datanet) -> None:
    _require(
        selectors.user_can_contribute(user=user, datanet=datanet),
        f"only approved members may contribute to {datanet.name!r}",
    )


class ContributionPasteApi(BaseApi):
    """Contribute records sent in the body: ``records`` (a list of objects of the Datanet's record type) or
    ``text`` (JSON Lines, or for a text Datanet paragraphs separated by blank lines)."""

    permission_classes = [IsAuthenticated]

    def json_limits(self) -> JsonLimits:
        # ``text`` is a whole JSON Lines document: as long as the body may be; its records are held to the parser's
        # own limits.
        return JsonLimits.from_settings(max_string_chars=settings.JSON_MAX_BODY_BYTES)

    @extend_schema_serializer(component_name="ContributionPasteRequest")
    class InputSerializer(serializers.Serializer):
        records = serializers.ListField(
            child=serializers.DictField(), required=False, min_length=1, max_length=MAX_PASTED_RECORDS
        )
        text = serializers.CharField(required=False, trim_whitespace=False)
        licence = _licence_field()
        bad_rows = _bad_rows_field()

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if ("records" in attrs) == ("text" in attrs):
                raise serializers.ValidationError("send either records or text", code="records_or_text")
            return attrs

    @schema.operation(
        "Contribute records in the body",
        _submit_responses("The body is too large; not read"),
        request=InputSerializer,
        parameters=[IDEMPOTENCY_KEY],
    )
    def post(self, request: Request, slug: str) -> Response:
        datanet = _datanet_for(request.user, slug)
        _require_contributor(request.user, datanet)
        data = self.validated(self.InputSerializer, request.data)
        licence = data.get("licence", datanet.licence)
        options = {"licence": licence, "bad_rows": data["bad_rows"], "idempotency_key": _idempotency_key(request)}
        if "text" in data:
            contribution = services.contribution_submit_pasted(
                datanet=datanet, contributor=request.user, text=data["text"], **options
            )
        else:
            # One JSON object per line, read by the same parser as an uploaded file. ASCII escapes keep a lone
            # surrogate encodable, so the parser (not the encoder) refuses it with the row's line number.
            lines = "".join(json.dumps(record) + "\n" for record in data["records"])
            contribution = services.contribution_submit(
                datanet=datanet,
                contributor=request.user,
                upload=SimpleUploadedFile("pasted.jsonl", lines.encode()),
                **options,
            )
        return _submitted(contribution)


class ContributionListApi(BaseApi):
    """Your own contributions, newest first."""

    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="ContributionFilter")
    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=Contribution.Status.choices, required=False)
        datanet = serializers.SlugField(required=False)
        page = serializers.IntegerField(required=False, min_value=1)

    @schema.read(
        "My contributions",
        ContributionPage,
        errors=SIGNED_IN_ERRORS,
        operation_id="datanets_contributions_mine",
        parameters=[FilterSerializer],
    )
    def get(self, request: Request) -> Response:
        filters = self.validated(self.FilterSerializer, request.query_params)
        contributions = selectors.contributions_of(user=request.user)
        if "status" in filters:
            contributions = contributions.filter(status=filters["status"])
        if "datanet" in filters:
            contributions = contributions.filter(datanet__slug=filters["datanet"])
        return paginated(self, request, contributions, ContributionSerializer)


class ContributionQueueApi(BaseApi):
    """Pending contributions across the Datanets you curate, oldest first."""

    permission_classes = [IsAuthenticated]

    @schema.read("Curation queue", ContributionPage, errors=SIGNED_IN_ERRORS)
    def get(self, request: Request) -> Response:
        return paginated(self, request, selectors.contributions_for_curator(user=request.user), ContributionSerializer)


class ContributionDetailApi(BaseApi):
    """One contribution with its checks, decisions and the snapshots that hold it (contributor and curators)."""

    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="ContributionDetail")
    class OutputSerializer(ContributionSerializer):
        decisions = serializers.SerializerMethodField()
        snapshots = serializers.SerializerMethodField(help_text="The snapshots holding its records")

        @extend_schema_field(DecisionSerializer(many=True))
        def get_decisions(self, contribution: Contribution) -> Any:
            decisions = contribution.decisions.select_related("actor")
            return DecisionSerializer(decisions, many=True).data

        @extend_schema_field(HoldingSnapshotSerializer(many=True))
        def get_snapshots(self, contribution: Contribution) -> Any:
            snapshots = selectors.contribution_snapshots(contribution=contribution)
            return HoldingSnapshotSerializer(snapshots, many=True).data

    @schema.read("Get a contribution", OutputSerializer, errors={**SIGNED_IN_ERRORS, **READ_ERRORS})
    def get(self, request: Request, contribution_id: int) -> Response:
        contribution = _readable_contribution(request.user, contribution_id)
        return Response(self.OutputSerializer(contribution).data)


class ContributionRecordListApi(BaseApi):
    """The records of a contribution, in file order, with flagged spans (contributor and curators)."""

    permission_classes = [IsAuthenticated]

    @schema.read(
        "List a contribution's records",
        RecordPage,
        errors={
            **SIGNED_IN_ERRORS,
            **READ_ERRORS,
            409: error_response("The records of a large upload are still being indexed"),
        },
    )
    def get(self, request: Request, contribution_id: int) -> Response:
        contribution = _readable_contribution(request.user, contribution_id)
        if contribution.records_staged:
            raise RecordsStaged(
                f"contribution #{contribution.pk} is a large upload whose {contribution.record_count:,} records are "
                "being indexed (the checks start with that); try again in a moment"
            )
        return paginated(self, request, contribution.records.order_by("position"), RecordSerializer)


class ContributionWithdrawApi(BaseApi):
    """Take back your own pending contribution (also after leaving its Datanet): it joins no snapshot, its records
    and (unless someone else sent the same bytes) its file are deleted; it still counts for the day's quota."""

    permission_classes = [IsAuthenticated]

    @schema.write("Withdraw a contribution", None, ContributionSerializer)
    def post(self, request: Request, contribution_id: int) -> Response:
        contribution = _contribution_for(request.user, contribution_id)
        contribution = services.contribution_withdraw(contribution=contribution, user=request.user)
        return Response(ContributionSerializer(contribution).data)


class ContributionDecideApi(BaseApi):
    """Accept or reject one or many pending contributions at once, all or none; a rejection needs a reason, which
    the contributor reads."""

    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="ContributionDecideRequest")
    class InputSerializer(serializers.Serializer):
        contribution_ids = serializers.ListField(
            child=serializers.IntegerField(min_value=1), min_length=1, max_length=MAX_DECISIONS
        )
        action = serializers.ChoiceField(choices=[("accept", "accept"), ("reject", "reject")])
        reason = serializers.CharField(required=False, allow_blank=True, max_length=5000, default="")

    @schema.write("Accept or reject contributions", InputSerializer, ContributionSerializer(many=True))
    def post(self, request: Request) -> Response:
        data = self.validated(self.InputSerializer, request.data)
        contributions = _all_visible(request.user, Contribution, data["contribution_ids"], "contribution")
        decided = services.contributions_decide(
            curator=request.user, contributions=contributions, action=data["action"], reason=data["reason"]
        )
        decided = Contribution.objects.select_related("datanet", "contributor", "reviewer").filter(
            pk__in=[c.pk for c in decided]
        )
        return Response(ContributionSerializer(decided.order_by("pk"), many=True).data)


class RecordExcludeApi(BaseApi):
    """Leave one record of a pending contribution out of every snapshot (owner or curator), with a reason."""

    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="RecordExcludeRequest")
    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(max_length=5000)

    @schema.write("Exclude a record", InputSerializer, RecordSerializer)
    def post(self, request: Request, record_id: int) -> Response:
        visible = selectors.datanets_visible_to(user=request.user).values("pk")
        record = get_object_or_404(
            Record.objects.select_related("contribution__datanet").filter(datanet__in=visible), pk=record_id
        )
        _require_curator(request.user, record.contribution.datanet, "exclude records")
        data = self.validated(self.InputSerializer, request.data)
        record = services.record_exclude(curator=request.user, record=record, reason=data["reason"])
        return Response(RecordSerializer(record).data)


# Receipts


class DatanetReceiptListApi(BaseApi):
    """Every receipt of a Datanet's contributions (submissions and curation decisions, withdrawn contributions'
    included), oldest first, each with its document and, once sealed, its proof."""

    permission_classes = [AllowAny]

    @schema.read("List a Datanet's receipts", ReceiptPage, operation_id="datanets_receipts_list")
    def get(self, request: Request, slug: str) -> Response:
        datanet = _datanet_for(request.user, slug)
        return paginated(self, request, selectors.receipts_of_datanet(datanet=datanet), ReceiptSerializer)


class ContributionReceiptListApi(BaseApi):
    """A contribution's receipts (its submission's, then each decision's), to anyone who may see its Datanet."""

    permission_classes = [AllowAny]

    @schema.read("List a contribution's receipts", ReceiptPage, operation_id="datanets_contribution_receipts_list")
    def get(self, request: Request, contribution_id: int) -> Response:
        contribution = _contribution_for(request.user, contribution_id)
        receipts = selectors.receipts_of_contribution(contribution=contribution)
        return paginated(self, request, receipts, ReceiptSerializer)


# Snapshots and proofs


class SnapshotListApi(BaseApi):
    """A Datanet's snapshots, newest first, with their anchor state."""

    permission_classes = [AllowAny]

    @schema.read("List snapshots", SnapshotPage, operation_id="datanets_snapshots_list")
    def get(self, request: Request, slug: str) -> Response:
        datanet = _datanet_for(request.user, slug)
        snapshots = selectors.snapshots_of(datanet=datanet).select_related("datanet", "previous", "anchor__deployment")
        return paginated(self, request, snapshots, SnapshotSerializer)


class SnapshotFreezeApi(BaseApi):
    """Freeze the accepted records now into the next numbered snapshot, its root anchored in one transaction."""

    permission_classes = [IsAuthenticated]

    @schema.write("Freeze a snapshot", None, SnapshotSerializer, status=201)
    def post(self, request: Request, slug: str) -> Response:
        datanet = _datanet_for(request.user, slug)
        _require_curator(request.user, datanet, "freeze a snapshot")
        snapshot = services.snapshot_freeze(datanet=datanet, user=request.user)
        return Response(SnapshotSerializer(snapshot).data, status=201)


class SnapshotDetailApi(BaseApi):
    """One snapshot: its numbers, what changed since the previous one, and its anchor."""

    permission_classes = [AllowAny]

    @schema.read("Get a snapshot", SnapshotSerializer)
    def get(self, request: Request, slug: str, number: int) -> Response:
        return Response(SnapshotSerializer(_snapshot_for(request.user, slug, number)).data)


def _batched(lines: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Join lines into chunks of about ``size`` bytes: one write per line would make a big download slow."""
    chunk: list[bytes] = []
    held = 0
    for line in lines:
        chunk.append(line)
        held += len(line)
        if held >= size:
            yield b"".join(chunk)
            chunk, held = [], 0
    if chunk:
        yield b"".join(chunk)


class SnapshotDownloadApi(BaseApi):
    """The snapshot's records as JSON Lines, streamed: one object per leaf with the record's fields, its
    ``record_hash``, ``contribution_id``, ``contributor`` address, ``licence`` and ``leaf_index``. Loads with
    ``datasets.load_dataset("json", data_files=...)`` as it is."""

    permission_classes = [AllowAny]

    @schema.read("Download a snapshot (JSONL)", OpenApiTypes.BINARY, status=(200, "application/jsonl"))
    def get(self, request: Request, slug: str, number: int) -> StreamingHttpResponse:
        snapshot = _snapshot_for(request.user, slug, number)
        response = StreamingHttpResponse(
            _batched(exports.snapshot_jsonl_lines(snapshot=snapshot), DOWNLOAD_CHUNK_BYTES),
            content_type="application/jsonl; charset=utf-8",
        )
        response["Content-Disposition"] = f'attachment; filename="{exports.jsonl_filename(snapshot)}"'
        return response


class SnapshotParquetApi(BaseApi):
    """The snapshot's records as Parquet: the JSONL's rows and keys with fixed column types (chat ``messages`` a list
    of ``{role, content}`` structs), the Datanet, snapshot and Merkle root in the file's metadata. Built on first
    download and kept. Loads with ``pandas.read_parquet`` or ``datasets.Dataset.from_parquet`` as it is."""

    permission_classes = [AllowAny]

    @schema.read("Download a snapshot (Parquet)", OpenApiTypes.BINARY, status=(200, "application/vnd.apache.parquet"))
    def get(self, request: Request, slug: str, number: int) -> FileResponse:
        snapshot = _snapshot_for(request.user, slug, number)
        path = exports.snapshot_parquet_path(snapshot=snapshot)
        response = FileResponse(path.open("rb"), as_attachment=True, filename=exports.parquet_filename(snapshot))
        response["Content-Type"] = "application/vnd.apache.parquet"
        return response


class DatanetStatisticsApi(BaseApi):
    """Numbers of the Datanet's accepted records, or of one snapshot's (``?snapshot=N``): records, words, bytes, a
    histogram of words per record, contributors and licences by records (exact), and tokens per record (the bundled
    base model's tokenizer) and languages over an evenly spread sample of at most 2,000 records."""

    permission_classes = [AllowAny]

    @schema.read(
        "Get a Datanet's statistics",
        OpenApiTypes.OBJECT,
        parameters=[OpenApiParameter("snapshot", int, description="A snapshot's number; absent: the accepted records")],
    )
    def get(self, request: Request, slug: str) -> Response:
        datanet = _datanet_for(request.user, slug)
        chosen = request.query_params.get("snapshot", "")
        if chosen:
            if not chosen.isdigit() or len(chosen) > 9:
                raise exceptions.ValidationError({"snapshot": ["Give a snapshot's number."]})
            snapshot = _snapshot_for(request.user, slug, int(chosen))
        else:
            snapshot = None
        return Response(statistics.of(datanet=datanet, snapshot=snapshot).as_dict())


class SnapshotManifestApi(BaseApi):
    """What the snapshot's JSONL holds and where its root is anchored: counts, the JSONL's SHA-256, contributors,
    licences, the Merkle root and leaf encoding, chain, contract, transaction and block."""

    permission_classes = [AllowAny]

    @schema.read("Get a snapshot's manifest", OpenApiTypes.OBJECT)
    def get(self, request: Request, slug: str, number: int) -> Response:
        snapshot = _snapshot_for(request.user, slug, number)
        response = Response(exports.snapshot_manifest(snapshot=snapshot))
        response["Content-Disposition"] = f'inline; filename="{exports.jsonl_filename(snapshot)[:-6]}.manifest.json"'
        return response


def _record_in(snapshot: Snapshot, record_id: int) -> Record:
    return get_object_or_404(Record, pk=record_id, datanet_id=snapshot.datanet_id)


def _proof(snapshot: Snapshot, record: Record) -> dict[str, Any]:
    try:
        return services.record_proof(snapshot=snapshot, record=record)
    except Record.DoesNotExist:
        raise exceptions.NotFound(f"record {record.pk} is not in snapshot {snapshot.number}") from None


@extend_schema_serializer(component_name="ProofSnapshot")
class ProofSnapshotSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    datanet = serializers.CharField(help_text="The Datanet's slug")
    datanet_id = serializers.IntegerField()
    number = serializers.IntegerField()


class RecordProofApi(BaseApi):
    """A record's inclusion proof in a snapshot, in OpenZeppelin's StandardMerkleTree format: verify it with
    ``StandardMerkleTree.verify(root, leafEncoding, value, proof)`` or ``LineageRegistry.verify(root, leaf, proof)``
    (docs/proofs.md)."""

    permission_classes = [AllowAny]

    @extend_schema_serializer(component_name="RecordProof")
    class OutputSerializer(serializers.Serializer):
        schema = serializers.CharField(help_text="openledger.proof.v1")
        artifact = serializers.CharField(help_text="record")
        format = serializers.CharField()
        leafEncoding = serializers.ListField(child=serializers.CharField())
        root = serializers.CharField()
        value = serializers.ListField(child=serializers.CharField(), help_text="[record_hash, address, contribution]")
        leaf = serializers.CharField()
        proof = serializers.ListField(child=serializers.CharField())
        treeIndex = serializers.IntegerField()
        snapshot = ProofSnapshotSerializer()
        anchor = AnchorSerializer(allow_null=True)

    @schema.read("Get a record's inclusion proof", OutputSerializer)
    def get(self, request: Request, slug: str, number: int, record_id: int) -> Response:
        snapshot = _snapshot_for(request.user, slug, number)
        return Response(self.OutputSerializer(_proof(snapshot, _record_in(snapshot, record_id))).data)


class RecordProofVerifyApi(BaseApi):
    """Ask the chain (``LineageRegistry.verify``, an eth_call) whether the record's proof leads to an anchored
    root: false until the snapshot's anchor is mined. 503 when the chain can't be reached. Anyone may ask: it
    writes nothing."""

    permission_classes = [AllowAny]

    @extend_schema_serializer(component_name="ProofVerification")
    class OutputSerializer(serializers.Serializer):
        valid = serializers.BooleanField()
        root = serializers.CharField()
        leaf = serializers.CharField()

    @schema.write(
        "Verify a record's proof on chain",
        None,
        OutputSerializer,
        errors={
            429: error_response("Too many chain checks from this client (CHAIN_READ_RATE_LIMIT)"),
            503: error_response("Chain unreachable"),
            **READ_ERRORS,
        },
    )
    def post(self, request: Request, slug: str, number: int, record_id: int) -> Response:

        snapshot = _snapshot_for(request.user, slug, number)
        record = _record_in(snapshot, record_id)
        proof = _proof(snapshot, record)
        if limited := chain_read_limited(request):
            raise exceptions.Throttled(wait=limited.retry_after, detail=limited.message)
        try:
            valid = services.proof_verify_on_chain(snapshot=snapshot, record=record)
        except ChainError as e:
            raise ChainUnavailable(f"the chain can't be reached now: {e}") from None
        return Response(self.OutputSerializer({"valid": valid, "root": proof["root"], "leaf": proof["leaf"]}).data)


# Revocation (datanets/revocation.py, docs/revocation.md)


class RevocationConflict(exceptions.APIException):
    status_code = 409
    default_detail = "the records cannot be revoked in their present state"
    default_code = "conflict"


def _conflicts(act: Any) -> Any:
    """``act()``, a service's refusal of the records' state (revoked already, erased already, never accepted) as a
    409 that says why and since when; a refusal of a field stays a 400."""
    try:
        return act()
    except DjangoValidationError as e:
        if hasattr(e, "error_dict"):
            raise
        raise RevocationConflict("; ".join(e.messages)) from e


@extend_schema_serializer(component_name="Revocation")
class RevocationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=Revocation.Kind.choices, help_text="withdrawal (contributor) or takedown")
    reason = serializers.ChoiceField(choices=Revocation.Reason.choices)
    explanation = serializers.CharField()
    datanet = serializers.SlugField(source="datanet.slug")
    contribution = serializers.IntegerField(source="contribution_id")
    record_count = serializers.IntegerField()
    actor = serializers.CharField(source="actor.username")
    erased = serializers.BooleanField(source="erase", help_text="The records' bytes are erased; their hashes stay")
    erased_at = serializers.DateTimeField(allow_null=True)
    erased_by = serializers.CharField(source="erased_by.username", allow_null=True, default=None)
    policy = serializers.CharField(help_text="The reward policy in force (docs/revocation-policy.md)")
    created_at = serializers.DateTimeField()


RevocationPage = page_serializer(RevocationSerializer, "Revocation")


def _revocation_rows(revocations: Iterable[Revocation]) -> Any:
    ids = [r.pk for r in revocations]
    rows = Revocation.objects.filter(pk__in=ids).select_related("actor", "erased_by", "datanet")
    return RevocationSerializer(rows.order_by("pk"), many=True).data


class _TextField(serializers.CharField):
    """A JSON string, not a number or a list turned into one: a wrong type is the client's mistake to hear about."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            raise serializers.ValidationError(f"must be a string, not {type(data).__name__}")
        return super().to_internal_value(data)


class _FlagField(serializers.BooleanField):
    """A JSON ``true`` or ``false``, not "yes" or 1."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            raise serializers.ValidationError("must be true or false")
        return data


class _RevokeFields(serializers.Serializer):
    reason = serializers.ChoiceField(choices=Revocation.Reason.choices)
    explanation = _TextField(required=False, allow_blank=True, max_length=revocation.EXPLANATION_MAX_CHARS, default="")
    erase = _FlagField(required=False, default=False, help_text="Also erase the records' bytes")


class ContributionRevokeApi(BaseApi):
    """Withdraw your own accepted contribution: its records leave every snapshot frozen from now on (the earlier
    ones stay as anchored), the versions trained on them are flagged; with ``erase`` their bytes go too, their
    hashes stay. 409 when it was revoked already (with the date) or never accepted."""

    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="ContributionRevokeRequest")
    class InputSerializer(_RevokeFields):
        reason = serializers.ChoiceField(choices=Revocation.Reason.choices, default=Revocation.Reason.CONSENT)

    @schema.write(
        "Withdraw an accepted contribution",
        InputSerializer,
        RevocationSerializer,
        status=201,
        errors={409: error_response("Revoked already, or never accepted"), **WRITE_ERRORS},
    )
    def post(self, request: Request, contribution_id: int) -> Response:
        contribution = _contribution_for(request.user, contribution_id)
        data = self.validated(self.InputSerializer, request.data)
        done = _conflicts(lambda: revocation.contribution_revoke(contribution=contribution, user=request.user, **data))
        return Response(_revocation_rows([done])[0], status=201)


class RecordTakedownApi(BaseApi):
    """Take records down (a curator of their Datanet, or staff), all or none: one revocation per contribution they
    belong to. A record you may not see is a 404; one revoked already or never accepted a 409."""

    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="RecordTakedownRequest")
    class InputSerializer(_RevokeFields):
        record_ids = serializers.ListField(
            child=serializers.IntegerField(min_value=1), min_length=1, max_length=MAX_DECISIONS
        )
        explanation = _TextField(max_length=revocation.EXPLANATION_MAX_CHARS)

    @schema.write(
        "Take records down",
        InputSerializer,
        RevocationSerializer(many=True),
        status=201,
        errors={409: error_response("A record was revoked already, or never accepted"), **WRITE_ERRORS},
    )
    def post(self, request: Request) -> Response:
        data = self.validated(self.InputSerializer, request.data)
        records = _all_visible(request.user, Record, data.pop("record_ids"), "record")
        done = _conflicts(lambda: revocation.records_take_down(records=records, user=request.user, **data))
        return Response(_revocation_rows(done), status=201)


class RevocationEraseApi(BaseApi):
    """Erase the bytes of an earlier revocation's records (its contributor, a curator of its Datanet, staff): the
    text goes from storage, exports and indexes; the hashes and leaves stay. 409 when erased already."""

    permission_classes = [IsAuthenticated]

    @schema.write(
        "Erase a revocation's records",
        None,
        RevocationSerializer,
        errors={409: error_response("Erased already"), **WRITE_ERRORS},
    )
    def post(self, request: Request, revocation_id: int) -> Response:
        visible = selectors.datanets_visible_to(user=request.user).values("pk")
        revoked = get_object_or_404(
            Revocation.objects.select_related("contribution__datanet").filter(
                Q(datanet__in=visible) | Q(contribution__contributor_id=request.user.pk)
            ),
            pk=revocation_id,
        )
        done = _conflicts(lambda: revocation.revocation_erase(revocation=revoked, user=request.user))
        return Response(_revocation_rows([done])[0])


class ContributionRevocationListApi(BaseApi):
    """A contribution's revocations, newest first: to its contributor and its Datanet's curators."""

    permission_classes = [IsAuthenticated]

    @schema.read("List a contribution's revocations", RevocationPage)
    def get(self, request: Request, contribution_id: int) -> Response:
        contribution = _readable_contribution(request.user, contribution_id)
        rows = selectors.revocations_of_contribution(contribution=contribution)
        return paginated(self, request, rows, RevocationSerializer)


class DatanetRevocationListApi(BaseApi):
    """Every revocation of a Datanet's records, newest first: to its owner, curators and staff."""

    permission_classes = [IsAuthenticated]

    @schema.read(
        "List a Datanet's revocations",
        RevocationPage,
        errors={**READ_ERRORS, 403: error_response("Not a curator of the Datanet")},
    )
    def get(self, request: Request, slug: str) -> Response:
        datanet = _datanet_for(request.user, slug)
        _require(
            request.user.is_staff or selectors.user_can_curate(user=request.user, datanet=datanet),
            f"only the owner, a curator of {datanet.name!r} or staff may list its revocations",
        )
        return paginated(self, request, selectors.revocations_of_datanet(datanet=datanet), RevocationSerializer)


class MyRevocationListApi(BaseApi):
    """The revocations of your contributions (yours, and the takedowns of curators), newest first."""

    permission_classes = [IsAuthenticated]

    @schema.read("List the revocations of my contributions", RevocationPage, errors=SIGNED_IN_ERRORS)
    def get(self, request: Request) -> Response:
        return paginated(self, request, selectors.revocations_of_contributor(user=request.user), RevocationSerializer)
