"""The inference pages: ask a model version, watch the answer stream in, the run page with its ancestry, history.

Who sees what: asking, history and the answer stream need a signed-in user, and the stream is the owner's alone; a
run page is for anyone holding its link (``selectors.run_for_viewer``: the unguessable public id is the capability,
so an answer can be shared); the verify pages make an ``eth_call`` each, so they want a signed-in user, like the
Datanet proof checks. Reads go through ``selectors`` and ``ancestry``, writes through ``services.run_submit``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_POST
from django_htmx.middleware import HtmxDetails

from common.ratelimit import chain_read_limited
from datanets.models import Snapshot
from datanets.selectors import datanets_visible_to
from datanets.services import snapshot_anchor_facts
from ledger.chain import ChainError
from modelfactory.models import BaseModel, ModelVersion
from modelfactory.selectors import version_anchor_facts

from . import ancestry, composites, hooks, selectors, services, streams
from .forms import CHAT_ROLES, AskForm
from .models import InferenceRun

HISTORY_PAGE_SIZE = 20
VERSION_RESULTS = 12
# The stream asks for events in slices this long and sends a comment line between them, so that proxies and the
# browser see a live connection while the run waits in the queue.
STREAM_SLICE_SECONDS = 15.0


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def _sections(request: HttpRequest, run: InferenceRun) -> list[str]:
    """The run page's sections that the apps above add (``hooks.run_sections``), as HTML."""
    return [section(request, run) for section in hooks.run_sections()]


def _run_for(request: HttpRequest, public_id: uuid.UUID) -> InferenceRun:
    run = selectors.run_for_viewer(public_id=public_id, user=request.user)
    if run is None:
        raise Http404("no such run")
    return run


def _sealed_run_proof(request: HttpRequest, public_id: uuid.UUID) -> tuple[InferenceRun, dict[str, Any]]:
    """The run, if the user may see it, and its inclusion proof; 404 while the run is in no sealed batch."""
    run = _run_for(request, public_id)
    proof = selectors.run_proof(run)
    if proof is None:
        raise Http404("this run is not in a sealed batch yet")
    return run, proof


def _own_run(request: HttpRequest, public_id: uuid.UUID) -> InferenceRun:
    return get_object_or_404(selectors.runs_of(user=request.user), public_id=public_id)


def _ancestry(run: InferenceRun, viewer: Any) -> ancestry.Ancestry:
    components = ancestry.components_of(run.composition) if run.composition else ()
    return ancestry.ancestry_of(
        version=run.version, base_model=run.base_model, viewer=viewer, batch=run.batch, components=components
    )


def _version_filters(request: HttpRequest) -> dict[str, str]:
    return {key: request.GET.get(key, "").strip()[:200] for key in ("q", "datanet", "base")}


def _version_results(request: HttpRequest, filters: dict[str, str]) -> list[ModelVersion]:
    datanet = filters["datanet"] if filters["datanet"].isdigit() else None
    base = filters["base"] if filters["base"].isdigit() else None
    versions = selectors.versions_askable_by(user=request.user, q=filters["q"], datanet=datanet, base=base)
    return list(versions.select_related("base_model", "owner").prefetch_related("snapshots__datanet")[:VERSION_RESULTS])


def _ask_context(request: HttpRequest, form: AskForm, **extra: Any) -> dict[str, Any]:
    filters = _version_filters(request)
    versions = selectors.versions_askable_by(user=request.user)
    datanets = datanets_visible_to(user=request.user).filter(snapshots__model_versions__in=versions).distinct()
    chosen = form["version"].value()
    picked = None
    if chosen and str(chosen).isdigit():
        picked = versions.select_related("base_model").filter(pk=int(chosen)).first()
    return {
        "form": form,
        "filters": filters,
        "results": _version_results(request, filters),
        "picked": picked,
        "picked_refusal": _deployment_refusal(request.user, picked),
        "datanets": datanets.order_by("name"),
        "bases": BaseModel.objects.filter(versions__in=versions).distinct().order_by("name"),
        "chat_roles": CHAT_ROLES,
        **extra,
    }


def _deployment_refusal(user: Any, version: ModelVersion | None) -> str:
    """Why ``version`` would not be served to ``user`` now (governance's deployment gate), or ""."""
    if version is None:
        return ""
    try:
        services.version_deployment_check(user=user, version=version)
    except services.RunRejected as e:
        return e.message[:1].upper() + e.message[1:] + "."
    return ""


@require_GET
@login_required
def ask(request: HtmxHttpRequest) -> HttpResponse:
    """The ask page; with htmx, only the version search results (the search box asks this same URL)."""
    if request.htmx and request.htmx.target == "version-results":
        filters = _version_filters(request)
        context = {"results": _version_results(request, filters), "filters": filters}
        return render(request, "inference/ask.html#versions", context)
    initial: dict[str, Any] = {}
    if (version := request.GET.get("version", "")).isdigit():
        initial["version"] = int(version)
    if reply_to := request.GET.get("reply", ""):
        # "Reply" on a chat answer: the same chat with the answer as the assistant's turn, ready for the next question
        try:
            run = selectors.runs_of(user=request.user).filter(public_id=uuid.UUID(reply_to)).first()
        except ValueError:
            run = None
        can_reply = run is not None and run.version_id is not None and run.kind == InferenceRun.Kind.CHAT
        if can_reply and run.status == InferenceRun.Status.SUCCEEDED:
            initial.update(
                version=run.version_id,
                messages=[*run.messages, {"role": "assistant", "content": run.answer}, {"role": "user", "content": ""}],
                temperature=run.options.get("temperature", 0),
                top_p=run.options.get("top_p", 1),
                max_new_tokens=run.options.get("max_tokens", 128),
                stop="\n".join(run.options.get("stop") or []),
                seed=run.options.get("seed"),
            )
    form = AskForm(initial=initial, versions=selectors.versions_askable_by(user=request.user))
    return render(request, "inference/ask.html", _ask_context(request, form))


_FORM_FIELDS = {"prompt": "prompt", "max_tokens": "max_new_tokens", "temperature": "temperature", "top_p": "top_p",
                "stop": "stop", "seed": "seed"}  # fmt: skip


def _apply_refusal(form: AskForm, error: services.RunRejected) -> None:
    """Show the service's refusal next to the field it is about (the whole form when it is about the chat)."""
    field = _FORM_FIELDS.get(error.param or "")
    if form.cleaned_data.get("compose") and (error.param or "").startswith(("model", "composition")):
        field = "compose"  # a refused composite: said beside what was typed
    form.add_error(field, error.message[:1].upper() + error.message[1:] + ".")


def _refused(request: HtmxHttpRequest, form: AskForm, status: int, **headers: str) -> HttpResponse:
    if request.htmx:
        response = render(request, "inference/ask.html#ask_form", _ask_context(request, form), status=status)
        # the answer area keeps what it showed; the form, with its errors, replaces itself
        response["HX-Retarget"] = "#ask-form"
        response["HX-Reswap"] = "outerHTML"
    else:
        response = render(request, "inference/ask.html", _ask_context(request, form), status=status)
    for name, value in headers.items():
        response[name] = value
    return response


def _composition(request: HttpRequest, form: AskForm) -> composites.CleanComposition | None:
    """The checked composite the form asks for (its ``compose`` field), or None; RunRejected when it is refused."""
    compose = form.cleaned_data.get("compose")
    if not compose:
        return None
    spec = composites.composition_spec(model=compose)
    return composites.composition_clean(user=request.user, spec=spec)


@require_POST
@login_required
def submit(request: HtmxHttpRequest) -> HttpResponse:
    """Queue the question (and the base model's answer to it, when asked to compare); the answers stream after."""
    form = AskForm(request.POST, versions=selectors.versions_askable_by(user=request.user))
    if not form.is_valid():
        return _refused(request, form, 400)
    version = form.cleaned_data["version"]
    try:
        # both runs or neither: a comparison refused half-way would leave a lone answer the user did not ask for
        with transaction.atomic():
            composition = _composition(request, form)
            if composition is not None:
                version = None
            run = services.run_submit(
                user=request.user, version=version, composition=composition, source="web", **form.submission()
            )
            base_run = None
            if form.cleaned_data["compare"]:
                base_run = services.run_submit(
                    user=request.user, version=None, base_model=run.base_model, source="web", **form.submission()
                )
    except services.RunRejected as e:
        _apply_refusal(form, e)
        headers = {"Retry-After": str(e.retry_after)} if isinstance(e, services.RateLimited) else {}
        return _refused(request, form, e.status, **headers)
    if not request.htmx:
        return redirect("inference:run_detail", public_id=run.public_id)
    runs = [r for r in (run, base_run) if r is not None]
    context = {"runs": runs, "ancestry": _ancestry(run, request.user), "run": run, "sections": _sections(request, run)}
    response = render(request, "inference/ask.html#answer", context)
    # the form too, out of band: errors of an earlier refusal go, what was typed stays for the next question
    form_html = render_to_string("inference/ask.html#ask_form", {**_ask_context(request, form), "oob": True}, request)
    response.content += form_html.encode()
    return response


def _sse(event: streams.RunEvent) -> str:
    payload = {"text": event.text} if event.type == streams.TOKEN else event.data
    return f"id: {event.id}\nevent: {event.type}\ndata: {json.dumps(payload)}\n\n"


def _relay(run: InferenceRun, last_id: str) -> Iterator[str]:
    """The run's events as server-sent events, until its final event or INFERENCE_WAIT_SECONDS have passed (then
    the browser's EventSource reconnects with Last-Event-ID and carries on where it stopped). For a WSGI server
    (runserver, the tests' live server): waits in its thread."""
    yield "retry: 2000\n\n"
    deadline = time.monotonic() + settings.INFERENCE_WAIT_SECONDS
    while (remaining := deadline - time.monotonic()) > 0:
        for event in streams.run_events(
            run_id=run.public_id, last_id=last_id, timeout_s=min(STREAM_SLICE_SECONDS, remaining)
        ):
            last_id = event.id
            yield _sse(event)
            if event.is_final:
                return
        yield ": waiting\n\n"


async def _arelay(run: InferenceRun, last_id: str) -> AsyncIterator[str]:
    """``_relay`` for the ASGI server: an open stream waits on the event loop and holds no thread, so that many
    streams never starve the pages."""
    yield "retry: 2000\n\n"
    deadline = time.monotonic() + settings.INFERENCE_WAIT_SECONDS
    while (remaining := deadline - time.monotonic()) > 0:
        events = streams.arun_events(
            run_id=run.public_id, last_id=last_id, timeout_s=min(STREAM_SLICE_SECONDS, remaining)
        )
        async with aclosing(events):
            async for event in events:
                last_id = event.id
                yield _sse(event)
                if event.is_final:
                    return
        yield ": waiting\n\n"


@require_GET
@login_required
def stream(request: HttpRequest, public_id: uuid.UUID) -> StreamingHttpResponse:
    """Server-sent events of the owner's run: ``token`` events ({"text"}), then one ``done`` or ``error``."""
    run = _own_run(request, public_id)
    last_id = request.headers.get("Last-Event-ID", "0").strip()[:64] or "0"
    relay = _arelay if isinstance(request, ASGIRequest) else _relay
    response = StreamingHttpResponse(relay(run, last_id), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx and friends would otherwise hold the tokens back
    return response


@require_GET
def run_detail(request: HtmxHttpRequest, public_id: uuid.UUID) -> HttpResponse:
    """The shareable page of one answer; with htmx, only the answer card (refreshed when a stream ends)."""
    run = _run_for(request, public_id)
    is_owner = request.user.is_authenticated and run.user_id == request.user.pk
    if request.htmx:
        response = render(request, "inference/_run_card.html", {"run": run, "is_owner": is_owner, "poll": True})
        if run.is_finished:
            response.status_code = 286  # htmx stops polling
        return response
    context = {
        "run": run,
        "is_owner": is_owner,
        "ancestry": _ancestry(run, request.user),
        "proof": selectors.run_proof(run),
        "sections": _sections(request, run),
        "can_reply": is_owner
        and run.version_id is not None
        and run.kind == InferenceRun.Kind.CHAT
        and run.status == InferenceRun.Status.SUCCEEDED,
    }
    if context["proof"] is not None:
        context["proof_json"] = json.dumps(context["proof"], indent=2, cls=DjangoJSONEncoder)
    return render(request, "inference/run_detail.html", context)


@require_GET
def run_proof(request: HttpRequest, public_id: uuid.UUID) -> HttpResponse:
    """The run's inclusion proof in its batch (OpenZeppelin StandardMerkleTree terms) as a JSON download."""
    run, proof = _sealed_run_proof(request, public_id)
    response = HttpResponse(json.dumps(proof, indent=2, cls=DjangoJSONEncoder), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="run-{run.public_id}-proof.json"'
    return response


@require_GET
@login_required
def engines(request: HttpRequest) -> HttpResponse:
    """The engine status page: what each inference worker last published of its engines (``Engine.state()``), with
    the counters of the adapter tiers (hot in memory, warm on local disk, cold in media storage). Staff only: it names
    workers, folders and adapter digests."""
    if not request.user.is_staff:
        message = "Only staff may see the inference engines' state."
        return render(request, "inference/engines.html", {"refused": message}, status=403)
    return render(request, "inference/engines.html", {"engines": selectors.engine_states()})


@require_GET
@login_required
def history(request: HttpRequest) -> HttpResponse:
    page = Paginator(selectors.runs_of(user=request.user), HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "inference/history.html", {"page": page})


def _verify_page(request: HttpRequest, subject: dict[str, Any], check: Any) -> HttpResponse:
    context: dict[str, Any] = {"subject": subject, "check": None, "error": ""}
    status = 200
    if limited := chain_read_limited(request):
        context["error"] = limited.message
        response = render(request, "inference/verify.html", context, status=429)
        response["Retry-After"] = str(limited.retry_after)
        return response
    try:
        context["check"] = check()
    except ChainError as e:
        context["error"], status = f"The chain could not be asked: {e}", 503
    return render(request, "inference/verify.html", context, status=status)


@require_GET
def verify_version(request: HttpRequest, version_id: int) -> HttpResponse:
    """Check on chain that a model version's lineage manifest, re-hashed here, is anchored."""
    version = get_object_or_404(
        ModelVersion.objects.select_related("base_model", "anchor", "anchor__deployment"), pk=version_id
    )
    if not ancestry.lineage_visible_to(user=request.user, version=version):
        raise Http404("no such model version")
    subject = {"kind": "model_version", "title": f"Lineage manifest of {version.name}", "version": version,
               "anchor": version.anchor, "root": version.manifest_hash,
               "facts": version_anchor_facts(version)}  # fmt: skip
    return _verify_page(request, subject, lambda: ancestry.manifest_check(version=version))


@require_GET
def verify_snapshot(request: HttpRequest, snapshot_id: int) -> HttpResponse:
    """Check on chain that a snapshot's Merkle root is anchored (its records' proofs are on the Datanet pages)."""
    snapshot = get_object_or_404(
        Snapshot.objects.select_related("datanet", "anchor", "anchor__deployment"),
        pk=snapshot_id,
        datanet__in=datanets_visible_to(user=request.user),
    )
    subject = {"kind": "snapshot", "title": f"Snapshot #{snapshot.number} of {snapshot.datanet.name}",
               "snapshot": snapshot, "anchor": snapshot.anchor, "root": snapshot.merkle_root,
               "facts": snapshot_anchor_facts(snapshot)}  # fmt: skip
    return _verify_page(request, subject, lambda: ancestry.snapshot_check(snapshot=snapshot))


@require_GET
def verify_run(request: HttpRequest, public_id: uuid.UUID) -> HttpResponse:
    """Check on chain that the run's batch root is anchored and that the run's inclusion proof leads to it."""
    run, proof = _sealed_run_proof(request, public_id)
    subject = {"kind": "inference_batch", "title": f"Answer {run.public_id} in batch #{run.batch_id}", "run": run,
               "anchor": run.batch.anchor, "root": proof["root"], "proof": proof, "facts": proof["anchor"]}  # fmt: skip
    return _verify_page(request, subject, lambda: ancestry.run_inclusion_check(proof=proof))
