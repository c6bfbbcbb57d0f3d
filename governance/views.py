"""The governance pages: proposals by state, a proposal with its actions, timeline, tally and quorum, the forms that
create a proposal, vote and delegate, the rules in force with their history, and voting power on the profile.

Signing happens in the person's browser wallet (EIP-712, ``eth_signTypedData_v4``): each signing form posts twice
to the same URL. Without ``signature`` the view answers the typed data to sign (JSON); with it, the view relays the
signature through ``governance.services`` and answers the relayed transaction's status, after waiting briefly for
its receipt. A refusal is JSON ``{"error": sentence, "code": code}`` with a 4xx (503 when the chain is away); a
step without a signature (queue, execute, settle) is a plain form that redirects back to the proposal.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from accounts.models import User
from common.ratelimit import chain_read_limited
from datanets.markdown import render_markdown
from ledger import chain
from ledger import governance as ledger_governance
from ledger.governance import GovernanceRefused
from ledger.models import GovernanceTransaction
from modelfactory.models import ModelVersion

from . import selectors, services
from .models import Proposal, Vote

PROPOSALS_PER_PAGE = 25
CONFIRM_WAIT_SECONDS = 5.0  # a relay's page waits this long for the receipt, then the page polls the status
REFUSAL_STATUS = {
    "not_your_wallet": 403,
    "forbidden": 403,
    "replayed": 409,
    "exists": 409,
    "already_voted": 409,
    "already_bonded": 409,
    "not_active": 409,
    "not_succeeded": 409,
    "not_ready": 409,
    "not_decided": 409,
    "rate_limited": 429,
    "unavailable": 503,
}
FIELD_LABELS = {
    "contributors_bps": "Contributors (basis points)",
    "builder_bps": "Builder (basis points)",
    "min_quality_score": "Minimum score (0-100)",
    "deployment_gate": "Gate",
    "deployment_stake": "Stake (smallest unit)",
    "stake_slash_bps": "Forfeited if defeated (basis points)",
    "pool": "Pool address",
}
FINAL_STATES = {"executed", "defeated", "canceled", "expired"}


def _refused(error: GovernanceRefused) -> JsonResponse:
    return JsonResponse({"error": error.message, "code": error.code}, status=REFUSAL_STATUS.get(error.code, 400))


def _proposal_or_404(proposal_id: str) -> Proposal:
    if not proposal_id.isascii() or not proposal_id.isdigit() or len(proposal_id) > 78:
        raise Http404("no such proposal")
    proposal = selectors.proposal(proposal_id)
    if proposal is None:
        raise Http404("no such proposal")
    return proposal


def _transaction_json(row: GovernanceTransaction) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "status": row.status,
        "tx_hash": row.tx_hash or "",
        "error": row.last_error if row.status == "failed" else "",
        "status_url": reverse("governance:transaction", args=[row.id]),
    }


def _relayed(row: GovernanceTransaction, **extra: Any) -> JsonResponse:
    """The relayed transaction, after waiting up to CONFIRM_WAIT_SECONDS for its receipt."""
    try:
        row = ledger_governance.confirm(row=row, wait_seconds=CONFIRM_WAIT_SECONDS)
    except chain.ChainError:
        row.refresh_from_db()
    return JsonResponse({"transaction": _transaction_json(row), **extra}, status=202 if row.status != "failed" else 409)


def _to_sign(typed: dict[str, Any], account: str, fields: dict[str, Any] | None = None, **extra: Any) -> JsonResponse:
    """The typed data for the wallet, its uint256 values as decimal strings: JavaScript's numbers would round a
    proposal id (wallets accept both forms)."""
    message = {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in typed["message"].items()}
    typed = {**typed, "message": message}
    return JsonResponse({"typed_data": typed, "account": account, "fields": fields or {}, **extra})


def _wallets(user: User) -> list[str]:
    return list(user.wallets.values_list("address", flat=True))


# Reading


@require_GET
def proposal_list(request: HttpRequest) -> HttpResponse:
    counts = selectors.state_counts()
    state = request.GET.get("state", "")
    if state not in counts:
        state = ""
    page = Paginator(selectors.proposals(state=state or None), PROPOSALS_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "proposals": page.object_list,
        "state": state,
        "tabs": [(name, counts[name]) for name in counts],
        "total": sum(counts.values()),
        "query": f"state={state}" if state else "",
        "deployed": selectors.active_contracts() is not None,
    }
    return render(request, "governance/proposal_list.html", context)


def _live_tally(request: HttpRequest, proposal: Proposal) -> dict[str, Any]:
    """The tally from the Governor (one chain read, counted against CHAIN_READ_RATE_LIMIT), else from the mirror."""
    mirrored = {
        "for": int(proposal.for_votes),
        "against": int(proposal.against_votes),
        "abstain": int(proposal.abstain_votes),
        "quorum": int(proposal.quorum) if proposal.quorum is not None else None,
        "state": proposal.state,
        "source": "mirror",
    }
    if proposal.state in FINAL_STATES or chain_read_limited(request):
        return mirrored
    try:
        live = ledger_governance.tally(int(proposal.proposal_id), contracts=proposal.contracts)
    except (chain.ChainError, GovernanceRefused):
        return mirrored
    return {"for": live.for_, "against": live.against, "abstain": live.abstain, "quorum": live.quorum,
            "state": live.state, "source": "chain"}  # fmt: skip


def _tally_context(request: HttpRequest, proposal: Proposal) -> dict[str, Any]:
    tally = _live_tally(request, proposal)
    counted = tally["for"] + tally["abstain"]
    quorum = tally["quorum"]
    percent = min(100, round(counted * 100 / quorum)) if quorum else (100 if counted else 0)
    state = tally["state"]
    user = request.user
    signed_in = user.is_authenticated
    stake = getattr(proposal, "stake", None) if proposal.kind == Proposal.Kind.DEPLOYMENT else None
    wallets = _wallets(user) if signed_in else []
    voted = _voted(proposal, wallets)
    return {
        "tally": tally,
        "chart": {
            "labels": ["For", "Against", "Abstain"],
            "votes": [float(tally[k]) / 10**18 for k in ("for", "against", "abstain")],
            "quorum": float(quorum) / 10**18 if quorum else None,
        },
        "quorum_counted": counted,
        "quorum_percent": percent,
        "quorum_reached": quorum is not None and quorum > 0 and counted >= quorum,
        "state": state,
        "final": state in FINAL_STATES,
        "can_vote": signed_in and state == "active" and len(voted) < len(wallets),
        "can_queue": signed_in and state == "succeeded",
        "can_execute": signed_in and state == "queued",
        "can_settle": signed_in and stake is not None and stake.status == "bonded" and state != "pending"
        and state != "active",
        "can_bond": signed_in and proposal.kind == Proposal.Kind.DEPLOYMENT and stake is None
        and state in ("pending", "active") and proposal.proposer in wallets,
        "wallets": wallets,
        "unvoted": [w for w in wallets if w not in voted],
        "voted": voted,
        "stake": stake,
    }  # fmt: skip


def _voted(proposal: Proposal, wallets: list[str]) -> dict[str, str]:
    """Which of ``wallets`` voted on ``proposal`` and how: from the mirror, and from relays it has not read yet."""
    if not wallets:
        return {}
    words = dict(Vote.Support.choices)
    voted = {
        row.account: words.get(row.payload.get("support"), "")
        for row in GovernanceTransaction.objects.filter(
            kind="vote", proposal_id=proposal.proposal_id, account__in=wallets
        ).exclude(status="failed")
    }
    for vote in proposal.votes.filter(voter__in=wallets):
        voted[vote.voter] = vote.get_support_display()
    return voted


@require_GET
def proposal_detail(request: HttpRequest, proposal_id: str) -> HttpResponse:
    if not proposal_id.isascii() or not proposal_id.isdigit() or len(proposal_id) > 78:
        raise Http404("no such proposal")
    proposal = selectors.proposal(proposal_id)
    if proposal is None:
        # relayed here but not indexed yet: say so and look again, rather than a 404 the proposer cannot explain
        relayed = GovernanceTransaction.objects.filter(kind="propose", proposal_id=proposal_id).exclude(status="failed")
        if not relayed.exists():
            raise Http404("no such proposal")
        return render(request, "governance/proposal_pending.html", {"proposal_id": proposal_id})
    part = request.GET.get("part")
    if getattr(request, "htmx", False) and part in ("tally", "steps"):
        context = {"proposal": proposal, **_tally_context(request, proposal)}
        response = render(request, f"governance/proposal_detail.html#{part}", context)
        if part == "tally" and context["final"]:
            response.status_code = 286  # htmx stops polling
        return response
    if getattr(request, "htmx", False):  # the "on its way" page polling: it is indexed now, show the whole page
        return HttpResponse(headers={"HX-Refresh": "true"})
    return _detail(request, proposal)


def _detail(request: HttpRequest, proposal: Proposal, *, error: str = "", status: int = 200) -> HttpResponse:
    body = proposal.description
    if body.startswith("# "):  # the title, shown as the page's heading
        body = body.split("\n", 1)[1] if "\n" in body else ""
    context = {
        "proposal": proposal,
        **_tally_context(request, proposal),
        # render_markdown escapes raw HTML and sanitises its output with nh3: the template may print it as is
        "description_html": render_markdown(body.strip()),
        "actions": selectors.actions(proposal),
        "timeline": selectors.timeline(proposal),
        "votes": list(proposal.votes.all()[:200]),
        "error": error,
    }
    return render(request, "governance/proposal_detail.html", context, status=status)


@require_GET
def parameters(request: HttpRequest) -> HttpResponse:
    error = ""
    try:
        now = selectors.parameters_now()
    except chain.ChainError:
        now, error = [], "The chain cannot be reached right now, so the rules in force cannot be read; try again soon."
    history = list(selectors.parameter_history()[:200])
    labels = {name: label for name, (label, _unit) in selectors.PARAMETER_LABELS.items()}
    units = {name: unit for name, (_label, unit) in selectors.PARAMETER_LABELS.items()}
    rows = [
        {
            "change": change,
            "label": labels.get(change.name, change.name),
            "old": selectors.format_value(units.get(change.name, ""), change.old_value) if change.old_value else "—",
            "new": selectors.format_value(units.get(change.name, ""), change.new_value),
        }
        for change in history
    ]
    return render(request, "governance/parameters.html", {"now": now, "history": rows, "error": error},
                  status=503 if error else 200)  # fmt: skip


@require_GET
@login_required
def transaction_status(request: HttpRequest, transaction_id: int) -> JsonResponse:
    """A relayed transaction the signed-in person asked for: its status, for the page to follow it."""
    row = get_object_or_404(GovernanceTransaction, id=transaction_id, requested_by=f"user:{request.user.pk}")
    if row.status == "submitted":
        row = ledger_governance.confirm(row=row)
    return JsonResponse({"transaction": _transaction_json(row)})


# Signing: each view answers the typed data without ``signature``, and relays it with one


@require_POST
@login_required
def vote(request: HttpRequest, proposal_id: str) -> JsonResponse:
    proposal = _proposal_or_404(proposal_id)
    account, support = request.POST.get("account"), request.POST.get("support", "")
    support_number = int(support) if support in ("0", "1", "2") else support
    try:
        if not request.POST.get("signature"):
            typed = services.ballot_message(user=request.user, proposal=proposal, account=account,
                                            support=support_number)  # fmt: skip
            return _to_sign(typed, typed["message"]["voter"])
        row = services.vote(user=request.user, proposal=proposal, account=account, support=support_number,
                            signature=request.POST["signature"])  # fmt: skip
    except GovernanceRefused as e:
        return _refused(e)
    return _relayed(row)


@require_GET
@login_required
def delegate_page(request: HttpRequest) -> HttpResponse:
    return render(request, "governance/delegate.html", {"power": selectors.voting_power(request.user),
                                                        "wallets": _wallets(request.user)})  # fmt: skip


@require_POST
@login_required
def delegate(request: HttpRequest) -> JsonResponse:
    account = request.POST.get("account")
    delegatee = account if request.POST.get("to", "self") == "self" else request.POST.get("delegatee", "").strip()
    try:
        if not request.POST.get("signature"):
            typed = services.delegation_message(user=request.user, account=account, delegatee=delegatee)
            fields = {"nonce": str(typed["message"]["nonce"]), "expiry": str(typed["message"]["expiry"])}
            return _to_sign(typed, services.own_wallet(request.user, account), fields)
        row = services.delegate(user=request.user, account=account, delegatee=delegatee,
                                nonce=request.POST.get("nonce"), expiry=request.POST.get("expiry"),
                                signature=request.POST["signature"])  # fmt: skip
    except GovernanceRefused as e:
        return _refused(e)
    return _relayed(row)


def _changes(post: Any) -> list[services.ParameterChangeSpec]:
    """The parameter changes a create form asks for: each ticked parameter with its fields' values."""
    changes = []
    for name, spec in services.PARAMETERS.items():
        if post.get(f"change_{name}") != "on":
            continue
        values: list[Any] = []
        for field in spec["fields"]:
            value = post.get(field, "").strip()
            if field == "deployment_gate":
                value = {"on": True, "off": False}.get(value, value)
            values.append(value)
        changes.append(services.ParameterChangeSpec(name, tuple(values)))
    return changes


def _prepared(request: HttpRequest) -> services.PreparedProposal:
    """The proposal the create form describes, rebuilt from the same fields at both posts (the calldata is never
    taken from the browser)."""
    post, user = request.POST, request.user
    if post.get("kind") == "deployment":
        version_id = post.get("version", "")
        version = ModelVersion.objects.filter(id=int(version_id), owner=user).first() if version_id.isdigit() else None
        if version is None:
            raise GovernanceRefused("choose one of your own model versions", code="bad_input")
        return services.prepare_deployment_proposal(user=user, proposer=post.get("account"), version=version,
                                                    title=post.get("title", ""), body=post.get("body", ""))  # fmt: skip
    if post.get("kind") != "parameters":
        raise GovernanceRefused("a proposal changes parameters or deploys a model version", code="bad_input")
    changes = _changes(post)
    if not changes:
        raise GovernanceRefused("tick at least one parameter to change", code="bad_input")
    return services.prepare_parameter_proposal(user=user, proposer=post.get("account"), changes=changes,
                                               title=post.get("title", ""), body=post.get("body", ""))  # fmt: skip


@login_required
def proposal_new(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return _propose(request)
    if request.method != "GET":
        return HttpResponse("GET or POST", status=405, headers={"Allow": "GET, POST"})
    error = ""
    try:
        rules = ledger_governance.parameters()
    except chain.ChainError:
        rules, error = None, "The chain cannot be reached right now; try again soon."
    current = {}
    if rules is not None:
        current = {
            "contributors_bps": rules.contributors_bps, "builder_bps": rules.builder_bps,
            "min_quality_score": rules.min_quality_score, "deployment_gate": "on" if rules.deployment_gate else "off",
            "deployment_stake": rules.deployment_stake, "stake_slash_bps": rules.stake_slash_bps, "pool": rules.pool,
        }  # fmt: skip
    parameters = [
        {
            "name": name,
            "label": spec["label"],
            "fields": [(f, FIELD_LABELS.get(f, f), current.get(f, "")) for f in spec["fields"]],
        }
        for name, spec in services.PARAMETERS.items()
    ]
    context = {
        "parameters": parameters,
        "versions": ModelVersion.objects.filter(owner=request.user).order_by("-id")[:100],
        "wallets": _wallets(request.user),
        "stake": rules.deployment_stake if rules else None,
        "deployed": selectors.active_contracts() is not None,
        "threshold": settings.GOVERNANCE_PROPOSAL_THRESHOLD,
        "error": error,
    }
    return render(request, "governance/proposal_new.html", context)


def _propose(request: HttpRequest) -> JsonResponse:
    try:
        prepared = _prepared(request)
        if not request.POST.get("signature"):
            active = services.contracts()
            actions = zip(prepared.targets, prepared.values, prepared.calldatas, strict=True)
            words = [selectors.decode_action(active, t, v, c).words for t, v, c in actions]
            return _to_sign(prepared.typed_data, prepared.typed_data["message"]["proposer"], words=words,
                            stake=str(prepared.stake))  # fmt: skip
        row = services.propose(user=request.user, proposer=request.POST.get("account"), targets=prepared.targets,
                               values=prepared.values, calldatas=prepared.calldatas,
                               description=prepared.description, signature=request.POST["signature"])  # fmt: skip
    except GovernanceRefused as e:
        return _refused(e)
    return _relayed(row, redirect=reverse("governance:proposal_detail", args=[prepared.proposal_id]))


@require_POST
@login_required
def bond(request: HttpRequest, proposal_id: str) -> JsonResponse:
    proposal = _proposal_or_404(proposal_id)
    account = request.POST.get("account")
    try:
        if not request.POST.get("signature"):
            typed = services.stake_message(user=request.user, proposal=proposal, account=account)
            return _to_sign(typed, typed["message"]["owner"], {"deadline": str(typed["message"]["deadline"])})
        row = services.bond(user=request.user, proposal=proposal, account=account,
                            deadline=request.POST.get("deadline"), signature=request.POST["signature"])  # fmt: skip
    except GovernanceRefused as e:
        return _refused(e)
    return _relayed(row)


# Steps anyone signed in may take


STEPS = {"queue": services.queue, "execute": services.execute, "settle": services.settle}
STEP_WORDS = {"queue": "Queued in the timelock", "execute": "Executed", "settle": "Stake settled"}


@require_POST
@login_required
def step(request: HttpRequest, proposal_id: str, action: str) -> HttpResponse:
    """Queue, execute or settle: sent and followed to its receipt, then back to the proposal with what happened."""
    proposal = _proposal_or_404(proposal_id)
    if action not in STEPS:
        raise Http404("no such step")
    try:
        row = STEPS[action](user=request.user, proposal=proposal)
        row = ledger_governance.confirm(row=row, wait_seconds=CONFIRM_WAIT_SECONDS)
    except GovernanceRefused as e:
        return _detail(request, proposal, error=e.message, status=REFUSAL_STATUS.get(e.code, 400))
    if row.status == "failed":
        messages.error(request, f"The chain refused it: {row.last_error}")
    elif row.status == "confirmed":
        messages.success(request, f"{STEP_WORDS[action]}: transaction {row.tx_hash}.")
    else:
        messages.info(request, f"Sent ({row.tx_hash or 'waiting for the node'}); the page updates once it is mined.")
    return redirect("governance:proposal_detail", proposal_id=proposal.proposal_id)


def profile_section(request: HttpRequest, user: User) -> str:
    """The profile page's voting power (an ``accounts.hooks`` profile section)."""
    return render_to_string("governance/_profile_power.html", {"power": selectors.voting_power(user)}, request=request)
