"""Reads for the earnings page, the contribution impact page, the reward epochs and a run's reward split.

Amounts stay integers in the token's smallest unit; ``tokens()`` formats one for people (the test token has 18
decimals). A run's page is a capability held by whoever asked (its UUID is the link), so these pages name runs by
their number and date and link to a run only for the person who ran it and for staff.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from typing import Any

from django.db.models import Q, QuerySet, Sum
from django.db.models.functions import TruncDate

from datanets.models import Contribution, Datanet
from datanets.selectors import user_can_curate, user_can_view
from inference.models import InferenceRun
from ledger import merkle
from ledger.models import RewardClaim, RewardEpoch, RewardEpochEntry, RewardTransaction
from ledger.proofs import anchor_facts_for
from ledger.rewards_selectors import claim_facts, claim_proof, distributor_facts, latest_claims
from modelfactory.models import ModelVersion, ModelVersionParent
from modelfactory.selectors import versions_visible_to

from .models import RewardAccrual
from .services import user_label
from .split import REWARD_POLICIES, REWARD_POLICY_V1, RewardPolicy

TOKEN_DECIMALS = 18
TOKEN_SYMBOL = "OLTR"
RUN_ROWS = 50


def tokens(amount: int | Decimal, *, places: int = 6) -> str:
    """``amount`` (smallest units) in whole tokens, rounded down to ``places`` decimals, trailing zeros dropped."""
    value = Decimal(int(amount)) / (Decimal(10) ** TOKEN_DECIMALS)
    text = f"{value.quantize(Decimal(1).scaleb(-places), rounding='ROUND_DOWN'):f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text == "0" and int(amount) > 0:
        text = f"< {Decimal(1).scaleb(-places):f}"
    return f"{text} {TOKEN_SYMBOL}"


def _can_open_run(user: Any, run_user_id: int) -> bool:
    return user.is_authenticated and (user.pk == run_user_id or user.is_staff)


@dataclass
class EpochBalance:
    entry: RewardEpochEntry
    claim: RewardClaim | None

    @property
    def state(self) -> str:
        """publishing | claimable | claiming | claimed"""
        if self.claim is not None and self.claim.status == RewardTransaction.Status.CONFIRMED:
            return "claimed"
        if self.claim is not None and self.claim.status in (
            RewardTransaction.Status.PENDING,
            RewardTransaction.Status.SUBMITTED,
        ):
            return "claiming"
        if self.entry.epoch.status != RewardTransaction.Status.CONFIRMED:
            return "publishing"
        return "claimable"

    @property
    def failed_claim(self) -> RewardClaim | None:
        return self.claim if self.claim is not None and self.claim.status == RewardTransaction.Status.FAILED else None


@dataclass
class Earnings:
    total: int = 0
    accrued: int = 0  # not yet closed into an epoch
    publishing: int = 0  # closed into an epoch that is not on chain yet
    claimable: int = 0
    claiming: int = 0
    claimed: int = 0
    balances: list[EpochBalance] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    run_count: int = 0
    datanets: list[dict[str, Any]] = field(default_factory=list)
    days: list[dict[str, Any]] = field(default_factory=list)
    months: list[dict[str, Any]] = field(default_factory=list)

    def chart(self) -> dict[str, Any]:
        """Daily earnings and their running total, in whole tokens (floats: for drawing only)."""
        running = 0
        labels, daily, cumulative = [], [], []
        scale = 10**TOKEN_DECIMALS
        for day in self.days:
            running += day["amount"]
            labels.append(day["day"].isoformat())
            daily.append(day["amount"] / scale)
            cumulative.append(running / scale)
        return {"labels": labels, "daily": daily, "cumulative": cumulative, "symbol": TOKEN_SYMBOL}


def entries_of(*, user: Any) -> QuerySet[RewardEpochEntry]:
    """The user's leaves in reward epochs (closed to them, whatever wallet they were paid to), newest epoch first."""
    return (
        RewardEpochEntry.objects.filter(beneficiary=user_label(user.pk))
        .select_related("epoch", "epoch__contracts")
        .order_by("-epoch__number", "index")
    )


def epoch_balances_of(*, user: Any) -> list[EpochBalance]:
    """The user's entries in reward epochs, newest epoch first, each with its latest claim (if any)."""
    entries = list(entries_of(user=user))
    latest = latest_claims(entries)  # a failed try followed by a good one gives the good one
    return [EpochBalance(entry=entry, claim=latest.get(entry.id)) for entry in entries]


def claims_with_proofs(entries: list[RewardEpochEntry]) -> list[dict[str, Any]]:
    """Each entry as the claims API gives it: epoch, index, account, amount (a decimal string), its state on the
    earnings page, and its claim proof (kept after payment, with the claim transaction)."""
    latest = latest_claims(entries)
    trees: dict[int, merkle.StandardMerkleTree] = {}
    out = []
    for entry in entries:
        tree = trees.get(entry.epoch_id)
        if tree is None:
            tree = trees[entry.epoch_id] = merkle.StandardMerkleTree.load(entry.epoch.tree)
        claim = latest.get(entry.id)
        out.append(
            {
                "epoch": entry.epoch.number,
                "index": entry.index,
                "account": entry.account,
                "amount": str(int(entry.amount)),
                "state": EpochBalance(entry=entry, claim=claim).state,
                "proof": claim_proof(entry, claim=claim, tree=tree),
            }
        )
    return out


def run_accruals(*, run: Any) -> list[RewardAccrual]:
    """The parts of ``run``'s fee (none until its attribution is final), as its ancestry panel lists them: by
    recipient kind, largest first."""
    return list(
        RewardAccrual.objects.filter(run=run).select_related("user", "datanet").order_by("recipient_kind", "-amount")
    )


def split_rules(accruals: list[RewardAccrual]) -> RewardPolicy | None:
    """The reward policy ``accruals`` (one run's) were split by, with the basis points and where they were read as
    the accruals recorded them (``RewardAccrual.rules_*``); None without accruals. Accruals split before governance
    carry none: their policy version's fixed basis points (``split.REWARD_POLICIES``)."""
    if not accruals:
        return None
    a = accruals[0]
    policy = REWARD_POLICIES.get(a.policy_version, REWARD_POLICY_V1)
    if not a.rules_source:
        return policy
    return replace(
        policy,
        contributors_bps=int(a.contributors_bps or 0),
        builder_bps=int(a.builder_bps or 0),
        rules_source=a.rules_source,
        rules_address=a.rules_address,
        rules_block=a.rules_block,
    )


# Reward epochs, in the open


def epochs() -> QuerySet[RewardEpoch]:
    """Every reward epoch, newest first: they are public (their leaves pay addresses on a public chain)."""
    return RewardEpoch.objects.select_related("contracts", "document_anchor").order_by("-number")


def epochs_listed() -> QuerySet[RewardEpoch]:
    """``epochs()`` for lists: without each epoch's tree and document, which can hold 100,000 leaves each."""
    return epochs().defer("tree", "document")


def epoch_summary(epoch: RewardEpoch) -> dict[str, Any]:
    return {
        "number": epoch.number,
        "root": epoch.root,
        "total": str(int(epoch.total)),
        "status": epoch.status,
        "entry_count": epoch.entry_count,
        "created_at": epoch.created_at,
        "document_hash": epoch.document_hash or None,
        "chain": distributor_facts(epoch),
    }


def epoch_anchor_facts(epoch: RewardEpoch) -> dict[str, Any] | None:
    """Where the epoch document's hash is anchored (LineageRegistry, subject ``reward_epoch:<number>``)."""
    anchor = epoch.document_anchor
    if anchor is not None:
        anchor = type(anchor).objects.select_related("deployment").get(pk=anchor.pk)
    return anchor_facts_for(anchor, f"reward_epoch:{epoch.number}")


def epoch_full(epoch: RewardEpoch) -> dict[str, Any]:
    """The epoch as the API serves it: its summary, the whole tree (OpenZeppelin's standard-v1 dump), the document
    (each leaf with the accruals that make its amount), its hash and where that hash is anchored."""
    return {
        **epoch_summary(epoch),
        "tree": epoch.tree,
        "document": epoch.document,
        "document_anchor": epoch_anchor_facts(epoch),
    }


def epoch_leaves(*, epoch: RewardEpoch, user: Any) -> list[dict[str, Any]]:
    """The epoch's leaves for its public page: index, account, amount, claim state (and transaction), and the
    accruals behind each amount with links where ``user`` may follow them: a contribution whose impact page they may
    see, a model version they may see, and a run only for whoever asked it (and staff), since its link opens it."""
    entries = list(epoch.entries.order_by("index"))
    latest = latest_claims(entries)
    accruals_by_index = {leaf["index"]: leaf["accruals"] for leaf in (epoch.document or {}).get("leaves", [])}
    accruals = [a for group in accruals_by_index.values() for a in group]
    run_hashes = {a["run_hash"] for a in accruals if a.get("run_hash")}
    openable_runs: dict[str, Any] = {}
    if run_hashes and user.is_authenticated:
        runs = InferenceRun.objects.filter(run_hash__in=run_hashes)
        if not user.is_staff:
            runs = runs.filter(user=user)
        openable_runs = dict(runs.values_list("run_hash", "public_id"))
    version_ids = {a["version"] for a in accruals if a.get("version") is not None}
    visible_versions = set(versions_visible_to(user=user).filter(id__in=version_ids).values_list("id", flat=True))
    contributions = Contribution.objects.select_related("datanet").in_bulk(
        {a["contribution"] for a in accruals if a.get("contribution") is not None}
    )
    viewable = {cid for cid, c in contributions.items() if contribution_viewable_by(user=user, contribution=c)}
    leaves = []
    for entry in entries:
        rows = [
            {
                **a,
                "amount": int(a["amount"]),
                "run_public_id": openable_runs.get(a.get("run_hash")),
                "version_visible": a.get("version") in visible_versions,
                "contribution_visible": a.get("contribution") in viewable,
            }
            for a in accruals_by_index.get(entry.index, [])
        ]
        leaves.append(
            {
                "index": entry.index,
                "account": entry.account,
                "amount": int(entry.amount),
                "claim": claim_facts(latest.get(entry.id)),
                "accruals": rows,
            }
        )
    return leaves


def earnings_of(*, user: Any) -> Earnings:
    accruals = RewardAccrual.objects.filter(user=user)
    earnings = Earnings()
    earnings.total = int(accruals.aggregate(t=Sum("amount"))["t"] or 0)
    earnings.accrued = int(accruals.filter(epoch__isnull=True).aggregate(t=Sum("amount"))["t"] or 0)
    earnings.balances = epoch_balances_of(user=user)
    for balance in earnings.balances:
        setattr(earnings, balance.state, getattr(earnings, balance.state) + int(balance.entry.amount))

    per_run = (
        accruals.values("run_id", "run__user_id", "run__public_id", "run__created_at", "run__version__name")
        .annotate(amount=Sum("amount"))
        .order_by("-run__created_at", "-run_id")
    )
    earnings.run_count = per_run.count()
    earnings.runs = [
        {
            "id": row["run_id"],
            "public_id": row["run__public_id"] if _can_open_run(user, row["run__user_id"]) else None,
            "created_at": row["run__created_at"],
            "version": row["run__version__name"] or "base model",
            "amount": int(row["amount"]),
        }
        for row in per_run[:RUN_ROWS]
    ]
    per_datanet = (
        accruals.values("recipient_kind", "datanet_id", "datanet__name", "datanet__slug")
        .annotate(amount=Sum("amount"))
        .order_by("-amount")
    )
    earnings.datanets = [{**row, "amount": int(row["amount"])} for row in per_datanet]
    per_day = (
        accruals.annotate(day=TruncDate("created_at")).values("day").annotate(amount=Sum("amount")).order_by("day")
    )
    earnings.days = [{"day": row["day"], "amount": int(row["amount"])} for row in per_day]
    months: dict[date, int] = defaultdict(int)
    for row in earnings.days:
        months[row["day"].replace(day=1)] += row["amount"]
    earnings.months = [{"month": month, "amount": amount} for month, amount in sorted(months.items(), reverse=True)]
    return earnings


# The contribution impact page


def contribution_viewable_by(*, user: Any, contribution: Contribution) -> bool:
    """Who sees a contribution's impact: its contributor, the Datanet's owner and curators (and global curators),
    staff; anyone else (signed in or not) only an accepted contribution of a public Datanet, the same set whose
    records anyone can already read in that Datanet's snapshots."""
    if user.is_authenticated and (user.pk == contribution.contributor_id or user.is_staff):
        return True
    datanet = contribution.datanet
    if user_can_curate(user=user, datanet=datanet):
        return True
    return (
        datanet.visibility == Datanet.Visibility.PUBLIC
        and contribution.status == Contribution.Status.ACCEPTED
        and user_can_view(user=user, datanet=datanet)
    )


def _descendants(version_ids: set[int]) -> dict[int, int]:
    """Every version that continued from or merged one of ``version_ids``, mapped to the ancestor it came through."""
    inherited: dict[int, int] = {}
    frontier = {v: v for v in version_ids}
    while frontier:
        links = ModelVersionParent.objects.filter(parent_id__in=frontier).values_list("child_id", "parent_id")
        next_frontier = {}
        for child, parent in links:
            if child not in version_ids and child not in inherited:
                inherited[child] = frontier[parent]
                next_frontier[child] = frontier[parent]
        frontier = next_frontier
    return inherited


@dataclass
class Impact:
    versions: list[dict[str, Any]]
    hidden_versions: int
    runs: list[dict[str, Any]]
    run_count: int
    total: int


def contribution_impact(*, contribution: Contribution, user: Any) -> Impact:
    """From one contribution: the model versions trained on snapshots holding its records (directly, or inherited
    through a fork or merge), the runs that credited it, and what it earned."""
    direct = set(ModelVersion.objects.filter(snapshots__leaves__contribution=contribution).values_list("id", flat=True))
    inherited = _descendants(direct)
    all_ids = direct | set(inherited)
    visible = versions_visible_to(user=user).filter(id__in=all_ids).order_by("-created_at")
    snapshots_by_version: dict[int, list[str]] = defaultdict(list)
    for version_id, slug, number in (
        ModelVersion.snapshots.through.objects.filter(
            modelversion_id__in=direct, snapshot__leaves__contribution=contribution
        )
        .values_list("modelversion_id", "snapshot__datanet__slug", "snapshot__number")
        .distinct()
    ):
        snapshots_by_version[version_id].append(f"{slug} #{number}")
    versions = [
        {
            "version": version,
            "snapshots": sorted(snapshots_by_version.get(version.id, [])),
            "inherited_from": inherited.get(version.id),
        }
        for version in visible
    ]
    accruals: QuerySet[RewardAccrual] = RewardAccrual.objects.filter(contribution=contribution)
    per_run = (
        accruals.values("run_id", "run__user_id", "run__public_id", "run__created_at", "run__version__name", "epoch")
        .annotate(amount=Sum("amount"))
        .order_by("-run__created_at", "-run_id")
    )
    runs = [
        {
            "id": row["run_id"],
            "public_id": row["run__public_id"] if _can_open_run(user, row["run__user_id"]) else None,
            "created_at": row["run__created_at"],
            "version": row["run__version__name"] or "base model",
            "amount": int(row["amount"]),
            "epoch": row["epoch"],
        }
        for row in per_run[:RUN_ROWS]
    ]
    return Impact(
        versions=versions,
        hidden_versions=len(all_ids) - len(versions),
        runs=runs,
        run_count=per_run.count(),
        total=int(accruals.aggregate(t=Sum("amount"))["t"] or 0),
    )


def contributions_credited(*, user: Any) -> QuerySet[Contribution]:
    """The user's contributions that earned something, for links from the earnings page."""
    return (
        Contribution.objects.filter(contributor=user)
        .filter(Q(accruals__isnull=False))
        .distinct()
        .select_related("datanet")
    )
