"""The ModelFactory REST API, mounted at ``/api/modelfactory/``: base models, fine-tune and merge jobs, model
versions and their downloads. One view per operation, each calling a selector or a service.

Everything needs a signed-in user (401 otherwise) except reading versions: the published ones whose training data
is public are anyone's to read and download, with or without an account (``versions_visible_to``), so that a
verifier needs none. A job someone else owns, or a version ``versions_visible_to`` hides, is a 404 as if it did not
exist; an action on one you may see but not act on is a 403. Refusals share the Datanets API's JSON shape
``{"detail", "code", "fields"?}`` and leave nothing written (the services are atomic).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Q
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import exceptions, serializers
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.errors import READ_ERRORS, SIGNED_IN_ERRORS, WRITE_ERRORS, error_response
from common.api.pagination import page_serializer, paginated
from common.api.schema import ApiSchema
from common.api.views import BaseApi
from datanets.models import Snapshot
from datanets.selectors import datanets_visible_to
from datanets.storage import media_path

from . import lineage, revocations, selectors, services
from .config import PRESETS, TrainingConfig
from .models import BaseModel, FineTuneJob, ModelVersion
from .selectors import jobs_visible_to, version_adapter_files, version_training_data, versions_visible_to

TAGS = ["modelfactory"]
PUBLIC_READ_ERRORS = READ_ERRORS  # the reads anyone may make: no 401
READ_ERRORS = {**SIGNED_IN_ERRORS, **READ_ERRORS}
schema = ApiSchema(TAGS, read_errors=READ_ERRORS)
ADAPTER_FILES = (lineage.ADAPTER_WEIGHTS, lineage.ADAPTER_CONFIG)
MAX_SNAPSHOTS = 20
MAX_CONFIG_KEYS = 64
MAX_ID = 2**63 - 1  # PostgreSQL bigint: a larger id is no id, not a database error


class ModelFactoryApi(BaseApi):
    """JSON bodies only (bounded in size), refusals in the one shape (common.api), signed-in users only."""

    permission_classes = [IsAuthenticated]


def _job_for(user: Any, job_id: int) -> FineTuneJob:
    return get_object_or_404(jobs_visible_to(user=user), pk=job_id)


def _version_for(user: Any, version_id: int) -> ModelVersion:
    return get_object_or_404(versions_visible_to(user=user), pk=version_id)


# Output shapes


@extend_schema_serializer(component_name="BaseModel")
class BaseModelSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    architecture = serializers.CharField()
    model_type = serializers.CharField()
    parameters = serializers.IntegerField()
    context_length = serializers.IntegerField()
    weights_bytes = serializers.IntegerField()
    weights_sha256 = serializers.CharField(help_text="SHA-256 over the hex SHA-256 of each weights file, by name")
    licence = serializers.CharField()
    source = serializers.CharField()
    is_default = serializers.BooleanField()
    path = serializers.CharField(help_text="The folder on the workers' disk")
    created_at = serializers.DateTimeField()


@extend_schema_serializer(component_name="ModelSnapshotRef")
class SnapshotRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    datanet = serializers.CharField(source="datanet.slug")
    number = serializers.IntegerField()
    merkle_root = serializers.CharField()


@extend_schema_serializer(component_name="FineTuneJob")
class JobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=FineTuneJob.Kind.choices)
    name = serializers.CharField()
    description = serializers.CharField()
    owner = serializers.CharField(source="owner.username")
    base_model = serializers.IntegerField(source="base_model_id")
    base_model_name = serializers.CharField(source="base_model.name")
    parent_version = serializers.IntegerField(source="parent_version_id", allow_null=True)
    supersedes = serializers.IntegerField(
        source="supersedes_id",
        allow_null=True,
        help_text="The version trained on withdrawn records this job retrains without them",
    )
    snapshots = SnapshotRefSerializer(many=True, source="snapshots.all")
    config = serializers.DictField(help_text="The training settings (empty for a merge)")
    merge = serializers.DictField(help_text='A merge\'s recipe: {"method", "density", "parents": [{"id", "weight"}]}')
    status = serializers.ChoiceField(choices=FineTuneJob.Status.choices)
    step = serializers.IntegerField()
    total_steps = serializers.IntegerField()
    progress_percent = serializers.IntegerField()
    train_loss = serializers.FloatField(allow_null=True)
    eval_loss = serializers.FloatField(allow_null=True)
    learning_rate = serializers.FloatField(allow_null=True)
    tokens_per_s = serializers.FloatField(allow_null=True)
    eta_seconds = serializers.FloatField(allow_null=True)
    base_eval_loss = serializers.FloatField(allow_null=True, help_text="The base model's eval loss, before step 1")
    phase = serializers.CharField(
        help_text='What the run does now: "load", "train", "index"...; empty when not running'
    )
    phase_done = serializers.IntegerField(help_text="How far the current phase got, in phase_unit")
    phase_total = serializers.IntegerField(help_text="0 when the phase has no count")
    phase_unit = serializers.CharField()
    phases = serializers.ListField(
        child=serializers.DictField(), help_text='Finished phases in order: {"phase", "seconds", and their work}'
    )
    device = serializers.CharField(help_text="The device it ran on (cpu, cuda:0)")
    estimate = serializers.DictField(
        help_text='The estimate at launch: {"seconds", "phases": {phase: seconds}, "worker", "device_label", "source"}'
    )
    loss_history = serializers.ListField(child=serializers.DictField(), help_text="{step, train_loss, eval_loss, lr}")
    log_tail = serializers.ListField(child=serializers.CharField(), help_text="The last log lines, oldest first")
    error = serializers.CharField()
    cancel_requested = serializers.BooleanField()
    attempts = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    heartbeat_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    version = serializers.SerializerMethodField(help_text="The model version it produced, once it succeeded")

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_version(self, job: FineTuneJob) -> int | None:
        return ModelVersion.objects.filter(job=job).values_list("pk", flat=True).first()


@extend_schema_serializer(component_name="ModelVersionAdapterFile")
class AdapterFileSerializer(serializers.Serializer):
    name = serializers.CharField()
    sha256 = serializers.CharField(allow_null=True, help_text="null: a file of a v1 version missing on this server")
    bytes = serializers.IntegerField(allow_null=True)
    url = serializers.URLField()


@extend_schema_serializer(component_name="ModelVersionLineageParent")
class LineageParentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    manifest_hash = serializers.CharField()
    weight = serializers.FloatField()
    relation = serializers.CharField()


@extend_schema_serializer(component_name="ModelVersionRevocation")
class RevocationRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField(help_text="withdrawal (by the contributor) or takedown (by a curator or staff)")
    reason = serializers.CharField(help_text="consent, personal_data, licence, legal_request, other")
    datanet = serializers.DictField(help_text="{id, name}")
    records = serializers.IntegerField(help_text="How many of its records this version trained on")
    erased = serializers.BooleanField()
    at = serializers.DateTimeField()


@extend_schema_serializer(component_name="ModelVersionRevokedRecords")
class RevokedRecordsSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Distinct revoked records in the snapshots of its whole ancestry")
    erased = serializers.IntegerField(help_text="How many of them were erased")
    flagged_at = serializers.DateTimeField()
    revocations = RevocationRefSerializer(many=True, required=False, help_text="In the version's detail only")


@extend_schema_serializer(component_name="ModelVersion")
class VersionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    owner = serializers.CharField(source="owner.username")
    base_model = serializers.IntegerField(source="base_model_id")
    base_model_name = serializers.CharField(source="base_model.name")
    kind = serializers.CharField(source="job.kind")
    record_type = serializers.CharField()
    adapter_sha256 = serializers.CharField()
    adapter_bytes = serializers.IntegerField(help_text="The adapter files' sizes summed")
    manifest_hash = serializers.CharField(help_text="keccak256 of the manifest bytes: the root anchored on chain")
    anchor_status = serializers.CharField(source="anchor.status")
    published = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    job_id = serializers.IntegerField()
    anchor = serializers.SerializerMethodField(help_text="Where the manifest hash is anchored (ledger.proofs)")
    manifest_url = serializers.SerializerMethodField(help_text="The manifest's exact bytes")
    adapter_files = serializers.SerializerMethodField()
    parents = serializers.SerializerMethodField()
    revoked_records = serializers.SerializerMethodField(
        help_text='Null, or {"count", "erased", "flagged_at"}: how many distinct revoked records the snapshots of its '
        "whole ancestry hold (trained on them directly or through its parents), and how many were erased"
    )
    supersedes = serializers.IntegerField(
        source="job.supersedes_id",
        allow_null=True,
        help_text="The version trained on withdrawn records that this one retrained without them",
    )

    @extend_schema_field(RevokedRecordsSerializer(allow_null=True))
    def get_revoked_records(self, version: ModelVersion) -> dict[str, Any] | None:
        return selectors.version_revoked_summary(version)

    @extend_schema_field(serializers.DictField(allow_null=True))
    def get_anchor(self, version: ModelVersion) -> dict[str, Any] | None:
        return selectors.version_anchor_facts(version)

    def _version_url(self, version: ModelVersion, route: str, **kwargs: Any) -> str:
        path = reverse(f"modelfactory-api:{route}", kwargs={"version_id": version.pk, **kwargs})
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path

    @extend_schema_field(serializers.URLField())
    def get_manifest_url(self, version: ModelVersion) -> str:
        return self._version_url(version, "version_manifest")

    @extend_schema_field(AdapterFileSerializer(many=True))
    def get_adapter_files(self, version: ModelVersion) -> list[dict[str, Any]]:
        return [
            {**f, "url": self._version_url(version, "version_adapter_file", filename=f["name"])}
            for f in version_adapter_files(version=version)
        ]

    @extend_schema_field(LineageParentSerializer(many=True))
    def get_parents(self, version: ModelVersion) -> list[dict[str, Any]]:
        return [
            {
                "id": link.parent_id,
                "manifest_hash": link.parent.manifest_hash,
                "weight": link.weight,
                "relation": link.relation,
            }
            for link in version.parent_links.all()  # the list prefetches them with their parents
        ]


@extend_schema_serializer(component_name="ModelVersionParent")
class ParentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField(allow_null=True, help_text="null when that version is not visible to you")
    relation = serializers.CharField()
    weight = serializers.FloatField()
    manifest_hash = serializers.CharField()


@extend_schema_serializer(component_name="ModelVersionChild")
class ChildSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    relation = serializers.CharField()
    weight = serializers.FloatField()


@extend_schema_serializer(component_name="ModelVersionDetail")
class VersionDetailSerializer(VersionSerializer):
    job = serializers.IntegerField(source="job_id")
    description = serializers.CharField(source="job.description")
    config = serializers.DictField()
    seed = serializers.IntegerField()
    code_version = serializers.CharField()
    metrics = serializers.DictField()
    samples = serializers.ListField(
        child=serializers.DictField(),
        help_text="{prompt, reference, base, tuned}; empty when private_datanets > 0 (they quote training records)",
    )
    training = serializers.DictField(help_text="Run facts outside the lineage: device, steps, seconds")
    manifest = serializers.JSONField(help_text="The lineage manifest, parsed; download it for the exact bytes")
    parents = serializers.SerializerMethodField()
    children = serializers.SerializerMethodField()
    snapshots = SnapshotRefSerializer(
        many=True, source="seen.snapshots", help_text="The training snapshots of Datanets you may see"
    )
    private_datanets = serializers.IntegerField(
        source="seen.private_datanets",
        help_text="How many more Datanets it trained on that you may not see (named by neither snapshot nor sample)",
    )
    downloads = serializers.SerializerMethodField()
    superseded_by = serializers.SerializerMethodField(
        help_text="The versions retrained from this one without its withdrawn records"
    )

    def to_representation(self, version: ModelVersion) -> dict[str, Any]:
        # what this viewer may know of the training data, read once for the snapshots, the count and the samples
        version.seen = version_training_data(version=version, user=self.context["request"].user)  # type: ignore[attr-defined]
        data = super().to_representation(version)
        data["manifest"] = json.loads(version.manifest)
        if data["revoked_records"] is not None:
            data["revoked_records"]["revocations"] = [
                {k: r[k] for k in ("id", "kind", "reason", "datanet", "records", "erased")}
                | {"at": serializers.DateTimeField().to_representation(r["at"])}
                for r in revocations.revocation_reasons(version=version)
            ]
        if not version.seen.samples_shown:  # type: ignore[attr-defined]
            data["samples"] = []
        return data

    @extend_schema_field(ParentSerializer(many=True))
    def get_parents(self, version: ModelVersion) -> list[dict[str, Any]]:
        visible = set(versions_visible_to(user=self.context["request"].user).values_list("pk", flat=True))
        return [
            {
                "id": link.parent_id,
                "name": link.parent.name if link.parent_id in visible else None,
                "relation": link.relation,
                "weight": link.weight,
                "manifest_hash": link.parent.manifest_hash,
            }
            for link in version.parent_links.select_related("parent")
        ]

    @extend_schema_field(ChildSerializer(many=True))
    def get_children(self, version: ModelVersion) -> list[dict[str, Any]]:
        visible = versions_visible_to(user=self.context["request"].user).values("pk")
        links = version.child_links.filter(child__in=visible).select_related("child")
        return [
            {"id": link.child_id, "name": link.child.name, "relation": link.relation, "weight": link.weight}
            for link in links
        ]

    @extend_schema_field(serializers.ListField(child=serializers.IntegerField()))
    def get_superseded_by(self, version: ModelVersion) -> list[int]:
        visible = versions_visible_to(user=self.context["request"].user)
        return list(visible.filter(job__supersedes=version).order_by("pk").values_list("pk", flat=True))

    @extend_schema_field(serializers.DictField(child=serializers.URLField()))
    def get_downloads(self, version: ModelVersion) -> dict[str, str]:
        request = self.context["request"]
        base = request.build_absolute_uri(f"/api/modelfactory/versions/{version.pk}/")
        return {
            "manifest": base + "manifest/",
            **{name: f"{base}adapter/{name}" for name in ADAPTER_FILES},
        }


JobPage = page_serializer(JobSerializer, "FineTuneJob")
VersionPage = page_serializer(VersionSerializer, "ModelVersion")


# Base models


class BaseModelListApi(ModelFactoryApi):
    """The base models fine-tunes can start from: the bundled default first."""

    @schema.read("List base models", BaseModelSerializer(many=True), errors=SIGNED_IN_ERRORS)
    def get(self, request: Request) -> Response:
        models = BaseModel.objects.order_by("-is_default", "name")
        return Response(BaseModelSerializer(models, many=True).data)


class BaseModelRegisterApi(ModelFactoryApi):
    """Register a Hugging Face model folder on the workers' disk (staff): config, safetensors weights, tokenizer."""

    @extend_schema_serializer(component_name="BaseModelRegisterRequest")
    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=200)
        path = serializers.CharField(max_length=1000, help_text="Absolute path of the folder")
        licence = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")

    @schema.write("Register a base model", InputSerializer, BaseModelSerializer, status=201)
    def post(self, request: Request) -> Response:
        data = self.validated(self.InputSerializer, request.data)
        base = services.base_model_register(user=request.user, **data)
        return Response(BaseModelSerializer(base).data, status=201)


# Jobs


class JobListApi(ModelFactoryApi):
    """Your fine-tune and merge jobs, newest first (staff: everyone's)."""

    @extend_schema_serializer(component_name="FineTuneJobFilter")
    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=FineTuneJob.Status.choices, required=False)
        kind = serializers.ChoiceField(choices=FineTuneJob.Kind.choices, required=False)
        page = serializers.IntegerField(required=False, min_value=1)

    @schema.read(
        "List jobs",
        JobPage,
        errors={400: WRITE_ERRORS[400], **SIGNED_IN_ERRORS},
        operation_id="modelfactory_jobs_list",
        parameters=[FilterSerializer],
    )
    def get(self, request: Request) -> Response:
        filters = self.validated(self.FilterSerializer, request.query_params)
        jobs = jobs_visible_to(user=request.user).prefetch_related("snapshots__datanet")
        for name in ("status", "kind"):
            if value := filters.get(name):
                jobs = jobs.filter(**{name: value})
        return paginated(self, request, jobs, JobSerializer)


def _snapshots_for(user: Any, ids: list[int]) -> list[Snapshot]:
    """The snapshots by id; an unknown id is a 400, one in a Datanet the user may not see a 403 (naming no Datanet,
    which would tell a stranger what a private Datanet is called)."""
    found = Snapshot.objects.select_related("datanet").in_bulk(ids)
    if missing := [i for i in ids if i not in found]:
        raise DjangoValidationError({"snapshots": f"no snapshot #{missing[0]}"})
    visible = set(
        datanets_visible_to(user=user)
        .filter(pk__in={s.datanet_id for s in found.values()})
        .values_list("pk", flat=True)
    )
    if hidden := [i for i in ids if found[i].datanet_id not in visible]:
        raise PermissionDenied(
            f"snapshot #{hidden[0]} belongs to a private Datanet: only its owner and curators may train on it"
        )
    # the service refuses the rest (a private Datanet the user sees as a member), naming it: they may see its name
    return [found[i] for i in ids]


# What every new job is given, a fine-tune or a merge (a docstring here would become both requests' description).
class _NewJobFields(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(max_length=10_000, required=False, allow_blank=True, default="")


class JobLaunchApi(ModelFactoryApi):
    """Launch a LoRA fine-tune: from a base model or from a version (continue training), on one or more snapshots.

    The settings are a preset (quick-test, balanced, thorough; default: the defaults) with ``config`` overriding
    any of its fields. The job is queued on the training queue; watch it at ``jobs/{id}/``.
    """

    @extend_schema_serializer(component_name="FineTuneJobLaunchRequest")
    class InputSerializer(_NewJobFields):
        base_model = serializers.IntegerField(
            min_value=1,
            max_value=MAX_ID,
            required=False,
            allow_null=True,
            help_text="Default: the parent version's base, else the default model",
        )
        parent_version = serializers.IntegerField(
            min_value=1, max_value=MAX_ID, required=False, allow_null=True, help_text="Continue this version"
        )
        snapshots = serializers.ListField(
            child=serializers.IntegerField(min_value=1, max_value=MAX_ID),
            min_length=1,
            max_length=MAX_SNAPSHOTS,
            help_text="Snapshot ids",
        )
        preset = serializers.ChoiceField(choices=sorted(PRESETS), required=False, allow_null=True)
        config = serializers.DictField(required=False, default=dict, help_text="TrainingConfig fields to override")

        def validate_config(self, value: dict[str, Any]) -> dict[str, Any]:
            if len(value) > MAX_CONFIG_KEYS:
                raise serializers.ValidationError(f"at most {MAX_CONFIG_KEYS} settings")
            if "formatting" in value and not isinstance(value["formatting"], dict):
                raise serializers.ValidationError(
                    'formatting maps record types to modes, for example {"instruction": "plain"}'
                )
            return value

    @schema.write("Launch a fine-tune job", InputSerializer, JobSerializer, status=201)
    def post(self, request: Request) -> Response:
        data = self.validated(self.InputSerializer, request.data)
        parent = None
        if data.get("parent_version") is not None:
            parent = (
                versions_visible_to(user=request.user)
                .select_related("base_model")
                .filter(pk=data["parent_version"])
                .first()
            )
            if parent is None:
                raise DjangoValidationError({"parent_version": f"no model version #{data['parent_version']}"})
        if data.get("base_model") is not None:
            base = BaseModel.objects.filter(pk=data["base_model"]).first()
            if base is None:
                raise DjangoValidationError({"base_model": f"no base model #{data['base_model']}"})
        elif parent is not None:
            base = parent.base_model
        else:
            base = BaseModel.objects.filter(is_default=True).first()
            if base is None:
                raise DjangoValidationError({"base_model": "no default base model is registered; choose one"})
        preset = PRESETS[data["preset"]] if data.get("preset") else TrainingConfig()
        try:
            config = TrainingConfig.from_dict({**preset.to_dict(), **data["config"]})
        except (TypeError, ValueError) as e:
            raise DjangoValidationError({"config": str(e)}) from e
        job = services.job_launch(
            owner=request.user,
            name=data["name"],
            description=data["description"],
            base_model=base,
            snapshots=_snapshots_for(request.user, data["snapshots"]),
            config=config,
            parent_version=parent,
        )
        return Response(JobSerializer(job).data, status=201)


class MergeLaunchApi(ModelFactoryApi):
    """Merge two or more versions of one base model into a new version (linear, TIES or concatenation)."""

    @extend_schema_serializer(component_name="MergeParent")
    class ParentInput(serializers.Serializer):
        version = serializers.IntegerField(min_value=1, max_value=MAX_ID)
        weight = serializers.FloatField(
            min_value=-services.MAX_MERGE_WEIGHT,
            max_value=services.MAX_MERGE_WEIGHT,
            help_text="A finite number between -100 and 100; linear merges often use weights summing to 1",
        )

    @extend_schema_serializer(component_name="MergeLaunchRequest")
    class InputSerializer(_NewJobFields):
        parents = serializers.ListField(
            child=serializers.DictField(), min_length=2, max_length=services.MAX_MERGE_PARENTS
        )
        method = serializers.ChoiceField(choices=FineTuneJob.MergeMethod.choices, default="linear")
        density = serializers.FloatField(default=0.5, help_text="TIES: the share of each update kept, in (0, 1]")

        def validate_parents(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
            parsed = []
            for item in value:
                parent = MergeLaunchApi.ParentInput(data=item)
                if not parent.is_valid():
                    raise serializers.ValidationError(
                        'each parent is {"version": <id>, "weight": <number>}: '
                        + "; ".join(f"{k}: {v[0]}" for k, v in parent.errors.items())
                    )
                parsed.append(parent.validated_data)
            return parsed

    @schema.write("Launch a merge job", InputSerializer, JobSerializer, status=201)
    def post(self, request: Request) -> Response:
        data = self.validated(self.InputSerializer, request.data)
        ids = [p["version"] for p in data["parents"]]
        found = versions_visible_to(user=request.user).select_related("base_model").in_bulk(ids)
        if missing := [i for i in ids if i not in found]:
            raise DjangoValidationError({"parents": f"no model version #{missing[0]}"})
        job = services.merge_launch(
            owner=request.user,
            name=data["name"],
            description=data["description"],
            parents=[(found[p["version"]], p["weight"]) for p in data["parents"]],
            method=data["method"],
            density=data["density"],
        )
        return Response(JobSerializer(job).data, status=201)


class JobDetailApi(ModelFactoryApi):
    """A job's state and progress: step of total, losses, learning rate, tokens/s, ETA, loss history, log tail."""

    @schema.read("Get a job", JobSerializer)
    def get(self, request: Request, job_id: int) -> Response:
        return Response(JobSerializer(_job_for(request.user, job_id)).data)


class JobCancelApi(ModelFactoryApi):
    """Cancel a queued or running job: it stops before its next step and keeps nothing."""

    @schema.write("Cancel a job", None, JobSerializer)
    def post(self, request: Request, job_id: int) -> Response:
        job = services.job_cancel(job=_job_for(request.user, job_id), user=request.user)
        return Response(JobSerializer(job).data)


class JobRetryApi(ModelFactoryApi):
    """Queue a failed or cancelled job again; a run lost with its worker resumes from its last checkpoint."""

    @schema.write("Retry a job", None, JobSerializer)
    def post(self, request: Request, job_id: int) -> Response:
        job = services.job_retry(job=_job_for(request.user, job_id), user=request.user)
        return Response(JobSerializer(job).data)


# Versions


class VersionListApi(ModelFactoryApi):
    """Model versions you can see (published ones, and your own; without an account the published ones trained on
    public Datanets only), newest first; ``q`` searches names and descriptions."""

    permission_classes = [AllowAny]

    @extend_schema_serializer(component_name="ModelVersionFilter")
    class FilterSerializer(serializers.Serializer):
        q = serializers.CharField(required=False, allow_blank=True, max_length=200)
        base_model = serializers.IntegerField(min_value=1, max_value=MAX_ID, required=False)
        published = serializers.BooleanField(required=False, allow_null=True, default=None)
        mine = serializers.BooleanField(required=False, default=False)
        page = serializers.IntegerField(required=False, min_value=1)

    @schema.read(
        "List model versions",
        VersionPage,
        errors={400: WRITE_ERRORS[400]},
        operation_id="modelfactory_versions_list",
        parameters=[FilterSerializer],
    )
    def get(self, request: Request) -> Response:
        wanted = self.validated(self.FilterSerializer, request.query_params)
        versions = (
            versions_visible_to(user=request.user)
            .select_related("job", "anchor__deployment")
            .prefetch_related("parent_links__parent")
        )
        if q := wanted.get("q", "").strip():
            versions = versions.filter(Q(name__icontains=q) | Q(job__description__icontains=q))
        if wanted.get("base_model") is not None:
            versions = versions.filter(base_model_id=wanted["base_model"])
        if wanted.get("published") is not None:
            versions = versions.filter(published=wanted["published"])
        if wanted.get("mine"):
            versions = versions.filter(owner=request.user) if request.user.is_authenticated else versions.none()
        return paginated(self, request, versions, VersionSerializer)


class VersionDetailApi(ModelFactoryApi):
    """A version: lineage (parents with relation and weight, children, snapshots), config, metrics, samples, the
    manifest and its anchor's state on chain."""

    permission_classes = [AllowAny]

    @schema.read("Get a model version", VersionDetailSerializer, errors=PUBLIC_READ_ERRORS)
    def get(self, request: Request, version_id: int) -> Response:
        version = _version_for(request.user, version_id)
        return Response(VersionDetailSerializer(version, context={"request": request}).data)


class VersionPublishApi(ModelFactoryApi):
    """Publish a version (offered to everyone for inference) or unpublish it; its owner or staff only."""

    @extend_schema_serializer(component_name="ModelVersionPublishRequest")
    class InputSerializer(serializers.Serializer):
        published = serializers.BooleanField()

    @schema.write("Publish or unpublish a model version", InputSerializer, VersionDetailSerializer)
    def post(self, request: Request, version_id: int) -> Response:
        data = self.validated(self.InputSerializer, request.data)
        version = services.version_publish(
            version=_version_for(request.user, version_id),
            user=request.user,
            published=data["published"],
        )
        return Response(VersionDetailSerializer(version, context={"request": request}).data)


class RetrainConflict(exceptions.APIException):
    status_code = 409
    default_detail = "the version can't be retrained now"
    default_code = "conflict"


class VersionRetrainApi(ModelFactoryApi):
    """Retrain a version trained on withdrawn records without them (its owner only): the same base model and
    configuration, from scratch, on the newest snapshot of each Datanet in its ancestry that leaves them out (one
    frozen for the owner when there is none). The new job, and its version, supersede this one. 409 when the version
    is not flagged, is being (or was) retrained, or is a merge (the message names the sources to retrain)."""

    @schema.write(
        "Retrain a model version without its withdrawn records",
        None,
        JobSerializer,
        status=201,
        errors={409: error_response("Not flagged, already retrained, or a merge"), **WRITE_ERRORS},
    )
    def post(self, request: Request, version_id: int) -> Response:
        version = _version_for(request.user, version_id)
        try:
            job = services.version_retrain_without_revoked(version=version, user=request.user)
        except services.RetrainConflict as e:
            raise RetrainConflict("; ".join(e.messages)) from e
        return Response(JobSerializer(job).data, status=201)


class VersionManifestApi(ModelFactoryApi):
    """The lineage manifest's exact bytes: keccak256 of the body equals ``manifest_hash`` and the root on chain
    (also sent as the ``X-Manifest-Keccak256`` header)."""

    permission_classes = [AllowAny]

    @schema.read(
        "Download a version's manifest",
        OpenApiTypes.BINARY,
        status=(200, "application/json"),
        errors=PUBLIC_READ_ERRORS,
    )
    def get(self, request: Request, version_id: int) -> HttpResponse:
        version = _version_for(request.user, version_id)
        # the stored text, not a re-serialisation: these bytes are what was hashed and anchored
        response = HttpResponse(version.manifest.encode(), content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="model-version-{version.pk}.manifest.json"'
        response["X-Manifest-Keccak256"] = version.manifest_hash
        return response


class VersionAdapterFileApi(ModelFactoryApi):
    """One file of the version's adapter, as ``save_pretrained`` wrote it: put both in a folder and load it with
    ``PeftModel.from_pretrained(base, folder)``. ``X-Content-SHA256`` carries the file's SHA-256; for the weights it
    equals the manifest's ``adapter_sha256``."""

    permission_classes = [AllowAny]

    @schema.read(
        "Download a file of a version's adapter",
        OpenApiTypes.BINARY,
        status=(200, "application/octet-stream"),
        errors=PUBLIC_READ_ERRORS,
    )
    def get(self, request: Request, version_id: int, filename: str) -> FileResponse:
        if filename not in ADAPTER_FILES:
            raise Http404(f"an adapter has {' and '.join(ADAPTER_FILES)}; no {filename[:100]!r}")
        version = _version_for(request.user, version_id)
        path = Path(media_path(version.adapter_path)) / filename
        if not path.is_file():
            raise Http404(f"the adapter file {filename} of version #{version.pk} is missing on this server")
        if filename == "adapter_model.safetensors":
            digest = version.adapter_sha256  # computed when it was stored; the file is read-only since
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        content_type = "application/json" if filename.endswith(".json") else "application/octet-stream"
        response = FileResponse(path.open("rb"), as_attachment=True, filename=filename, content_type=content_type)
        response["X-Content-SHA256"] = digest
        response["ETag"] = f'"{digest}"'
        return response
