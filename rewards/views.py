"""The earnings page, the claim button behind it, the public reward epoch pages, a contribution's impact page, and
the reward split on a run's ancestry panel."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_POST

from common import jsonguard
from datanets.models import Contribution
from inference.models import InferenceRun
from ledger.models import RewardEpochEntry

from . import lineage, selectors
from .services import ClaimNotAllowed, ClaimRefused, reward_claim

PROOF_MAX_CHARS = 20_000
EPOCHS_PER_PAGE = 50
LEAVES_PER_PAGE = 100
REFUSAL_STATUS = {"bad_proof": 400, "not_published": 409, "already_claimed": 409, "in_flight": 409, "unavailable": 503}


class ClaimForm(forms.Form):
    """What the claim button posts: the leaf (epoch, index) and, as the page shows them, its amount and proof. The
    amount and proof are checked against the epoch's root, so a forged one is refused before anything is sent."""

    epoch = forms.IntegerField(min_value=1, max_value=2**31)
    index = forms.IntegerField(min_value=0, max_value=2**31)
    amount = forms.CharField(required=False, max_length=78)
    proof = forms.CharField(required=False, max_length=PROOF_MAX_CHARS, strip=True)

    def clean_amount(self) -> int | None:
        text = self.cleaned_data["amount"]
        if not text:
            return None
        if not text.isascii() or not text.isdigit():
            raise forms.ValidationError("The amount must be a whole number of the token's smallest unit.")
        return int(text)

    def clean_proof(self) -> list[str] | None:
        text = self.cleaned_data["proof"]
        if not text:
            return None
        try:
            proof = jsonguard.loads(text.encode())
        except jsonguard.JsonRefused:
            raise forms.ValidationError("The proof must be a JSON list of 0x-prefixed 32-byte hashes.") from None
        if not isinstance(proof, list) or not all(isinstance(p, str) for p in proof):
            raise forms.ValidationError("The proof must be a JSON list of 0x-prefixed 32-byte hashes.")
        return proof


def _earnings_context(request: HttpRequest) -> dict[str, Any]:
    earnings = selectors.earnings_of(user=request.user)
    return {
        "earnings": earnings,
        "chart": earnings.chart(),
        "wallet": request.user.primary_wallet,
        "contributions": list(selectors.contributions_credited(user=request.user)[:50]),
        "busy": any(b.state in ("publishing", "claiming") for b in earnings.balances),
    }


def _balances(request: HttpRequest, *, status: int = 200, error: str = "") -> HttpResponse:
    """The earnings page (or its balances fragment for htmx) with ``error`` said above the balances."""
    context = {**_earnings_context(request), "error": error}
    template = "rewards/earnings.html" + ("#balances" if getattr(request, "htmx", False) else "")
    return render(request, template, context, status=status)


@require_GET
@login_required
def earnings(request: HttpRequest) -> HttpResponse:
    context = {**_earnings_context(request), "error": ""}
    htmx = bool(getattr(request, "htmx", False))
    response = render(request, "rewards/earnings.html" + ("#balances" if htmx else ""), context)
    if htmx and not context["busy"]:
        response.status_code = 286  # nothing publishing or in flight: htmx stops polling
    return response


@require_POST
@login_required
def claim(request: HttpRequest) -> HttpResponse:
    form = ClaimForm(request.POST)
    if not form.is_valid():
        problems = "; ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items())
        return _balances(request, status=400, error=f"This claim could not be read ({problems}).")
    data = form.cleaned_data
    try:
        claim = reward_claim(
            user=request.user, epoch_number=data["epoch"], index=data["index"], amount=data["amount"],
            proof=data["proof"],
        )  # fmt: skip
    except RewardEpochEntry.DoesNotExist:
        raise Http404("There is no such balance.") from None
    except ClaimNotAllowed:
        refusal = "That balance belongs to someone else: you can only claim your own."
        return _balances(request, status=403, error=refusal)
    except ClaimRefused as e:
        return _balances(request, status=REFUSAL_STATUS.get(e.code, 400), error=f"Claim refused: {e.message}.")
    if claim.status == claim.Status.FAILED:
        return _balances(request, status=409, error=f"The claim was refused on chain: {claim.last_error}")
    entry = claim.entry
    note = "paid" if claim.status == claim.Status.CONFIRMED else "sent; it is confirmed in a few seconds"
    messages.success(
        request,
        f"Claim of {selectors.tokens(entry.amount)} from epoch {entry.epoch.number} to {entry.account} {note} "
        f"(transaction {claim.tx_hash}).",
    )
    if getattr(request, "htmx", False):
        return _balances(request)
    return redirect("rewards:earnings")


@require_GET
def epoch_list(request: HttpRequest) -> HttpResponse:
    """Every reward epoch, for anyone: its root, total, publication and document hash."""
    page = Paginator(selectors.epochs_listed(), EPOCHS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "rewards/epochs.html", {"page": page})


@require_GET
def epoch_detail(request: HttpRequest, number: int) -> HttpResponse:
    """One epoch for anyone: where it is published, its document's anchor, and every leaf with the accruals that
    make its amount."""
    epoch = get_object_or_404(selectors.epochs(), number=number)
    page = Paginator(selectors.epoch_leaves(epoch=epoch, user=request.user), LEAVES_PER_PAGE)
    context = {
        "epoch": epoch,
        "summary": selectors.epoch_summary(epoch),
        "document_anchor": selectors.epoch_anchor_facts(epoch),
        "leaves": page.get_page(request.GET.get("page")),
    }
    return render(request, "rewards/epoch.html", context)


@require_GET
def contribution_impact(request: HttpRequest, contribution_id: int) -> HttpResponse:
    contribution = get_object_or_404(Contribution.objects.select_related("datanet", "contributor"), id=contribution_id)
    if not selectors.contribution_viewable_by(user=request.user, contribution=contribution):
        raise Http404("No such contribution.")  # private ones are not even confirmed to exist
    impact = selectors.contribution_impact(contribution=contribution, user=request.user)
    is_contributor = contribution.contributor_id == request.user.pk
    context = {"contribution": contribution, "impact": impact, "is_contributor": is_contributor}
    return render(request, "rewards/contribution_impact.html", context)


def _lineage(request: HttpRequest, subject: lineage.Subject | None) -> HttpResponse:
    """The reverse lineage page of ``subject`` (None: not found, or not the viewer's to see: a 404 either way), one
    keyset page of answers (``?answers_before=``) and one of rewards (``?rewards_before=``)."""
    if subject is None:
        raise Http404("Nothing to show here.")
    try:
        answers_before = lineage.cursor(request.GET.get("answers_before"))
        rewards_before = lineage.cursor(request.GET.get("rewards_before"))
    except ValueError as e:
        return render(request, "rewards/lineage.html", {"subject": subject, "error": f"That page does not exist: {e}."},
                      status=400)  # fmt: skip
    page = lineage.lineage_page(
        subject=subject, user=request.user, answers_before=answers_before, accruals_before=rewards_before
    )
    query = request.GET.copy()
    for key in ("answers_before", "rewards_before"):
        query.pop(key, None)
    context = {"subject": subject, "page": page, "query": query.urlencode(), "error": ""}
    return render(request, "rewards/lineage.html", context)


@require_GET
def record_lineage(request: HttpRequest, record_id: int) -> HttpResponse:
    """Where one record went: its snapshots, the versions trained on them, its answers and what it earned."""
    return _lineage(request, lineage.record_subject(user=request.user, record_id=record_id))


@require_GET
def contribution_lineage(request: HttpRequest, contribution_id: int) -> HttpResponse:
    return _lineage(request, lineage.contribution_subject(user=request.user, contribution_id=contribution_id))


@require_GET
def contributor_lineage(request: HttpRequest, username: str) -> HttpResponse:
    return _lineage(request, lineage.contributor_subject(user=request.user, username=username))


def run_rewards_section(request: HttpRequest, run: InferenceRun) -> str:
    """The run's reward split, under its ancestry panel once its attribution is final (an ``attribution.hooks``
    panel section): each part of the fee, their total, and the rules it was split by; nothing when the run accrued
    nothing."""
    accruals = selectors.run_accruals(run=run)
    if not accruals:
        return ""
    context = {
        "accruals": accruals,
        "total": sum(int(a.amount) for a in accruals),
        "rules": selectors.split_rules(accruals),
    }
    return render_to_string("rewards/_run_rewards.html", context, request=request)
