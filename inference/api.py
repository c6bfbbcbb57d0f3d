"""Inference APIs: a run's record (``/api/runs/<id>/``) and the OpenAI-compatible ``/v1`` endpoints.

The ``/v1`` views speak OpenAI's dialect exactly: ``Authorization: Bearer <API token>``, ``model`` ids from
``GET /v1/models`` (``mv-<version id>``, ``base-<base model id>``) or a composite of versions combined at request
time (``mix:mv-3=0.7,mv-5=0.3;method=ties``, or ``model: "mix"`` with a ``composition`` field: ``composites``),
responses and stream chunks in OpenAI's shapes, and every error as ``{"error": {"message", "type", "param",
"code"}}``. Each answer names its run: the response ``id`` is ``chatcmpl-<run id>`` (``cmpl-`` for completions),
an ``openledger`` object carries the run id and URLs, and the ``X-OpenLedger-Run`` header the run id. The views
queue a run and wait for it on its event stream.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing
from typing import Any

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse, StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_serializer, extend_schema_view
from rest_framework import exceptions, serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import ApiTokenAuthentication, BearerApiTokenAuthentication
from common.api.views import BaseApi
from common.jsonguard import GuardedJSONParser, PayloadTooLarge
from modelfactory.models import BaseModel, ModelVersion
from modelfactory.selectors import version_anchor_facts, version_revoked_records

from . import composites, hooks, ids, selectors, services, streams
from .models import InferenceRun

RUN_HEADER = "X-OpenLedger-Run"
# Parameters OpenAI's clients may send that change nothing here when left at their neutral value.
NEUTRAL_PARAMS = {
    "n": 1,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logprobs": None,
    "top_logprobs": None,
    "logit_bias": None,
    "echo": False,
    "best_of": 1,
    "suffix": None,
    "parallel_tool_calls": None,
    "tools": None,
    "tool_choice": None,
    "response_format": None,
}
IGNORED_PARAMS = {"user", "stream_options", "metadata", "store", "service_tier"}


def openai_error(
    message: str,
    *,
    status: int,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> Response:
    return Response({"error": {"message": message, "type": type_, "param": param, "code": code}}, status=status)


def _openai_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's own refusals (authentication, parsing, media type, method) in OpenAI's error shape."""
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        detail = "no API key given" if isinstance(exc, exceptions.NotAuthenticated) else str(exc.detail)
        response = openai_error(
            f"{detail}: send 'Authorization: Bearer <your API token>' (create one on your profile page)",
            status=401,
            code="invalid_api_key",
        )
        response["WWW-Authenticate"] = 'Bearer realm="api"'
        return response
    if isinstance(exc, exceptions.ParseError):
        if exc.detail.code == "parse_error":
            return openai_error(f"the body is not valid JSON: {exc.detail}", status=400, code="invalid_json")
        # refused by common.jsonguard: too deep, too long, out of range or not finite, with its own words
        return openai_error(str(exc.detail), status=400, code=exc.detail.code)
    if isinstance(exc, PayloadTooLarge):  # a body without Content-Length, stopped at the limit while read
        return openai_error(str(exc.detail), status=413, code="request_too_large")
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return openai_error(
            f"{exc.detail}; send the body as application/json", status=415, code="unsupported_media_type"
        )
    if isinstance(exc, exceptions.MethodNotAllowed):
        return openai_error(str(exc.detail), status=405, code="method_not_allowed")
    if isinstance(exc, exceptions.Throttled):
        return openai_error(str(exc.detail), status=429, type_="rate_limit_error", code="rate_limit_exceeded")
    if isinstance(exc, exceptions.APIException):
        return openai_error(str(exc.detail), status=exc.status_code, code=exc.default_code)
    return None


def _rejected(error: services.RunRejected) -> Response:
    type_ = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error", 503: "server_error"}.get(
        error.status, "invalid_request_error"
    )
    response = openai_error(error.message, status=error.status, type_=type_, param=error.param, code=error.code)
    if isinstance(error, services.RateLimited):
        response["Retry-After"] = str(error.retry_after)
    return response


def _run_links(request: Request, run: InferenceRun) -> dict[str, str]:
    return {
        "run_id": str(run.public_id),
        "run_url": request.build_absolute_uri(reverse("inference:run_detail", args=[run.public_id])),
        "api_url": request.build_absolute_uri(reverse("inference-api:run_detail", args=[run.public_id])),
    }


class OpenAIApiView(APIView):
    authentication_classes = [BearerApiTokenAuthentication, ApiTokenAuthentication]
    parser_classes = [GuardedJSONParser]

    def get_exception_handler(self):  # type: ignore[no-untyped-def]
        return _openai_exception_handler

    def permission_denied(self, request: Request, message: str | None = None, code: str | None = None) -> None:
        if not request.successful_authenticator:
            raise exceptions.NotAuthenticated()
        super().permission_denied(request, message=message, code=code)


# -- /v1/models ---------------------------------------------------------------------------------------------------


class ModelListApi(OpenAIApiView):
    """The models this token may ask: published versions, the caller's own, and the base models alone.

    Beside OpenAI's fields each model has an ``openledger`` object: ``revoked_records`` is null, or
    ``{"count", "erased"}`` for a version trained on withdrawn records, directly or through its parents (issue 17:
    ``count`` distinct revoked records in the snapshots of its whole ancestry, ``erased`` of them erased).
    """

    @extend_schema(
        operation_id="v1_models_list", summary="OpenAI-compatible list of askable models", responses=OpenApiTypes.OBJECT
    )
    def get(self, request: Request) -> Response:
        data = [
            {
                "id": ids.model_id_of(v, v.base_model),
                "object": "model",
                "created": int(v.created_at.timestamp()),
                "owned_by": v.owner.get_username(),
                "name": v.name,
                "base_model": v.base_model.name,
                "published": v.published,
                "openledger": {"revoked_records": _revoked_records(v)},
            }
            for v in selectors.versions_askable_by(user=request.user).select_related("owner", "base_model")
        ]
        data += [
            {
                "id": ids.model_id_of(None, b),
                "object": "model",
                "created": int(b.created_at.timestamp()),
                "owned_by": "openledger",
                "name": b.name,
                "base_model": b.name,
                "published": True,
                "openledger": {"revoked_records": None},
            }
            for b in BaseModel.objects.order_by("id")
        ]
        return Response({"object": "list", "data": data})


def _revoked_records(version: Any) -> dict[str, int] | None:
    revoked, erased = version_revoked_records(version)  # read with the version (a join): no query
    return {"count": revoked, "erased": erased} if revoked else None


# -- completions --------------------------------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _body(request: Request) -> dict[str, Any]:
    data = request.data
    if not isinstance(data, dict):
        raise _Refused(openai_error("the body must be a JSON object", status=400, code="invalid_json"))
    return data


def _check_params(body: dict[str, Any], known: set[str]) -> None:
    for key, value in body.items():
        if key in known or key in IGNORED_PARAMS:
            continue
        if key in NEUTRAL_PARAMS:
            if value not in (NEUTRAL_PARAMS[key], None) and not (key == "logprobs" and value is False):
                raise _Refused(
                    openai_error(f"{key}={value!r} is not supported here", status=400, param=key, code="unsupported")
                )
            continue
        raise _Refused(openai_error(f"unrecognized request argument: {key}", status=400, param=key))


class _CompletionBase(OpenAIApiView):
    id_prefix: str
    object_name: str
    chunk_object: str
    prompt_param: str
    KNOWN = {
        "model", "stream", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed", "composition"
    }  # fmt: skip

    def prompt_fields(self, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def post(self, request: Request) -> HttpResponse:
        # DRF parses the stream without Django's body size check: refuse an oversized body before reading it
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > settings.JSON_MAX_BODY_BYTES:
            return openai_error(
                f"the body is {length} bytes; the limit is {settings.JSON_MAX_BODY_BYTES}",
                status=413,
                code="request_too_large",
            )
        try:
            body = _body(request)
            _check_params(body, self.KNOWN | {self.prompt_param})
            model = body.get("model")
            if not isinstance(model, str) or not model:
                raise _Refused(openai_error("model is required (see GET /v1/models)", status=400, param="model"))
            spec = composites.composition_spec(model=model, field=body.get("composition"))
            composition = composites.composition_clean(user=request.user, spec=spec) if spec is not None else None
            resolved = (
                (None, None) if composition is not None else selectors.model_for_id(user=request.user, model=model)
            )
            if resolved is None:
                raise _Refused(
                    openai_error(
                        f"the model {model!r} does not exist or you do not have access to it (see GET /v1/models)",
                        status=404,
                        param="model",
                        code="model_not_found",
                    )
                )
            stream = body.get("stream", False)
            if not isinstance(stream, bool):
                raise _Refused(openai_error("stream must be true or false", status=400, param="stream"))
            options = {k: body[k] for k in ("temperature", "top_p", "stop", "seed") if body.get(k) is not None}
            max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
            if max_tokens is not None:
                options["max_tokens"] = max_tokens
            version, base = resolved
            run = services.run_submit(
                user=request.user,
                version=version,
                base_model=base,
                options=options,
                source=InferenceRun.Source.API,
                composition=composition,
                **self.prompt_fields(body),
            )
        except _Refused as refused:
            return refused.response
        except services.RunRejected as error:
            if error.param == "max_tokens" and "max_completion_tokens" in request.data:
                error.param = "max_completion_tokens"
            return _rejected(error)
        model_id = run.model_name
        links = _run_links(request, run)
        if stream:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            # under ASGI the stream waits on the event loop; under WSGI (runserver, tests' live server) in its thread
            sse = self._asse if isinstance(request._request, ASGIRequest) else self._sse
            response: HttpResponse = StreamingHttpResponse(
                sse(run, model_id, links, include_usage), content_type="text/event-stream"
            )
            response["Cache-Control"] = "no-cache"
            response["X-Accel-Buffering"] = "no"  # nginx would otherwise hold the chunks back
        else:
            response = self._collect(run, model_id, links)
        response[RUN_HEADER] = str(run.public_id)
        return response

    def _collect(self, run: InferenceRun, model_id: str, links: dict[str, str]) -> Response:
        final = None
        for event in streams.run_events(run_id=run.public_id, timeout_s=settings.INFERENCE_WAIT_SECONDS):
            if event.is_final:
                final = event
        if final is None:
            return openai_error(
                f"the run did not finish within {settings.INFERENCE_WAIT_SECONDS} s; it goes on: {links['api_url']}",
                status=504,
                type_="server_error",
                code="timeout",
            )
        run.refresh_from_db()
        if run.status != InferenceRun.Status.SUCCEEDED:
            response = openai_error(run.error, status=502, type_="server_error", code="run_failed")
            response.data["openledger"] = links
            return response
        return Response(
            {
                "id": f"{self.id_prefix}-{run.public_id}",
                "object": self.object_name,
                "created": int(run.created_at.timestamp()),
                "model": model_id,
                "choices": [self.choice(run.answer, run.finish_reason)],
                "usage": _usage(run),
                "system_fingerprint": None,
                "openledger": {**links, "run_hash": run.run_hash},
            }
        )

    def _sse(self, run: InferenceRun, model_id: str, links: dict[str, str], include_usage: bool) -> Iterator[str]:
        """The run's chunks in OpenAI's stream shape, for a WSGI server: waits in its thread."""
        chunks = _SseChunks(self, run, model_id, links, include_usage)
        yield from chunks.head()
        final = None
        for event in streams.run_events(run_id=run.public_id, timeout_s=settings.INFERENCE_WAIT_SECONDS):
            if event.type == streams.TOKEN:
                yield chunks.token(event.text)
            else:
                final = event
        yield from chunks.tail(final)

    async def _asse(
        self, run: InferenceRun, model_id: str, links: dict[str, str], include_usage: bool
    ) -> AsyncIterator[str]:
        """The same chunks for the ASGI server: an open stream waits on the event loop and holds no thread."""
        chunks = _SseChunks(self, run, model_id, links, include_usage)
        for piece in chunks.head():
            yield piece
        final = None
        events = streams.arun_events(run_id=run.public_id, timeout_s=settings.INFERENCE_WAIT_SECONDS)
        async with aclosing(events):
            async for event in events:
                if event.type == streams.TOKEN:
                    yield chunks.token(event.text)
                else:
                    final = event
        for piece in chunks.tail(final):
            yield piece


class _SseChunks:
    """The text of a run's OpenAI stream: the head, a chunk per token, and the tail after its final event (or none)."""

    def __init__(
        self, view: _CompletionBase, run: InferenceRun, model_id: str, links: dict[str, str], include_usage: bool
    ) -> None:
        self.view, self.links, self.include_usage = view, links, include_usage
        self.base = {
            "id": f"{view.id_prefix}-{run.public_id}",
            "object": view.chunk_object,
            "created": int(run.created_at.timestamp()),
            "model": model_id,
            "system_fingerprint": None,
        }

    def chunk(self, choice: dict[str, Any] | None, **extra: Any) -> str:
        return "data: " + json.dumps({**self.base, "choices": [choice] if choice else [], **extra}) + "\n\n"

    def head(self) -> list[str]:
        first = self.view.delta_choice(None, "", first=True)
        return [self.chunk(first, openledger=self.links)] if first is not None else []

    def token(self, text: str) -> str:
        return self.chunk(self.view.delta_choice(None, text), openledger=self.links)

    def tail(self, final: streams.RunEvent | None) -> list[str]:
        if final is None or final.type == streams.ERROR:
            message = final.data.get("message") if final else "the run did not finish in time; it goes on"
            error = {"message": message, "type": "server_error", "param": None, "code": "run_failed"}
            return ["data: " + json.dumps({"error": error, "openledger": self.links}) + "\n\n"]
        last = self.view.delta_choice(final.data.get("finish_reason") or "stop", "")
        pieces = [self.chunk(last, openledger=self.links)]
        if self.include_usage:  # the final event carries the row's token counts
            pieces.append(self.chunk(None, usage=_usage_of(final.data)))
        return [*pieces, "data: [DONE]\n\n"]


def _usage(run: InferenceRun) -> dict[str, int]:
    return _usage_of({"prompt_tokens": run.prompt_tokens, "completion_tokens": run.completion_tokens})


def _usage_of(counts: dict[str, Any]) -> dict[str, int]:
    prompt, completion = int(counts.get("prompt_tokens") or 0), int(counts.get("completion_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _openai_schema(operation_id: str, summary: str) -> Callable[[type[_CompletionBase]], type[_CompletionBase]]:
    """A completion view's schema: a JSON object in and out, as OpenAI documents them (not restated here)."""
    schema = extend_schema(
        operation_id=operation_id, summary=summary, request=OpenApiTypes.OBJECT, responses=OpenApiTypes.OBJECT
    )
    return extend_schema_view(post=schema)


@_openai_schema("v1_chat_completions", "OpenAI-compatible chat completion")
class ChatCompletionsApi(_CompletionBase):
    """OpenAI-compatible chat completions: ``messages`` in, the assistant's message out (or streamed)."""

    id_prefix = "chatcmpl"
    object_name = "chat.completion"
    chunk_object = "chat.completion.chunk"
    prompt_param = "messages"

    def prompt_fields(self, body: dict[str, Any]) -> dict[str, Any]:
        if "messages" not in body:
            raise _Refused(openai_error("messages is required", status=400, param="messages"))
        return {"messages": body["messages"]}

    def choice(self, text: str, finish_reason: str) -> dict[str, Any]:
        return {
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": None,
            "finish_reason": finish_reason,
        }

    def delta_choice(self, finish_reason: str | None, text: str, first: bool = False) -> dict[str, Any] | None:
        delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else ({"content": text} if text else {})
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


@_openai_schema("v1_completions", "OpenAI-compatible text completion")
class CompletionsApi(_CompletionBase):
    """OpenAI-compatible (legacy) completions: a raw ``prompt`` in, its continuation out (or streamed)."""

    id_prefix = "cmpl"
    object_name = "text_completion"
    chunk_object = "text_completion"
    prompt_param = "prompt"

    def prompt_fields(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]  # the client sends one prompt as a one-item list
        if not isinstance(prompt, str):
            raise _Refused(openai_error("prompt is required: one string", status=400, param="prompt"))
        return {"prompt": prompt}

    def choice(self, text: str, finish_reason: str) -> dict[str, Any]:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}

    def delta_choice(self, finish_reason: str | None, text: str, first: bool = False) -> dict[str, Any] | None:
        if first:
            return None
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}


# -- /api/runs/<id>/ ----------------------------------------------------------------------------------------------


@extend_schema_field(OpenApiTypes.OBJECT)
class RunExtraField(serializers.Field):
    """A run extra (``hooks.run_extra_register``) as a read-only field: its data for the run, as the caller sees it;
    the extra's docstring describes it in the API schema."""

    def __init__(self, extra: hooks.RunExtra) -> None:
        self.extra = extra
        super().__init__(source="*", read_only=True, help_text=inspect.getdoc(extra))

    def to_representation(self, run: InferenceRun) -> dict[str, Any]:
        request = self.context.get("request")
        return self.extra(run=run, user=getattr(request, "user", None))


class RunDetailApi(BaseApi):
    """A run: question, answer, options, tokens, latency, model and lineage summary, batch with inclusion proof and
    its anchor's state. Anyone with the run's id may read it (run pages are shareable)."""

    permission_classes = [AllowAny]

    @extend_schema_serializer(component_name="InferenceRun")
    class OutputSerializer(serializers.Serializer):
        id = serializers.UUIDField(source="public_id")
        status = serializers.CharField()
        kind = serializers.CharField()
        source = serializers.CharField()
        model = serializers.CharField(source="model_name")
        prompt = serializers.CharField()
        messages = serializers.JSONField()
        options = serializers.JSONField()
        answer = serializers.CharField()
        finish_reason = serializers.CharField()
        error = serializers.CharField()
        seed = serializers.IntegerField(allow_null=True)
        prompt_tokens = serializers.IntegerField()
        completion_tokens = serializers.IntegerField()
        latency_ms = serializers.IntegerField(allow_null=True)
        first_token_ms = serializers.IntegerField(allow_null=True)
        created_at = serializers.DateTimeField()
        started_at = serializers.DateTimeField(allow_null=True)
        finished_at = serializers.DateTimeField(allow_null=True)
        run_hash = serializers.CharField()
        facts = serializers.CharField()
        document = serializers.SerializerMethodField(help_text="The run facts run_hash hashes, as an object")
        document_hash = serializers.SerializerMethodField(help_text="keccak256 of the facts' bytes: run_hash")
        facts_schema = serializers.SerializerMethodField(help_text="openledger.inference_run.v1 or .v2")
        document_text = serializers.SerializerMethodField(
            help_text="v1 facts only (Python's json.dumps, not JCS): the exact text hashed; null for v2"
        )
        version = serializers.SerializerMethodField()
        composition = serializers.SerializerMethodField(
            help_text="A composite's method, density, seed and components (each version with its weight and exact "
            "share of the total weight); null for one version or the base model"
        )
        base_model = serializers.SerializerMethodField()
        batch = serializers.SerializerMethodField(help_text="The same envelope as proof (its first name)")
        proof = serializers.SerializerMethodField(
            help_text="The run's inclusion proof in its anchored batch (openledger.proof.v1); null until sealed"
        )

        @extend_schema_field(serializers.DictField(allow_null=True))
        def get_document(self, run: InferenceRun) -> dict[str, Any] | None:
            return json.loads(run.facts) if run.facts else None

        @extend_schema_field(serializers.CharField(allow_null=True))
        def get_document_hash(self, run: InferenceRun) -> str | None:
            return run.run_hash or None

        @extend_schema_field(serializers.CharField(allow_null=True))
        def get_facts_schema(self, run: InferenceRun) -> str | None:
            return json.loads(run.facts).get("schema") if run.facts else None

        @extend_schema_field(serializers.CharField(allow_null=True))
        def get_document_text(self, run: InferenceRun) -> str | None:
            # v2 facts are JCS, rebuilt from ``document``; v1 ones are not, so their exact text goes with them
            if run.facts and self.get_facts_schema(run) != services.FACTS_SCHEMA:
                return run.facts
            return None

        def get_version(self, run: InferenceRun) -> dict[str, Any] | None:
            version = run.version
            if version is None:
                return None
            return {
                "id": version.pk,
                "name": version.name,
                "published": version.published,
                "manifest_hash": version.manifest_hash,
                "adapter_sha256": version.adapter_sha256,
                "parents": [
                    {"id": link.parent_id, "relation": link.relation, "weight": link.weight}
                    for link in version.parent_links.all()
                ],
                "snapshots": [
                    {"id": s.pk, "datanet": s.datanet.slug, "number": s.number, "root": s.merkle_root}
                    for s in version.snapshots.select_related("datanet")
                ],
                "anchor": version_anchor_facts(version),
            }

        @extend_schema_field(serializers.DictField(allow_null=True))
        def get_composition(self, run: InferenceRun) -> dict[str, Any] | None:
            if not run.composition:
                return None
            names = dict(
                ModelVersion.objects.filter(pk__in=[c["version"] for c in run.composition["components"]]).values_list(
                    "pk", "name"
                )
            )
            components = [
                {**c, "model": f"mv-{c['version']}", "name": names.get(c["version"], "")}
                for c in run.composition["components"]
            ]
            return {**run.composition, "id": run.model_name, "components": components}

        def get_base_model(self, run: InferenceRun) -> dict[str, Any]:
            base = run.base_model
            return {"id": base.pk, "name": base.name, "weights_sha256": base.weights_sha256}

        @extend_schema_field(serializers.DictField(allow_null=True))
        def get_batch(self, run: InferenceRun) -> dict[str, Any] | None:
            return self.get_proof(run)

        @extend_schema_field(serializers.DictField(allow_null=True))
        def get_proof(self, run: InferenceRun) -> dict[str, Any] | None:
            proofs = self.context.setdefault("proofs", {})  # built once for both names
            if run.pk not in proofs:
                proofs[run.pk] = selectors.run_proof(run)
            return proofs[run.pk]

        def get_fields(self) -> dict[str, serializers.Field]:
            # the apps above add theirs, each under its own name (an answer's attribution)
            fields = super().get_fields()
            for name, extra in hooks.run_extras().items():
                fields[name] = RunExtraField(extra)
            return fields

    @extend_schema(operation_id="runs_retrieve", responses=OutputSerializer)
    def get(self, request: Request, public_id: str) -> Response:
        run = selectors.run_for_viewer(public_id=public_id, user=request.user)
        if run is None:
            raise exceptions.NotFound("no such run")
        return Response(
            self.OutputSerializer(run, context={"request": request}).data, headers={RUN_HEADER: str(run.public_id)}
        )
