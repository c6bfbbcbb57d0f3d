"""The Datanet pages: browse, create and edit, contribute, review, snapshots, proofs and leaderboards.

Reads go through ``selectors``, writes through ``services``; a view only fetches what the user may see (a private
Datanet is a 404 for anyone else, so its existence does not leak), calls one service and renders. htmx requests get
the template's fragment, plain requests the whole page, so every page works without JavaScript.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.core.paginator import Page, Paginator
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Case, F, IntegerField, Q, Value, When, Window
from django.db.models.functions import RowNumber
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.middleware import HtmxDetails

from common.ratelimit import chain_read_limited
from common.redirects import safe_next
from ledger.chain import ChainError

from . import exports, revocation, selectors, services, statistics, viewer
from .forms import (
    BAD_ROWS_HELP,
    MAX_FILES_PER_UPLOAD,
    MB,
    UPLOAD_EXTENSIONS,
    BrowseForm,
    ContributeForm,
    DatanetForm,
    DecisionForm,
    PersonForm,
    ReasonForm,
    RecordBulkForm,
    RecordFilterForm,
    RevokeForm,
    TakedownForm,
)
from .licences import LICENCES
from .markdown import render_markdown
from .models import Contribution, ContributionDecision, Datanet, Record, Revocation, Snapshot, SnapshotRecord

PAGE_SIZE = 12
QUEUE_PAGE_SIZE = 20
QUEUES_SHOWN = 12
SAMPLE_RECORDS = 5
DETAIL_SAMPLE_RECORDS = 20
PROOF_ROWS = 20
# room for the form's own fields and the multipart headers beside the files themselves
FORM_OVERHEAD_BYTES = 64 * 1024
FINAL_ANCHOR_STATES = ("confirmed", "failed")


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def _page(request: HttpRequest, items: Any, size: int) -> Page:
    return Paginator(items, size).get_page(request.GET.get("page"))


def _template(request: HtmxHttpRequest, name: str, fragment: str) -> str:
    return f"datanets/{name}.html" + (f"#{fragment}" if request.htmx else "")


def _refused(request: HtmxHttpRequest, message: str, status: int) -> HttpResponse:
    return render(request, _template(request, "refused", "message"), {"message": message}, status=status)


def _message(error: ValidationError) -> str:
    return "; ".join(error.messages)


def _refused_for(request: HtmxHttpRequest, error: PermissionDenied | ValidationError, invalid: int) -> HttpResponse:
    """A service's refusal as a page: 403 with its reason when the user may not act, ``invalid`` (400, 409) with
    its messages when the request cannot be done."""
    if isinstance(error, PermissionDenied):
        return _refused(request, str(error), 403)
    return _refused(request, _message(error), invalid)


def _datanet_for(request: HttpRequest, slug: str) -> Datanet:
    return get_object_or_404(selectors.datanets_visible_to(user=request.user), slug=slug)


DatanetPage = Callable[[HtmxHttpRequest, Datanet], HttpResponse]


def _datanet_page(can: Callable[..., bool], refusal: str) -> Callable[[DatanetPage], Callable[..., HttpResponse]]:
    """A GET/POST page of one Datanet (``slug``) for a signed-in user: a 404 if they may not see it, ``refusal``
    (formatted with the Datanet's ``name``; 403) if ``can(user=, datanet=)`` says they may not act on it, else the
    page, called with the Datanet."""

    def decorate(page: DatanetPage) -> Callable[..., HttpResponse]:
        @require_http_methods(["GET", "POST"])
        @login_required
        @functools.wraps(page)
        def view(request: HtmxHttpRequest, slug: str) -> HttpResponse:
            datanet = _datanet_for(request, slug)
            if not can(user=request.user, datanet=datanet):
                return _refused(request, refusal.format(name=datanet.name), 403)
            return page(request, datanet)

        return view

    return decorate


def _contribution_for(request: HttpRequest, contribution_id: int) -> Contribution:
    """The contribution, for its contributor or whoever curates its Datanet; a 404 for anyone else."""
    contribution = get_object_or_404(
        Contribution.objects.select_related("datanet", "contributor", "reviewer"), pk=contribution_id
    )
    if contribution.contributor_id != request.user.pk and not selectors.user_can_curate(
        user=request.user, datanet=contribution.datanet
    ):
        raise Http404("no such contribution")
    return contribution


def _snapshot_for(request: HttpRequest, slug: str, number: int) -> Snapshot:
    datanet = _datanet_for(request, slug)
    return get_object_or_404(
        Snapshot.objects.select_related("datanet", "anchor", "anchor__deployment", "created_by"),
        datanet=datanet,
        number=number,
    )


def _segments(canonical: str, flags: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The canonical text cut into (text, flag kind or "") pieces, so a template can mark flagged spans while
    escaping everything. Overlapping spans are merged into the first one; flags without a span are left out."""
    pieces: list[tuple[str, str]] = []
    at = 0
    spans = [flag for flag in flags or [] if "start" in flag]  # whole-record flags (duplicates) mark no span
    for flag in sorted(spans, key=lambda f: (f["start"], f["end"])):
        start, end = max(flag["start"], at), min(flag["end"], len(canonical))
        if start >= end:
            continue
        pieces.append((canonical[at:start], ""))
        pieces.append((canonical[start:end], flag["kind"]))
        at = end
    pieces.append((canonical[at:], ""))
    return [p for p in pieces if p[0]]


def _with_segments(records: list[Record]) -> list[Record]:
    for record in records:
        record.segments = _segments(record.canonical, record.flags)  # type: ignore[attr-defined]
    return records


def _samples(contribution_ids: list[int], per: int) -> dict[int, list[Record]]:
    """Up to ``per`` records of each contribution, flagged ones first: one query however many contributions."""
    flagged_first = Case(When(flags=[], then=Value(1)), default=Value(0), output_field=IntegerField())
    rows = (
        Record.objects.filter(contribution_id__in=contribution_ids)
        .select_related("revoked")
        .annotate(
            rank=Window(RowNumber(), partition_by=[F("contribution_id")], order_by=[flagged_first, F("position")])
        )
        .filter(rank__lte=per)
        .order_by("contribution_id", "rank")
    )
    samples: dict[int, list[Record]] = {i: [] for i in contribution_ids}
    for record in _with_segments(list(rows)):
        samples[record.contribution_id].append(record)
    return samples


_EXAMPLE_KEYS = ("record_id", "position", "other_record_id", "other_contribution_id")


def _record_href(slug: str, record_id: int) -> str:
    """The record's own page in the record viewer (its stable address), scrolled to the record."""
    return reverse("datanets:record", args=[slug, record_id]) + f"#record-{record_id}"


def _checks(contribution: Contribution, *, user: Any = None, can_curate: bool = False) -> list[dict[str, Any]]:
    """Each check's evidence split into its status, its numbers and its examples, labelled for display.

    With ``user``, every example's records are links (``{"id", "href"}``) to a page that shows them: this
    contribution's own records while it has them, another contribution's when ``user`` may see that one (a curator
    of the Datanet, or its contributor), in one query for all the examples; a record since withdrawn is named
    without a link."""
    evidence_items = [(n, e) for n, e in (contribution.checks or {}).items() if isinstance(e, dict)]
    others = {
        example["other_record_id"]
        for _, evidence in evidence_items
        for example in evidence.get("examples", [])
        if isinstance(example, dict) and isinstance(example.get("other_record_id"), int)
    }
    where: dict[int, tuple[int, int]] = {}
    if user is not None and others:
        where = {
            record_id: (contribution_id, contributor_id)
            for record_id, contribution_id, contributor_id in Record.objects.filter(pk__in=others).values_list(
                "pk", "contribution_id", "contribution__contributor_id"
            )
        }
    own_records = contribution.status != Contribution.Status.WITHDRAWN
    slug = contribution.datanet.slug

    def link(record_id: Any, *, own: bool) -> dict[str, Any] | None:
        if not isinstance(record_id, int):
            return None
        if user is None:
            return {"id": record_id, "href": None}
        if own:
            return {"id": record_id, "href": _record_href(slug, record_id) if own_records else None}
        found = where.get(record_id)
        visible = found is not None and (can_curate or found[1] == getattr(user, "pk", None))
        return {"id": record_id, "href": _record_href(slug, record_id) if visible else None}

    shown = []
    for name, evidence in evidence_items:
        examples = [
            {
                "record": link(example.get("record_id"), own=True),
                "other": link(example.get("other_record_id"), own=False),
                "fields": _labelled(example, skip=_EXAMPLE_KEYS),
            }
            for example in evidence.get("examples", [])
            if isinstance(example, dict)
        ]
        shown.append(
            {
                "name": name.replace("_", " "),
                "status": evidence.get("status", ""),
                "numbers": _labelled(evidence, skip=("status", "examples", "method")),
                "method": evidence.get("method", ""),
                "examples": examples,
            }
        )
    return shown


def _labelled(values: dict[str, Any], skip: tuple[str, ...]) -> list[tuple[str, Any]]:
    """(label, value) pairs; a nested count table (``{"email": 1, "phone": 0}``) becomes its non-zero entries."""
    pairs: list[tuple[str, Any]] = []
    for key, value in values.items():
        if key in skip:
            continue
        if isinstance(value, dict):
            pairs.extend((str(k).replace("_", " "), v) for k, v in value.items() if v)
        else:
            pairs.append((key.replace("_", " "), value))
    return pairs


# Browse


@require_GET
def datanet_list(request: HtmxHttpRequest) -> HttpResponse:
    form = BrowseForm(request.GET)
    form.is_valid()  # every field is optional: what doesn't clean is simply not applied
    datanets = selectors.datanet_list(user=request.user, **form.selector_filters())
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "form": form,
        "page": _page(request, datanets, PAGE_SIZE),
        "query": query.urlencode(),
    }
    return render(request, _template(request, "list", "results"), context)


@require_GET
def datanet_detail(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    datanet = _datanet_for(request, slug)
    per_day = selectors.contributions_per_day(datanet=datanet)
    context = {
        "datanet": datanet,
        "stats": selectors.datanet_stats(datanet=datanet),
        # render_markdown escapes raw HTML and sanitises its output with nh3: the template may print it as is
        "description_html": render_markdown(datanet.description),
        "chart": {"labels": [day.isoformat() for day, _ in per_day], "counts": [n for _, n in per_day]},
        "snapshots": list(selectors.snapshots_of(datanet=datanet)[:10]),
        "leaders": selectors.leaderboard(datanet=datanet, limit=10),
        "can_curate": selectors.user_can_curate(user=request.user, datanet=datanet),
        "can_manage": selectors.user_can_manage(user=request.user, datanet=datanet),
        "can_contribute": selectors.user_can_contribute(user=request.user, datanet=datanet),
        "licence": LICENCES.get(datanet.licence),
        "models": selectors.models_trained_on(datanet=datanet),
    }
    return render(request, "datanets/detail.html", context)


# Create and edit


def _apply_errors(form: DatanetForm, error: ValidationError) -> None:
    if not hasattr(error, "error_dict"):
        form.add_error(None, error)
        return
    for field, errors in error.error_dict.items():
        name = "daily_quota_mb" if field == "daily_quota_bytes" else field
        form.add_error(name if name in form.fields else None, errors)


@require_http_methods(["GET", "POST"])
@login_required
def datanet_create(request: HtmxHttpRequest) -> HttpResponse:
    form = DatanetForm(request.POST or None)
    if form.is_bound and form.is_valid():
        try:
            datanet = services.datanet_create(owner=request.user, **form.service_fields())
        except ValidationError as e:
            _apply_errors(form, e)
        else:
            messages.success(request, f"{datanet.name} is created. Add a first contribution, or invite curators.")
            return redirect("datanets:detail", slug=datanet.slug)
    return render(request, "datanets/form.html", {"form": form}, status=400 if form.errors else 200)


@_datanet_page(selectors.user_can_manage, "Only the owner of {name} may change its settings.")
def datanet_edit(request: HtmxHttpRequest, datanet: Datanet) -> HttpResponse:
    has_records = datanet.contributions.exists()
    form = DatanetForm(request.POST or None, datanet=datanet, has_records=has_records)
    if form.is_bound and form.is_valid():
        try:
            services.datanet_update(datanet=datanet, user=request.user, **form.service_fields())
        except ValidationError as e:
            _apply_errors(form, e)
        else:
            messages.success(request, "Settings saved.")
            return redirect("datanets:detail", slug=datanet.slug)
    context = {"form": form, "datanet": datanet}
    return render(request, "datanets/form.html", context, status=400 if form.errors else 200)


def _people_context(datanet: Datanet, **extra: Any) -> dict[str, Any]:
    return {
        "datanet": datanet,
        "curators": list(datanet.curators.order_by("username")),
        "members": list(datanet.members.order_by("username")),
        **extra,
    }


@_datanet_page(selectors.user_can_curate, "Only the owner and curators of {name} manage its people.")
def datanet_people(request: HtmxHttpRequest, datanet: Datanet) -> HttpResponse:
    form = PersonForm(request.POST or None)
    if not form.is_bound:
        return render(request, "datanets/people.html", _people_context(datanet, form=form))
    try:
        _change_person(datanet, request.user, form)
    except PermissionDenied as e:
        return _refused(request, str(e), 403)
    except ValidationError as e:
        context = _people_context(datanet, form=form, error=_message(e))
        return render(request, "datanets/people.html", context, status=400)
    return redirect("datanets:people", slug=datanet.slug)


def _change_person(datanet: Datanet, user: Any, form: PersonForm) -> None:
    if not form.is_valid():
        raise ValidationError("choose a role and an action, and give a username")
    person = get_user_model().objects.filter(username=form.cleaned_data["username"]).first()
    if person is None:
        raise ValidationError(f"there is no user called {form.cleaned_data['username']!r}")
    change = {
        ("curator", "add"): services.datanet_add_curator,
        ("curator", "remove"): services.datanet_remove_curator,
        ("member", "add"): services.datanet_add_member,
        ("member", "remove"): services.datanet_remove_member,
    }[form.cleaned_data["role"], form.cleaned_data["op"]]
    change(datanet=datanet, user=user, **{form.cleaned_data["role"]: person})


# Contribute


class _FileSizeLimit(FileUploadHandler):
    """Stops reading the body as soon as one file passes UPLOAD_MAX_BYTES: an oversized file is refused before it
    is read in full, even when the client sent no size for it (browsers never do for multipart parts)."""

    def __init__(self, request: HttpRequest) -> None:
        super().__init__(request)
        self.received = 0
        self.too_large = ""

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > settings.UPLOAD_MAX_BYTES:
            self.too_large = self.file_name or "a file"
            raise StopUpload(connection_reset=True)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler stores the file


def _contribute_context(datanet: Datanet, form: ContributeForm, **extra: Any) -> dict[str, Any]:
    return {
        "datanet": datanet,
        "form": form,
        "bad_rows_help": BAD_ROWS_HELP,
        "max_mb": settings.UPLOAD_MAX_BYTES / MB,
        "max_bytes": settings.UPLOAD_MAX_BYTES,
        "max_files": MAX_FILES_PER_UPLOAD,
        **extra,
    }


@csrf_exempt  # the CSRF check reads the whole body: _contribute_post runs it once the size limits are in place
@_datanet_page(selectors.user_can_contribute, "Only approved members may contribute to {name}.")
def contribute(request: HtmxHttpRequest, datanet: Datanet) -> HttpResponse:
    if request.method == "GET":
        context = _contribute_context(datanet, ContributeForm(datanet=datanet))
        return render(request, "datanets/contribute.html", context)
    length = request.META.get("CONTENT_LENGTH") or ""
    declared = int(length) if length.isdigit() else 0
    if declared > settings.UPLOAD_MAX_BYTES * MAX_FILES_PER_UPLOAD + FORM_OVERHEAD_BYTES:
        message = (
            f"This upload is {declared / MB:.1f} MB: at most {MAX_FILES_PER_UPLOAD} files of "
            f"{settings.UPLOAD_MAX_BYTES / MB:g} MB each are taken at once. Nothing was stored."
        )
        return _refused(request, message, 413)
    limit = _FileSizeLimit(request)
    request.upload_handlers.insert(0, limit)
    return _contribute_post(request, datanet, limit)


@csrf_protect
def _contribute_post(request: HtmxHttpRequest, datanet: Datanet, limit: _FileSizeLimit) -> HttpResponse:
    form = ContributeForm(request.POST, request.FILES, datanet=datanet)
    if limit.too_large:
        message = f"{limit.too_large} is over the {settings.UPLOAD_MAX_BYTES / MB:g} MB limit. Nothing was stored."
        return _refused(request, message, 413)
    if not form.is_valid():
        context = _contribute_context(datanet, form)
        return render(request, _template(request, "contribute", "result"), context, status=400)
    options = {"licence": form.cleaned_data["licence"], "bad_rows": form.cleaned_data["bad_rows"]}
    results = [_submit_one(datanet, request.user, upload.name, options, upload=upload) for upload in form.uploads]
    if form.cleaned_data["text"].strip():
        results.append(_submit_one(datanet, request.user, "pasted records", options, text=form.cleaned_data["text"]))
    refused = [r for r in results if r["status"] != 200]
    context = _contribute_context(datanet, ContributeForm(datanet=datanet), results=results, refused=refused)
    status = refused[0]["status"] if refused else 200
    return render(request, _template(request, "contribute", "result"), context, status=status)


def _submit_one(datanet: Datanet, user: Any, name: str, options: dict[str, str], **source: Any) -> dict[str, Any]:
    """One file (or the pasted text) as one contribution; a refusal is returned, not raised, so the other files
    still go through."""
    if "upload" in source and not name.lower().endswith(UPLOAD_EXTENSIONS):
        message = f"only {', '.join(UPLOAD_EXTENSIONS)} files are taken (or a .zip of those)"
        return {"name": name, "status": 400, "message": message, "row_errors": []}
    try:
        if "upload" in source:
            contribution = services.contribution_submit(
                datanet=datanet, contributor=user, upload=source["upload"], **options
            )
        else:
            contribution = services.contribution_submit_pasted(
                datanet=datanet, contributor=user, text=source["text"], **options
            )
    except PermissionDenied as e:
        return {"name": name, "status": 403, "message": str(e), "row_errors": []}
    except ValidationError as e:
        status = 413 if getattr(e, "code", None) == "too_large" else 400
        return {"name": name, "status": status, "message": _message(e), "row_errors": getattr(e, "row_errors", [])}
    return {"name": name, "status": 200, "contribution": contribution, "row_errors": contribution.parse_errors}


# Contributions


@require_GET
@login_required
def contribution_detail(request: HtmxHttpRequest, contribution_id: int) -> HttpResponse:
    contribution = _contribution_for(request, contribution_id)
    checks_done = contribution.check_status in ("done", "failed") or contribution.is_frozen
    can_curate = selectors.user_can_curate(user=request.user, datanet=contribution.datanet)
    checks = _checks(contribution, user=request.user, can_curate=can_curate)
    wanted = request.GET.get("record", "")
    samples = _detail_samples(contribution, wanted=int(wanted) if wanted.isdecimal() else None)
    if request.htmx and request.GET.get("part") == "checks":
        context = {
            "contribution": contribution,
            "checks": checks,
            "checks_done": checks_done,
            "samples": samples,
            "can_curate": can_curate,
        }
        response = render(request, "datanets/contribution.html#checks", context)
        response.status_code = 286 if checks_done else 200  # htmx stops polling once the checks are in
        return response
    snapshots = list(selectors.contribution_snapshots(contribution=contribution))
    for snapshot in snapshots:
        snapshot.proof_leaves = list(  # type: ignore[attr-defined]
            SnapshotRecord.objects.filter(snapshot=snapshot, contribution=contribution)
            .select_related("record")
            .order_by("leaf_index")[:PROOF_ROWS]
        )
    is_contributor = contribution.contributor_id == request.user.pk
    can_take_down = revocation.user_can_take_down(user=request.user, contribution=contribution)
    revocations = list(selectors.revocations_of_contribution(contribution=contribution))
    state = selectors.revocation_states(contribution_ids=[contribution.pk]).get(contribution.pk)
    for revoked in revocations:
        revoked.can_erase = not revoked.erase and (is_contributor or can_take_down)  # type: ignore[attr-defined]
    context = {
        "contribution": contribution,
        "checks": checks,
        "checks_done": checks_done,
        "samples": samples,
        "revocations": revocations,
        "revocation_state": state,
        "can_withdraw_accepted": is_contributor
        and contribution.status == Contribution.Status.ACCEPTED
        and (state is None or state["revoked"] < contribution.record_count),
        "can_take_down": can_take_down and contribution.status == Contribution.Status.ACCEPTED,
        "decisions": list(contribution.decisions.select_related("actor", "record")),
        "receipts": list(selectors.receipts_of_contribution(contribution=contribution)),
        "snapshots": snapshots,
        "can_curate": can_curate,
        "is_contributor": is_contributor,
        "proof_rows": PROOF_ROWS,
    }
    return render(request, "datanets/contribution.html", context)


@require_GET
def receipt_proof(request: HttpRequest, contribution_id: int, receipt_id: int) -> HttpResponse:
    """A receipt's document and proof as a file, for whoever may see the contribution's Datanet (as the API)."""
    visible = selectors.datanets_visible_to(user=request.user).values("pk")
    contribution = get_object_or_404(
        Contribution.objects.filter(Q(datanet__in=visible) | Q(contributor_id=request.user.pk)), pk=contribution_id
    )
    receipt = get_object_or_404(selectors.receipts_of_contribution(contribution=contribution), pk=receipt_id)
    body = {
        "id": receipt.pk,
        "kind": receipt.kind,
        "document": receipt.document if receipt.document_hash else None,
        "document_hash": receipt.document_hash or None,
        "proof": selectors.receipt_proof(receipt),
    }
    response = HttpResponse(json.dumps(body, indent=2, cls=DjangoJSONEncoder), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="receipt-{contribution.pk}-{receipt.pk}.json"'
    return response


def _detail_samples(contribution: Contribution, *, wanted: int | None = None) -> list[Record]:
    """The page's sample of records, with record ``wanted`` first when it is this contribution's and not in the
    sample already (an evidence link's target), marked ``linked``."""
    samples = _samples([contribution.pk], DETAIL_SAMPLE_RECORDS)[contribution.pk]
    if wanted is None:
        return samples
    for record in samples:
        if record.pk == wanted:
            record.linked = True  # type: ignore[attr-defined]
            return samples
    record = Record.objects.filter(contribution=contribution, pk=wanted).first()
    if record is not None:
        record.linked = True  # type: ignore[attr-defined]
        samples.insert(0, *_with_segments([record]))
    return samples


@require_POST
@login_required
def contribution_withdraw(request: HtmxHttpRequest, contribution_id: int) -> HttpResponse:
    contribution = _contribution_for(request, contribution_id)
    try:
        services.contribution_withdraw(contribution=contribution, user=request.user)
    except (PermissionDenied, ValidationError) as e:
        return _refused_for(request, e, 409)
    messages.success(request, f"Contribution #{contribution.pk} is withdrawn.")
    return redirect("datanets:contribution", contribution_id=contribution.pk)


@require_GET
@login_required
def my_contributions(request: HtmxHttpRequest) -> HttpResponse:
    page = _page(request, selectors.contributions_of(user=request.user), QUEUE_PAGE_SIZE)
    ids = [c.pk for c in page]
    in_snapshots: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    for row in (
        SnapshotRecord.objects.filter(contribution_id__in=ids)
        .values("contribution_id", "snapshot__number", "snapshot__datanet__slug")
        .distinct()
        .order_by("contribution_id", "snapshot__number")
    ):
        in_snapshots[row["contribution_id"]].append(row)
    states = selectors.revocation_states(contribution_ids=ids)
    for contribution in page:
        contribution.in_snapshots = in_snapshots[contribution.pk]  # type: ignore[attr-defined]
        contribution.revocation_state = states.get(contribution.pk)  # type: ignore[attr-defined]
    queues = list(selectors.curation_queues(user=request.user)[: QUEUES_SHOWN + 1])
    context = {"page": page, "queues": queues[:QUEUES_SHOWN], "more_queues": len(queues) > QUEUES_SHOWN}
    return render(request, "datanets/mine.html", context)


# Revocation (datanets/revocation.py, docs/revocation.md): a form, then a step that says what will happen, then the
# service. Its refusals come back on the page: a field's problem beside the field (400), a permission as a refusal
# (403), a state that forbids it (revoked already, never accepted) as a refusal naming the state (409).


def _revocation_refused(form: RevokeForm, error: ValidationError) -> str:
    """Put a service's field errors on ``form``; the message of one that is about no field (a state), else ""."""
    if hasattr(error, "error_dict"):
        for field, errors in error.error_dict.items():
            form.add_error(field if field in form.fields else None, errors)
        return ""
    return _message(error)


def _revocation_page(
    request: HtmxHttpRequest, form: RevokeForm, context: dict[str, Any], act: Callable[[dict[str, Any]], str]
) -> HttpResponse:
    """The form (GET, or a POST that does not clean), the confirmation (a clean POST not yet confirmed), or the act
    (a confirmed one): ``act(form.revocation())`` calls the service and returns where to go next."""
    context = {"form": form, "explanation_max": revocation.EXPLANATION_MAX_CHARS, **context}
    if not form.is_bound:
        return render(request, "datanets/revoke.html", context)
    if not form.is_valid():
        return render(request, "datanets/revoke.html", context, status=400)
    if not form.cleaned_data["confirmed"]:
        return render(request, "datanets/revoke.html", {**context, "confirming": True})
    try:
        return redirect(act(form.revocation()))
    except PermissionDenied as e:
        return _refused(request, str(e), 403)
    except ValidationError as e:
        conflict = _revocation_refused(form, e)
        if conflict:
            return _refused(request, conflict, 409)
        return render(request, "datanets/revoke.html", context, status=400)


@require_http_methods(["GET", "POST"])
@login_required
def contribution_revoke(request: HtmxHttpRequest, contribution_id: int) -> HttpResponse:
    """Its contributor withdraws an accepted contribution (optionally erasing its bytes)."""
    contribution = _contribution_for(request, contribution_id)
    if contribution.contributor_id != request.user.pk:
        return _refused(request, "Only its contributor withdraws a contribution; curators take records down.", 403)
    form = RevokeForm(request.POST or None, initial={"reason": Revocation.Reason.CONSENT})

    def act(choice: dict[str, Any]) -> str:
        done = revocation.contribution_revoke(contribution=contribution, user=request.user, **choice)
        erased = " and its records' text erased" if done.erase else ""
        messages.success(request, f"Contribution #{contribution.pk} is withdrawn{erased}: {done.record_count} "
                         f"record{'s' if done.record_count != 1 else ''} leave the snapshots to come.")  # fmt: skip
        return reverse("datanets:contribution", args=[contribution.pk])

    context = {"mode": "withdraw", "contribution": contribution, "datanet": contribution.datanet}
    return _revocation_page(request, form, context, act)


@require_http_methods(["GET", "POST"])
@login_required
def records_takedown(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """A curator of the Datanet, or staff, takes the ticked records down (``record`` ids, from the records viewer or
    a record's page)."""
    datanet = _datanet_for(request, slug)
    if not (request.user.is_staff or selectors.user_can_curate(user=request.user, datanet=datanet)):
        return _refused(request, f"Only the curators of {datanet.name} and staff take its records down.", 403)
    sent = request.POST if request.method == "POST" else request.GET
    # the records viewer's bulk bar posts the ticked records with ``start``: the form, not yet a takedown
    data = request.POST if request.method == "POST" and "start" not in request.POST else None
    form = TakedownForm(data, initial={"reason": Revocation.Reason.PERSONAL_DATA})
    raw_ids = sent.getlist("record")
    ids = sorted({int(i) for i in raw_ids if i.isdecimal()})
    if not ids or len(ids) != len(raw_ids):
        return _refused(request, "Tick at least one record (by its number) to take down.", 400)
    chosen = list(Record.objects.filter(datanet=datanet, pk__in=ids).select_related("contribution").order_by("pk"))
    if len(chosen) != len(ids):
        return _refused(request, f"Some of these records are not in {datanet.name}.", 404)

    def act(choice: dict[str, Any]) -> str:
        done = revocation.records_take_down(records=chosen, user=request.user, **choice)
        count = sum(r.record_count for r in done)
        erased = ", their text erased" if choice["erase"] else ""
        messages.success(request, f"{count} record{'s' if count != 1 else ''} taken down{erased}.")
        return safe_next(request, reverse("datanets:records", args=[datanet.slug]))

    context = {"mode": "takedown", "datanet": datanet, "records": chosen, "next": sent.get("next", "")}
    return _revocation_page(request, form, context, act)


@require_http_methods(["GET", "POST"])
@login_required
def revocation_erase(request: HtmxHttpRequest, revocation_id: int) -> HttpResponse:
    """Erase the bytes of an earlier revocation's records: its contributor, a curator of its Datanet or staff."""
    revoked = get_object_or_404(
        Revocation.objects.select_related("contribution__datanet", "contribution__contributor"), pk=revocation_id
    )
    contribution = revoked.contribution
    if contribution.contributor_id != request.user.pk and not revocation.user_can_take_down(
        user=request.user, contribution=contribution
    ):
        raise Http404("no such revocation")
    if request.method == "GET":
        context = {"mode": "erase", "revocation": revoked, "contribution": contribution, "confirming": True}
        return render(request, "datanets/revoke.html", {**context, "datanet": contribution.datanet})
    try:
        revocation.revocation_erase(revocation=revoked, user=request.user)
    except (PermissionDenied, ValidationError) as e:
        return _refused_for(request, e, 409)
    messages.success(request, f"The text of the {revoked.record_count} records of revocation {revoked.pk} is erased.")
    return redirect("datanets:contribution", contribution_id=contribution.pk)


# Curation


def _render_curation(request: HtmxHttpRequest, *, status: int = 200, error: str = "") -> HttpResponse:
    slug = request.GET.get("datanet", "")
    # one Datanet's queue (from its page): only one the user curates; another slug is a 404, so nothing leaks
    datanet = get_object_or_404(selectors.datanets_curated_by(user=request.user), slug=slug) if slug else None
    contributions = selectors.contributions_for_curator(user=request.user, datanet=datanet)
    page = _page(request, contributions, QUEUE_PAGE_SIZE)
    samples = _samples([c.pk for c in page], SAMPLE_RECORDS)
    for contribution in page:
        contribution.sample = samples[contribution.pk]  # type: ignore[attr-defined]
        contribution.check_list = _checks(contribution)  # type: ignore[attr-defined]
    query = f"?datanet={datanet.slug}" if datanet else ""
    context = {
        "page": page,
        "error": error,
        "datanet": datanet,
        "query": query,  # kept by the pager, the decision forms and where they come back to
        "queue_url": reverse("datanets:curation") + query,
    }
    return render(request, _template(request, "curation", "queue"), context, status=status)


@require_GET
@login_required
def curation(request: HtmxHttpRequest) -> HttpResponse:
    if not selectors.datanets_curated_by(user=request.user).exists():
        return _refused(request, "The curation panel is for owners and curators of a Datanet.", 403)
    return _render_curation(request)


@require_POST
@login_required
def curation_decide(request: HtmxHttpRequest) -> HttpResponse:
    form = DecisionForm(request.POST)
    if not form.is_valid():
        return _render_curation(request, status=400, error="Tick at least one contribution, then accept or reject.")
    chosen = Contribution.objects.filter(pk__in=form.cleaned_data["contribution"])
    action, reason = form.cleaned_data["action"], form.cleaned_data["reason"]
    try:
        decided = services.contributions_decide(
            curator=request.user, contributions=chosen, action=action, reason=reason
        )
    except PermissionDenied as e:
        return _refused(request, str(e), 403)
    except ValidationError as e:
        return _render_curation(request, status=400, error=_message(e))
    verb = "accepted" if action == "accept" else "rejected"
    messages.success(request, f"{len(decided)} contribution{'s' if len(decided) != 1 else ''} {verb}.")
    return redirect(safe_next(request, reverse("datanets:curation")))


@require_POST
@login_required
def record_exclude(request: HtmxHttpRequest, record_id: int) -> HttpResponse:
    record = get_object_or_404(Record.objects.select_related("contribution__datanet"), pk=record_id)
    if not selectors.user_can_view(user=request.user, datanet=record.contribution.datanet):
        raise Http404("no such record")
    form = ReasonForm(request.POST)
    try:
        if not form.is_valid():
            raise ValidationError("say why the record is excluded")
        services.record_exclude(curator=request.user, record=record, reason=form.cleaned_data["reason"])
    except (PermissionDenied, ValidationError) as e:
        return _refused_for(request, e, 400)
    messages.success(request, f"Record #{record.pk} of contribution #{record.contribution_id} is excluded.")
    return redirect(safe_next(request, reverse("datanets:curation")))


# The record viewer (docs/datanets.md, "Record viewer")


@require_GET
def records(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """A keyset page of the Datanet's records that the user may read, narrowed by the query's filters (``check``,
    ``flag``, ``contributor``, ``status``, ``excluded``, ``q``), to one contribution (``contribution=<id>``) or one
    snapshot (``snapshot=<number>``); ``after``/``before`` carry the cursor."""
    datanet = _datanet_for(request, slug)
    form = RecordFilterForm(request.GET)
    form.is_valid()
    cleaned = {k: v for k, v in getattr(form, "cleaned_data", {}).items() if k not in form.errors}
    snapshot = None
    if cleaned.get("snapshot"):
        snapshot = get_object_or_404(Snapshot, datanet=datanet, number=cleaned["snapshot"])
    filters = form.filters(snapshot=snapshot)
    matching = viewer.records_filtered(viewer.records_visible_to(user=request.user, datanet=datanet), filters)
    page = viewer.records_page(matching, after=cleaned.get("after"), before=cleaned.get("before"))
    query = request.GET.copy()
    for cursor in ("after", "before"):
        query.pop(cursor, None)
    can_curate = selectors.user_can_curate(user=request.user, datanet=datanet)
    context = {
        "datanet": datanet,
        "form": form,
        "filters": filters,
        "snapshot": snapshot,
        "page": page,
        "count": matching.count(),
        "query": query.urlencode(),
        "can_curate": can_curate,
        "contributors": viewer.contributor_names(user=request.user, datanet=datanet),
        "excerpt_chars": viewer.EXCERPT_CHARS,
    }
    return render(request, "datanets/records.html", context)


@require_GET
def record_detail(request: HtmxHttpRequest, slug: str, record_id: int) -> HttpResponse:
    """One record at its stable address: its text with flagged spans, the checks' evidence, its contribution and
    status, its exclusion, the snapshots it is in, and for a (near-)duplicate its twin beside it with the words that
    differ. A 404 for a record the user may not read."""
    datanet = _datanet_for(request, slug)
    visible = viewer.records_visible_to(user=request.user, datanet=datanet)
    record = get_object_or_404(
        visible.select_related("contribution__contributor", "excluded_by", "revoked__revocation__actor"), pk=record_id
    )
    _with_segments([record])
    twin_id = viewer.record_twin_id(record)
    twin = visible.select_related("contribution__contributor").filter(pk=twin_id).first() if twin_id else None
    previous_id, next_id = viewer.record_neighbours(visible, record)
    context = {
        "datanet": datanet,
        "record": record,
        "contribution": record.contribution,
        "evidence": viewer.record_evidence(record),
        "twin_id": twin_id,
        "twin": twin,
        "diff": viewer.record_diff(record, twin) if twin is not None else None,
        "diff_max_words": viewer.DIFF_MAX_PIECES // 2,
        "previous_id": previous_id,
        "next_id": next_id,
        "decisions": list(ContributionDecision.objects.filter(record=record).select_related("actor")),
        "leaves": list(
            SnapshotRecord.objects.filter(record=record).select_related("snapshot").order_by("snapshot__number")
        ),
        "can_curate": selectors.user_can_curate(user=request.user, datanet=datanet),
        "revoked": getattr(record, "revoked", None),
        "can_take_down": record.contribution.status == Contribution.Status.ACCEPTED
        and revocation.user_can_take_down(user=request.user, contribution=record.contribution),
    }
    return render(request, "datanets/record.html", context)


@require_POST
@login_required
def records_bulk(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """Exclude (with a reason) or restore the ticked records of this Datanet, all or none, then go back."""
    datanet = _datanet_for(request, slug)
    form = RecordBulkForm(request.POST)
    if not form.is_valid():
        return _refused(request, "Tick at least one record, then exclude or restore.", 400)
    ids = set(form.cleaned_data["record"])
    chosen = list(Record.objects.filter(datanet=datanet, pk__in=ids))
    if len(chosen) != len(ids):
        return _refused(request, "Some of the ticked records are not in this Datanet.", 400)
    action, reason = form.cleaned_data["action"], form.cleaned_data["reason"]
    try:
        if action == "exclude":
            done = services.records_exclude(curator=request.user, records=chosen, reason=reason)
        else:
            done = services.records_restore(curator=request.user, records=chosen, reason=reason)
    except (PermissionDenied, ValidationError) as e:
        return _refused_for(request, e, 400)
    verb = "excluded" if action == "exclude" else "restored"
    messages.success(request, f"{len(done)} record{'s' if len(done) != 1 else ''} {verb}.")
    return redirect(safe_next(request, reverse("datanets:records", args=[datanet.slug])))


# Snapshots and proofs


@require_POST
@login_required
def snapshot_freeze(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    datanet = _datanet_for(request, slug)
    try:
        snapshot = services.snapshot_freeze(datanet=datanet, user=request.user)
    except (PermissionDenied, ValidationError) as e:
        return _refused_for(request, e, 400)
    left_out = ""
    if snapshot.below_quality_count:
        count = snapshot.below_quality_count
        left_out = (
            f" {count} accepted contribution{'s' if count != 1 else ''} scoring below the minimum quality score of "
            f"{snapshot.min_quality_score} {'were' if count != 1 else 'was'} left out."
        )
    messages.success(request, f"Snapshot {snapshot.number} is frozen; its root is on its way to the chain.{left_out}")
    return redirect("datanets:snapshot", slug=datanet.slug, number=snapshot.number)


@require_GET
def snapshot_detail(request: HtmxHttpRequest, slug: str, number: int) -> HttpResponse:
    snapshot = _snapshot_for(request, slug, number)
    if request.htmx:
        response = render(request, "datanets/snapshot.html#anchor", {"snapshot": snapshot})
        if snapshot.anchor.status in FINAL_ANCHOR_STATES:
            response.status_code = 286  # htmx stops polling
        return response
    diff = selectors.snapshot_diff(snapshot=snapshot)
    context = {
        "snapshot": snapshot,
        "datanet": snapshot.datanet,
        "diff": diff,
        "added": list(diff["added_records"].order_by("id")[:10]),
        "removed": list(diff["removed_records"].order_by("id")[:10]),
        "can_curate": selectors.user_can_curate(user=request.user, datanet=snapshot.datanet),
    }
    return render(request, "datanets/snapshot.html", context)


@require_GET
def snapshot_jsonl(request: HttpRequest, slug: str, number: int) -> StreamingHttpResponse:
    snapshot = _snapshot_for(request, slug, number)
    response = StreamingHttpResponse(exports.snapshot_jsonl_lines(snapshot=snapshot), content_type="application/jsonl")
    response["Content-Disposition"] = f'attachment; filename="{snapshot.datanet.slug}-{snapshot.number}.jsonl"'
    return response


@require_GET
def snapshot_parquet(request: HttpRequest, slug: str, number: int) -> FileResponse:
    snapshot = _snapshot_for(request, slug, number)
    path = exports.snapshot_parquet_path(snapshot=snapshot)
    response = FileResponse(path.open("rb"), as_attachment=True, filename=exports.parquet_filename(snapshot))
    response["Content-Type"] = "application/vnd.apache.parquet"
    return response


@require_GET
def datanet_statistics(request: HttpRequest, slug: str) -> HttpResponse:
    """Lengths, tokens, languages, contributors and licences of the Datanet's accepted records, or of one snapshot's
    (``?snapshot=N``)."""
    datanet = _datanet_for(request, slug)
    snapshots = list(
        selectors.snapshots_of(datanet=datanet).select_related(None).only("pk", "number", "record_count")[:200]
    )
    chosen = request.GET.get("snapshot", "")
    snapshot = None
    if chosen:
        if not chosen.isdigit() or len(chosen) > 9:
            return render(
                request,
                "datanets/statistics.html",
                {"datanet": datanet, "snapshots": snapshots, "error": "Choose a snapshot by its number."},
                status=400,
            )
        snapshot = _snapshot_for(request, slug, int(chosen))
    stats = statistics.of(datanet=datanet, snapshot=snapshot)
    context = {
        "datanet": datanet,
        "snapshot": snapshot,
        "snapshots": snapshots,
        "stats": stats,
        "charts": {
            "words": stats.words_histogram.as_dict(),
            "tokens": stats.tokens_histogram.as_dict() if stats.tokens_histogram else None,
            "languages": {
                "labels": [r["language"] for r in stats.languages],
                "counts": [r["records"] for r in stats.languages],
            },
            "licences": {
                "labels": [r["licence"] for r in stats.licences],
                "counts": [r["records"] for r in stats.licences],
            },
            "contributors": {
                "labels": [r["username"] or "others" for r in stats.contributors],
                "counts": [r["records"] for r in stats.contributors],
            },
        },
        "tokenizer": statistics.tokenizer_name(),
        "sample_limit": statistics.SAMPLE_SIZE,
    }
    return render(request, "datanets/statistics.html", context)


@require_GET
def snapshot_manifest(request: HttpRequest, slug: str, number: int) -> JsonResponse:
    snapshot = _snapshot_for(request, slug, number)
    response = JsonResponse(exports.snapshot_manifest(snapshot=snapshot), json_dumps_params={"indent": 2})
    response["Content-Disposition"] = f'attachment; filename="{snapshot.datanet.slug}-{snapshot.number}.manifest.json"'
    return response


def _proof_record(request: HttpRequest, slug: str, number: int, record_id: int) -> tuple[Snapshot, Record]:
    snapshot = _snapshot_for(request, slug, number)
    record = get_object_or_404(Record, pk=record_id, datanet=snapshot.datanet)
    return snapshot, record


@require_GET
def record_proof(request: HttpRequest, slug: str, number: int, record_id: int) -> HttpResponse:
    snapshot, record = _proof_record(request, slug, number, record_id)
    try:
        proof = services.record_proof(snapshot=snapshot, record=record)
    except Record.DoesNotExist:
        raise Http404("this record is not in this snapshot") from None
    response = HttpResponse(json.dumps(proof, indent=2, cls=DjangoJSONEncoder), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="proof-{slug}-{number}-record-{record.pk}.json"'
    return response


@require_POST
def proof_verify(request: HtmxHttpRequest, slug: str, number: int, record_id: int) -> HttpResponse:
    snapshot, record = _proof_record(request, slug, number, record_id)
    context: dict[str, Any] = {"snapshot": snapshot, "record": record, "verified": None, "error": ""}
    status = 200
    if limited := chain_read_limited(request):
        context["error"] = limited.message
        response = render(request, _template(request, "verify", "answer"), context, status=429)
        response["Retry-After"] = str(limited.retry_after)
        return response
    try:
        context["verified"] = services.proof_verify_on_chain(snapshot=snapshot, record=record)
    except Record.DoesNotExist:
        raise Http404("this record is not in this snapshot") from None
    except ChainError as e:
        context["error"], status = f"The chain could not be asked: {e}", 503
    return render(request, _template(request, "verify", "answer"), context, status=status)


# Leaderboards


@require_GET
def leaderboard(request: HtmxHttpRequest, slug: str | None = None) -> HttpResponse:
    datanet = _datanet_for(request, slug) if slug else None
    context = {"datanet": datanet, "leaders": selectors.leaderboard(datanet=datanet, limit=100)}
    return render(request, "datanets/leaderboard.html", context)
