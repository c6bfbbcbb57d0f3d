"""ModelFactory pages: base models, the fine-tune form with its estimate, jobs (live), versions, compare, merge.

Reads go through ``selectors``, writes through ``services``. A job or version the user may not see is a 404 (its
existence does not leak); an action the user may not take is a 403 that says why. htmx requests get the template's
fragment, plain requests the whole page, so everything works without JavaScript.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Page, Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.middleware import HtmxDetails

from datanets.models import Snapshot
from datanets.storage import media_path

from . import estimates, hooks, revocations, selectors, services
from .config import DEFAULT_FORMATTING, FORMATTING_MODES, PRESET_LABELS
from .forms import (
    RECORD_TYPE_HELP,
    BaseModelRegisterForm,
    CompareForm,
    FineTuneForm,
    MergeForm,
    PresetChoice,
    VersionSearchForm,
    preset_initial,
    presets_for_script,
)
from .models import FineTuneJob, ModelVersion

PAGE_SIZE = 20
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
FINAL_ANCHOR_STATES = ("confirmed", "failed")


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def _page(request: HttpRequest, items: Any, size: int = PAGE_SIZE) -> Page:
    return Paginator(items, size).get_page(request.GET.get("page"))


def _template(request: HtmxHttpRequest, name: str, fragment: str) -> str:
    return f"modelfactory/{name}.html" + (f"#{fragment}" if request.htmx else "")


def _refused(request: HtmxHttpRequest, message: str, status: int) -> HttpResponse:
    return render(request, _template(request, "refused", "message"), {"message": message}, status=status)


def _apply_errors(form: Any, error: ValidationError, fields: dict[str, str] | None = None) -> None:
    """Put a service's ValidationError next to the form fields it names (``config.<field>`` -> ``<field>``)."""
    if not hasattr(error, "error_dict"):
        form.add_error(None, error.messages)
        return
    for key, errors in error.error_dict.items():
        name = (fields or {}).get(key, key.removeprefix("config."))
        messages_ = [m for e in errors for m in e.messages]
        form.add_error(name if name in form.fields else None, [m[:1].upper() + m[1:] for m in messages_])


def _launched(
    request: HttpRequest,
    form: FineTuneForm | MergeForm,
    service: Callable[..., FineTuneJob],
    fields: dict[str, str],
    **specifics: Any,
) -> tuple[FineTuneJob | None, int]:
    """Launch a job through ``service`` with the form's name and description and ``specifics``. When the service
    refuses: None, its reasons put on ``form`` (``fields`` maps its field names to the form's), and the status to
    answer with (400, or 403 for a permission)."""
    try:
        job = service(
            owner=request.user,
            name=form.cleaned_data["name"],
            description=form.cleaned_data["description"],
            **specifics,
        )
    except ValidationError as e:
        _apply_errors(form, e, fields)
        return None, 400
    except PermissionDenied as e:
        form.add_error(None, str(e))
        return None, 403
    return job, 200


def _job_for(request: HttpRequest, job_id: int) -> FineTuneJob:
    return get_object_or_404(selectors.jobs_visible_to(user=request.user).select_related("version"), pk=job_id)


def _version_for(request: HttpRequest, version_id: int) -> ModelVersion:
    return get_object_or_404(
        selectors.versions_visible_to(user=request.user).select_related("job", "anchor__deployment"), pk=version_id
    )


# Base models


def _base_context(request: HttpRequest, form: BaseModelRegisterForm | None) -> dict[str, Any]:
    return {
        "bases": list(selectors.base_models()),
        "device": selectors.training_device(),
        "form": form if request.user.is_staff else None,
    }


@require_GET
@login_required
def base_list(request: HtmxHttpRequest) -> HttpResponse:
    return render(request, "modelfactory/base_list.html", _base_context(request, BaseModelRegisterForm()))


@require_http_methods(["GET", "POST"])
@login_required
def base_register(request: HtmxHttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        return _refused(request, "Only staff may register base models: the folder must be on every worker's disk.", 403)
    if request.method == "GET":
        return redirect("modelfactory:base_list")
    form = BaseModelRegisterForm(request.POST)
    if form.is_valid():
        try:
            base = services.base_model_register(user=request.user, **form.cleaned_data)
        except ValidationError as e:
            _apply_errors(form, e)
        else:
            messages.success(
                request, f"{base.name} is registered: {base.architecture}, {base.parameters:,} parameters."
            )
            return redirect("modelfactory:base_list")
    return render(request, "modelfactory/base_list.html", _base_context(request, form), status=400)


# The fine-tune form


def _chosen_snapshots(form: FineTuneForm) -> list[Snapshot]:
    if form.is_bound and hasattr(form, "cleaned_data") and "snapshots" in form.cleaned_data:
        return list(form.cleaned_data["snapshots"])
    wanted = form.chosen_snapshot_ids()
    return [s for s in form.snapshot_rows() if str(s.pk) in wanted]


def _data_summary(form: FineTuneForm, snapshots: list[Snapshot]) -> dict[str, Any]:
    """Records, estimated tokens, the licence check, record types and how they become text, for the chosen data."""
    record_types = sorted({s.datanet.record_type for s in snapshots})
    chosen = form["formatting"].value() or "auto"
    formatting = {
        t: (chosen if chosen != "auto" and chosen in FORMATTING_MODES.get(t, ()) else DEFAULT_FORMATTING.get(t, ""))
        for t in record_types
    }
    records = sum(s.record_count for s in snapshots)
    tokens = sum(
        selectors.estimated_tokens(
            words=s.words, records=s.record_count, formatting=formatting.get(s.datanet.record_type, "plain")
        )
        for s in snapshots
    )
    return {
        "snapshots": snapshots,
        "records": records,
        "tokens": tokens,
        "licence": selectors.licence_check(snapshots=snapshots),
        "record_types": [(t, RECORD_TYPE_HELP.get(t, ""), formatting[t]) for t in record_types],
        "mixed_types": len(record_types) > 1,
    }


def _estimate(form: FineTuneForm, data: dict[str, Any]) -> dict[str, Any] | None:
    if form.config is None or form.base_model is None or not data["records"]:
        return None
    planned = selectors.training_estimate(
        config=form.config, base_model=form.base_model, records=data["records"], tokens=data["tokens"]
    )
    estimate = planned.estimate
    return {
        "estimate": estimate,
        "planned": planned,
        "memory_mb": estimate.memory_bytes / 2**20,
        "plain_memory_mb": estimate.plain_memory_bytes / 2**20,
        "available_mb": (estimate.memory_available or 0) / 2**20,
        "minutes": estimate.seconds / 60,
    }


def _form_context(form: FineTuneForm, **extra: Any) -> dict[str, Any]:
    data = _data_summary(form, _chosen_snapshots(form))
    return {
        "form": form,
        "data": data,
        "estimate": _estimate(form, data),
        "device": selectors.training_device(),
        "presets": list(PRESET_LABELS.items()),
        "preset_values": presets_for_script(),
        "record_type_help": RECORD_TYPE_HELP,
        **extra,
    }


def _posted_basics(request: HttpRequest) -> dict[str, Any]:
    return {
        "name": request.POST.get("name", ""),
        "description": request.POST.get("description", ""),
        "start": request.POST.get("start", ""),
        "snapshots": request.POST.getlist("snapshots"),
        "formatting": request.POST.get("formatting", "auto"),
    }


@require_http_methods(["GET", "POST"])
@login_required
def job_new(request: HtmxHttpRequest) -> HttpResponse:
    """The fine-tune form. GET ``?preset=`` fills it from a preset and ``?parent=`` continues a version; a POST
    with ``preset`` (the preset buttons without JavaScript) refills it; any other POST launches the job."""
    preset_name = request.POST.get("preset") if request.method == "POST" else request.GET.get("preset")
    initial: dict[str, Any] = {**preset_initial("balanced"), "formatting": "auto"}
    if preset_name is not None:
        choice = PresetChoice({"preset": preset_name})
        if not choice.is_valid():
            form = FineTuneForm(user=request.user, initial=initial)
            context = _form_context(form, preset_error=" ".join(choice.errors["preset"]))
            return render(request, "modelfactory/job_form.html", context, status=400)
        initial.update(preset_initial(preset_name))
    if request.method == "GET" or preset_name is not None:
        if request.method == "POST":
            initial.update(_posted_basics(request))
        parent = request.GET.get("parent", "")
        if parent.isdigit() and len(parent) < 19:
            version = selectors.versions_visible_to(user=request.user).filter(pk=int(parent)).first()
            if version is not None:
                initial["start"] = f"version-{version.pk}"
                initial.setdefault("name", f"{version.name} (continued)")
        form = FineTuneForm(user=request.user, initial=initial)
        return render(request, "modelfactory/job_form.html", _form_context(form, preset=preset_name))

    form = FineTuneForm(request.POST, user=request.user)
    job, status = None, 400
    if form.is_valid() and form.config is not None:
        job, status = _launched(
            request,
            form,
            services.job_launch,
            {"parent_version": "start"},
            base_model=form.base_model,
            parent_version=form.parent_version,
            snapshots=form.cleaned_data["snapshots"],
            config=form.config,
        )
    if job is not None:
        messages.success(request, f"Job #{job.pk} is queued on the training queue.")
        return redirect("modelfactory:job_detail", job_id=job.pk)
    return render(request, "modelfactory/job_form.html", _form_context(form), status=status)


@require_POST
@login_required
def job_estimate(request: HtmxHttpRequest) -> HttpResponse:
    """The form's live panel: the chosen data, the licence check, the problems and the estimate. Writes nothing."""
    form = FineTuneForm(request.POST, user=request.user)
    form.is_valid()
    problems = [
        (form[name].label if name in form.fields else "", " ".join(errors))
        for name, errors in form.errors.items()
        if name not in ("name",)
    ]
    context = _form_context(form, problems=problems, live=True)
    return render(request, "modelfactory/job_form.html#estimate", context)


# Jobs


@require_GET
@login_required
def job_list(request: HtmxHttpRequest) -> HttpResponse:
    jobs = selectors.jobs_visible_to(user=request.user).select_related("version")
    return render(request, _template(request, "job_list", "results"), {"page": _page(request, jobs)})


def _base_eval_loss(job: FineTuneJob) -> float | None:
    """The base model's eval loss before step 1: on the job row, or (jobs from before it was kept there) in its
    version's metrics."""
    if job.base_eval_loss is not None:
        return job.base_eval_loss
    version = getattr(job, "version", None) if job.status == FineTuneJob.Status.SUCCEEDED else None
    value = (version.metrics or {}).get("base_eval_loss") if version is not None else None
    return float(value) if isinstance(value, int | float) else None


def _chart(job: FineTuneJob) -> dict[str, Any]:
    """The loss chart's data; the base model's eval loss is the eval curve's point at step 0."""
    history = [row for row in job.loss_history or [] if isinstance(row, dict)]
    base_eval = _base_eval_loss(job)
    if base_eval is not None and not any(row.get("step") == 0 for row in history):
        history = [{"step": 0, "train_loss": None, "eval_loss": base_eval}, *history]
    return {
        "steps": [row.get("step") for row in history],
        "train": [row.get("train_loss") for row in history],
        "eval": [row.get("eval_loss") for row in history],
        "total": job.total_steps,
    }


def _timeline(job: FineTuneJob, now: datetime) -> dict[str, Any]:
    """Every phase of the job with its state and seconds (measured when done, elapsed for the current one,
    estimated at launch for those to come), the remaining seconds and the overall progress: weighted by the
    phases' time, so the bar is not full while samples and the index are still being made. A phase to come with no
    estimate (a merge, a job launched before estimates were kept) leaves the time left unknown, never 0."""
    names = estimates.MERGE_PHASES if job.is_merge else estimates.PHASES
    planned: dict[str, float] = {k: float(v) for k, v in (job.estimate or {}).get("phases", {}).items()}
    done = {p["phase"]: p for p in job.phases or [] if isinstance(p, dict) and "phase" in p}
    current = job.phase if job.status == FineTuneJob.Status.RUNNING else ""
    elapsed = (now - job.phase_started_at).total_seconds() if current and job.phase_started_at else 0.0
    rows, remaining, spent, reached, known = [], 0.0, 0.0, False, True
    for phase, label in names.items():
        row: dict[str, Any] = {"phase": phase, "label": label, "planned": planned.get(phase)}
        if phase == current:
            reached = True
            row.update(state="current", seconds=elapsed + float(done.get(phase, {}).get("seconds", 0)))
            if phase == "train" and job.eta_seconds is not None:
                left = float(job.eta_seconds)
            elif job.phase_total and job.phase_done:
                left = elapsed / job.phase_done * (job.phase_total - job.phase_done)
            else:
                known = known and phase in planned
                left = max(planned.get(phase, 0.0) - elapsed, 0.0)
            remaining += left
            spent += row["seconds"]
        elif phase in done and not reached:
            row.update(state="done", seconds=float(done[phase]["seconds"]))
            spent += row["seconds"]
        elif job.is_finished or (current and not reached):
            # a phase before the current one that never ran (no eval split: no evaluation) is left out
            row.update(state="done" if phase in done else "skipped", seconds=done.get(phase, {}).get("seconds"))
        else:
            row.update(state="pending", seconds=None)
            known = known and phase in planned
            remaining += planned.get(phase, 0.0)
        if row["state"] == "skipped" and not row["seconds"]:
            continue
        rows.append(row)
    if job.status == FineTuneJob.Status.SUCCEEDED:
        percent = 100
    elif job.status == FineTuneJob.Status.RUNNING and spent + remaining > 0:
        percent = min(99, int(100 * spent / (spent + remaining)))
    else:
        percent = 0
    return {
        "rows": rows,
        "remaining": remaining if job.status == FineTuneJob.Status.RUNNING and known else None,
        "percent": percent,
        "current": next((r for r in rows if r["state"] == "current"), None),
        "total": sum(float(r["seconds"] or 0) for r in rows) if job.is_finished else None,
    }


@require_GET
@login_required
def job_detail(request: HtmxHttpRequest, job_id: int) -> HttpResponse:
    job = _job_for(request, job_id)
    chart = _chart(job)
    context: dict[str, Any] = {
        "job": job,
        "version": getattr(job, "version", None) if job.status == FineTuneJob.Status.SUCCEEDED else None,
        "chart": chart,
        "timeline": _timeline(job, timezone.now()),
        "base_eval_loss": _base_eval_loss(job),
        "can_act": job.owner_id == request.user.pk or request.user.is_staff,
        # until the run evaluates its adapter, the eval loss on the row is the base model's (from the start)
        "eval_is_base": job.eval_loss is not None
        and not any(e is not None for s, e in zip(chart["steps"], chart["eval"], strict=True) if s != 0),
        "schedule": (job.config or {}).get("schedule", ""),
        "peak_lr": (job.config or {}).get("learning_rate"),
    }
    if not request.htmx:  # the polled fragment needs only the job row
        context["snapshots"] = list(job.snapshots.select_related("datanet").order_by("pk"))
        context["merge_sources"] = job.merge_sources() if job.is_merge else []
        context["config_rows"] = _flat(job.config) if job.config else []
    response = render(request, _template(request, "job_detail", "progress"), context)
    if request.htmx and job.is_finished:
        response.status_code = 286  # htmx stops polling
    return response


def _job_action(request: HtmxHttpRequest, job_id: int, action: Any, done: str) -> HttpResponse:
    job = _job_for(request, job_id)
    try:
        action(job=job, user=request.user)
    except PermissionDenied as e:
        return _refused(request, str(e).capitalize() + ".", 403)
    except ValidationError as e:
        return _refused(request, "; ".join(e.messages).capitalize() + ".", 400)
    messages.success(request, done.format(pk=job.pk))
    return redirect("modelfactory:job_detail", job_id=job.pk)


@require_POST
@login_required
def job_cancel(request: HtmxHttpRequest, job_id: int) -> HttpResponse:
    return _job_action(request, job_id, services.job_cancel, "Job #{pk}: cancel requested.")


@require_POST
@login_required
def job_retry(request: HtmxHttpRequest, job_id: int) -> HttpResponse:
    return _job_action(request, job_id, services.job_retry, "Job #{pk} is queued again.")


# Versions


@require_GET
@login_required
def version_list(request: HtmxHttpRequest) -> HttpResponse:
    form = VersionSearchForm(request.GET)
    search = form.cleaned_data["q"] if form.is_valid() else ""
    versions = selectors.version_list(user=request.user, search=search)
    query = request.GET.copy()
    query.pop("page", None)
    page = _page(request, versions)
    seen = selectors.versions_training_data(versions=page, user=request.user)
    for version in page:
        # a private Datanet's name is its members' to see; the card only counts it
        version.shown_snapshots = seen[version.pk].snapshots  # type: ignore[attr-defined]
        version.private_datanets = seen[version.pk].private_datanets  # type: ignore[attr-defined]
    context = {
        "form": form,
        "page": page,
        "query": query.urlencode(),
        "search": search,
        "notices": selectors.notices_unread(user=request.user) if not request.htmx else [],
    }
    return render(request, _template(request, "version_list", "results"), context)


def _flat(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """A nested config as sorted (dotted key, value) rows: ``formatting.text`` etc."""
    rows: list[tuple[str, Any]] = []
    for key in sorted(values):
        value = values[key]
        if isinstance(value, dict):
            rows.extend(_flat(value, f"{prefix}{key}."))
        else:
            rows.append((f"{prefix}{key}", ", ".join(map(str, value)) if isinstance(value, list) else value))
    return rows


NODE_W, NODE_H, COL_GAP, ROW_GAP, PAD = 200, 46, 70, 14, 12


def _node(key: str, kind: str, title: str, sub: str, href: str) -> dict[str, Any]:
    short = title if len(title) <= 26 else title[:25] + "…"
    return {"key": key, "kind": kind, "title": title, "title_short": short, "sub": sub, "href": href}


def _lineage_graph(version: ModelVersion, lineage: dict[str, Any]) -> dict[str, Any]:
    """Boxes and curves for the lineage SVG: Datanets -> snapshots (and parent versions) -> this version ->
    children. Coordinates are computed here so the page needs no layout library and no JavaScript."""
    datanets: dict[int, Any] = {}
    for snapshot in lineage["snapshots"]:
        datanets.setdefault(snapshot.datanet_id, snapshot.datanet)
    columns: list[list[dict[str, Any]]] = [[], [], [], []]
    for datanet in datanets.values():
        href = reverse("datanets:detail", args=[datanet.slug])
        columns[0].append(_node(f"d{datanet.pk}", "datanet", datanet.name, f"Datanet · {datanet.licence}", href))
    if private := lineage.get("private_datanets"):
        # named by count only: neither the Datanets nor their snapshots are the viewer's to see
        title = f"{private} private Datanet{'s' if private != 1 else ''}"
        columns[1].append(_node("private", "snapshot", title, "not visible to you", ""))
    for snapshot in lineage["snapshots"]:
        href = reverse("datanets:snapshot", args=[snapshot.datanet.slug, snapshot.number])
        sub = f"{snapshot.record_count:,} records · root {snapshot.merkle_root[:10]}…"
        node = _node(f"s{snapshot.pk}", "snapshot", f"Snapshot #{snapshot.number}", sub, href)
        columns[1].append({**node, "from": f"d{snapshot.datanet_id}"})
    for link, visible in lineage["parents"]:
        relation = "continued from" if link.relation == "continued_from" else f"merged, weight {link.weight:g}"
        href = reverse("modelfactory:version_detail", args=[link.parent_id]) if visible else ""
        title = link.parent.name if visible else "a private version"
        columns[1].append(_node(f"p{link.parent_id}", "parent", title, f"#{link.parent_id} · {relation}", href))
    columns[2].append(_node("this", "this", version.name, f"this version · #{version.pk}", ""))
    for link, visible in lineage["children"]:
        relation = "continued it" if link.relation == "continued_from" else f"merged it, weight {link.weight:g}"
        href = reverse("modelfactory:version_detail", args=[link.child_id]) if visible else ""
        title = link.child.name if visible else "a private version"
        columns[3].append(_node(f"c{link.child_id}", "child", title, f"#{link.child_id} · {relation}", href))
    used = [i for i, column in enumerate(columns) if column or i == 2]
    rows = max(len(c) for c in columns)
    height = PAD * 2 + rows * NODE_H + (rows - 1) * ROW_GAP
    nodes: dict[str, dict[str, Any]] = {}
    for place, index in enumerate(used):
        column = columns[index]
        top = (height - (len(column) * NODE_H + (len(column) - 1) * ROW_GAP)) / 2
        for row, node in enumerate(column):
            node.update(x=PAD + place * (NODE_W + COL_GAP), y=top + row * (NODE_H + ROW_GAP))
            nodes[node["key"]] = node

    def curve(a: dict[str, Any], b: dict[str, Any]) -> str:
        x1, y1, x2, y2 = a["x"] + NODE_W, a["y"] + NODE_H / 2, b["x"], b["y"] + NODE_H / 2
        bend = COL_GAP / 2
        return f"M{x1:.0f},{y1:.0f} C{x1 + bend:.0f},{y1:.0f} {x2 - bend:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"

    this = nodes["this"]
    edges = [{"d": curve(nodes[n["from"]], n), "kind": "data"} for n in columns[1] if n.get("from") in nodes]
    edges += [{"d": curve(n, this), "kind": "parent" if n["kind"] == "parent" else "data"} for n in columns[1]]
    edges += [{"d": curve(this, n), "kind": "child"} for n in columns[3]]
    width = PAD * 2 + len(used) * NODE_W + (len(used) - 1) * COL_GAP
    return {"nodes": list(nodes.values()), "edges": edges, "width": width, "height": height, "w": NODE_W, "h": NODE_H}


def _version_context(request: HttpRequest, version: ModelVersion) -> dict[str, Any]:
    lineage = selectors.version_lineage(version=version, user=request.user)
    return {
        "version": version,
        "anchor": version.anchor,
        "lineage": lineage,
        "graph": _lineage_graph(version, lineage),
        "samples": selectors.version_samples_for(version=version, user=request.user, seen=lineage["training_data"]),
        "config_rows": _flat(version.config or {}),
        "training_rows": _flat({k: v for k, v in (version.training or {}).items() if k != "lora"}),
        "is_owner": version.owner_id == request.user.pk or request.user.is_staff,
        "adapter_files": ADAPTER_FILES,
        **_revoked_context(request, version),
        # the apps above add theirs (the version's attribution index and how reliable it is)
        "sections": [section(request, version) for section in hooks.version_sections()],
    }


def _revoked_context(request: HttpRequest, version: ModelVersion) -> dict[str, Any]:
    """The withdrawn-records warning (counts, the revocations' reasons, the retrain action) and what the version
    supersedes or is superseded by."""
    flag = selectors.version_revocation_flag(version)
    is_merge = version.job.kind == FineTuneJob.Kind.MERGE
    return {
        "revoked": flag,
        "revoked_reasons": revocations.revocation_reasons(version=version) if flag is not None else [],
        "merge_sources": services.version_retrain_sources(version=version) if flag is not None and is_merge else [],
        "is_merge": is_merge,
        "supersession": selectors.version_supersession(version),
        "can_retrain": flag is not None and version.owner_id == request.user.pk,
    }


@require_GET
def version_detail(request: HtmxHttpRequest, version_id: int) -> HttpResponse:
    version = _version_for(request, version_id)
    if request.htmx:
        return render(
            request, "modelfactory/version_detail.html#anchor", {"version": version, "anchor": version.anchor}
        )
    context = _version_context(request, version)
    # the owner has seen the warning: its notices leave the navigation's count (the warning stays)
    revocations.notices_mark_read(version=version, user=request.user)
    return render(request, "modelfactory/version_detail.html", context)


@require_POST
@login_required
def version_retrain(request: HtmxHttpRequest, version_id: int) -> HttpResponse:
    """Retrain a version flagged as trained on withdrawn records without them (its owner only)."""
    version = _version_for(request, version_id)
    try:
        job = services.version_retrain_without_revoked(version=version, user=request.user)
    except PermissionDenied as e:
        return _refused(request, str(e)[:1].upper() + str(e)[1:] + ".", 403)
    except services.RetrainConflict as e:
        return _refused(request, " ".join(m[:1].upper() + m[1:] for m in e.messages) + ".", 409)
    except ValidationError as e:
        return _refused(request, " ".join(m[:1].upper() + m[1:] for m in e.messages) + ".", 400)
    messages.success(request, f"Retraining {version.name} without the withdrawn records: job #{job.pk} is queued.")
    return redirect("modelfactory:job_detail", job_id=job.pk)


@require_POST
@login_required
def version_publish(request: HtmxHttpRequest, version_id: int) -> HttpResponse:
    version = _version_for(request, version_id)
    published = request.POST.get("published") == "1"
    try:
        services.version_publish(version=version, user=request.user, published=published)
    except PermissionDenied as e:
        return _refused(request, str(e).capitalize() + ".", 403)
    messages.success(request, f"{version.name} is {'published' if published else 'no longer published'}.")
    return redirect("modelfactory:version_detail", version_id=version.pk)


@require_GET
def version_manifest(request: HttpRequest, version_id: int) -> HttpResponse:
    """The lineage manifest, byte for byte what was hashed and anchored."""
    version = _version_for(request, version_id)
    response = HttpResponse(version.manifest.encode("utf-8"), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="model-version-{version.pk}-manifest.json"'
    response["X-Manifest-Keccak256"] = version.manifest_hash
    return response


@require_GET
def version_adapter_file(request: HttpRequest, version_id: int, filename: str) -> FileResponse:
    version = _version_for(request, version_id)
    if filename not in ADAPTER_FILES:
        raise Http404("no such adapter file")
    path = media_path(version.adapter_path) / filename
    if not path.is_file():
        raise Http404("the adapter file is not on this server")
    response = FileResponse(path.open("rb"), as_attachment=True, filename=f"model-version-{version.pk}-{filename}")
    if filename == "adapter_model.safetensors":
        response["X-Adapter-SHA256"] = version.adapter_sha256
    return response


def _samples_by_prompt(version: ModelVersion, user: Any) -> dict[str, dict[str, Any]]:
    return {s.get("prompt", ""): s for s in selectors.version_samples_for(version=version, user=user)}


METRICS = (
    ("train_loss", "Final train loss", "lower"),
    ("eval_loss", "Eval loss (tuned)", "lower"),
    ("base_eval_loss", "Eval loss (base)", "lower"),
    ("eval_perplexity", "Eval perplexity (tuned)", "lower"),
    ("base_eval_perplexity", "Eval perplexity (base)", "lower"),
)


EVAL_SET_SETTINGS = ("eval_fraction", "seed", "formatting", "max_length")
COMPARE_SUGGESTIONS = 6


def _eval_set(version: ModelVersion) -> tuple[Any, ...] | None:
    """What decides a version's eval set: its snapshots (by Merkle root), its base model's tokenizer (records too long
    for it are dropped) and the split settings. Two versions with different keys measured their eval loss on different
    records; None for a version that has no eval loss of its own (a merge)."""
    if (version.metrics or {}).get("eval_loss") is None:
        return None
    config = version.config or {}
    roots = tuple(sorted(s.merkle_root for s in version.snapshots.all()))
    return (version.base_model_id, roots, *(config.get(key) for key in EVAL_SET_SETTINGS))


@require_GET
@login_required
def version_compare(request: HtmxHttpRequest) -> HttpResponse:
    """Two versions side by side. With A alone (the version page's Compare button) the page keeps A chosen and offers
    the versions to compare it with, its parents first; with neither, the two pickers."""
    form = CompareForm(request.GET)
    visible = selectors.versions_visible_to(user=request.user)
    choices = list(visible.select_related(None).only("pk", "name")[:200])
    if not form.is_valid():
        status = 400 if request.GET else 200
        return render(request, "modelfactory/compare.html", {"form": form, "choices": choices}, status=status)
    visible = visible.select_related("job").prefetch_related("snapshots")
    a = get_object_or_404(visible, pk=form.cleaned_data["a"])
    if form.cleaned_data["b"] is None:
        parents = set(a.parents.values_list("pk", flat=True))
        others = visible.exclude(pk=a.pk).select_related("base_model").order_by("-pk")[:200]
        suggestions = sorted(others, key=lambda v: (v.pk not in parents, v.base_model_id != a.base_model_id))
        context = {"form": form, "choices": choices, "a_only": a, "suggestions": suggestions[:COMPARE_SUGGESTIONS]}
        return render(request, "modelfactory/compare.html", context)
    b = get_object_or_404(visible, pk=form.cleaned_data["b"])
    config_a, config_b = dict(_flat(a.config or {})), dict(_flat(b.config or {}))
    config = [
        (key, config_a.get(key, "—"), config_b.get(key, "—"), config_a.get(key) != config_b.get(key))
        for key in sorted(config_a.keys() | config_b.keys())
    ]
    metrics = [(label, a.metrics.get(key), b.metrics.get(key)) for key, label, _ in METRICS]
    samples_a, samples_b = _samples_by_prompt(a, request.user), _samples_by_prompt(b, request.user)
    common = [(prompt, samples_a[prompt], samples_b[prompt]) for prompt in samples_a if prompt in samples_b]
    eval_a, eval_b = _eval_set(a), _eval_set(b)
    context = {
        "form": form,
        "choices": choices,
        "a": a,
        "b": b,
        "config": config,
        "differences": sum(1 for row in config if row[3]),
        "metrics": metrics,
        "common": common,
        "only_a": [s for p, s in samples_a.items() if p not in samples_b],
        "only_b": [s for p, s in samples_b.items() if p not in samples_a],
        "same_base": a.base_model_id == b.base_model_id,
        "different_eval_sets": eval_a is not None and eval_b is not None and eval_a != eval_b,
    }
    return render(request, "modelfactory/compare.html", context)


# Merge


@require_http_methods(["GET", "POST"])
@login_required
def merge_new(request: HtmxHttpRequest) -> HttpResponse:
    if request.method == "GET":
        chosen = [v for v in request.GET.getlist("versions") if v.isdigit()]
        form = MergeForm(user=request.user, initial={"versions": chosen, "method": "linear", "density": 0.5})
        return render(request, "modelfactory/merge_form.html", {"form": form})
    form = MergeForm(request.POST, user=request.user)
    job, status = None, 400
    if form.is_valid():
        job, status = _launched(
            request,
            form,
            services.merge_launch,
            {"parents": "versions", "weights": "versions"},
            parents=form.parents,
            method=form.cleaned_data["method"],
            density=form.cleaned_data["density"],
        )
    if job is not None:
        messages.success(request, f"Merge job #{job.pk} is queued.")
        return redirect("modelfactory:job_detail", job_id=job.pk)
    return render(request, "modelfactory/merge_form.html", {"form": form}, status=status)
