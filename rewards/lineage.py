"""Reverse lineage (issue 17, item 1): from a record, a contribution or a contributor to everything it reached: the
snapshots that hold it, the model versions trained on those snapshots (directly, or through a continuation or a
merge), the answers attributed to it and the rewards it earned.

Two layers. ``reach(scope)`` knows nothing of viewers: given which rows are the subject's (a ``Scope``, e.g.
``scope_of_records(records)``), it returns the snapshots and versions reached with their weights, and the answers and
accruals as querysets (three queries, whatever the numbers); revocation reuses it to find what a revoked record
touched. ``lineage_page(...)`` is what the page and the API show a viewer: the reach, the versions the viewer may
see, and one keyset page each of answers and accruals (newest first, ``id < before``, never OFFSET), in a fixed
number of queries whatever the number of answers.

The weight of a version (docs/decisions.md, "Reverse lineage"): how much of the version's training carries the
subject. Its own part is the subject's share of the records it trained on (the subject's records in its snapshots
over all the records of its snapshots). Each parent edge adds the edge's weight times the parent's weight: a merge
edge weighs what the merge recipe gave that parent, a continuation weighs 1 (it starts from the whole parent). Along
one path that is the product of the merge weights times the share of the snapshot the path starts from; a version
reached by several paths sums them. It is an indicator of exposure, not a probability: a continuation that trains
again on data its parent held counts it twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from django.db import connection
from django.db.models import Count, Q, QuerySet, Sum

from accounts.models import User
from attribution.models import RecordAttribution, RunAttribution
from datanets.models import Contribution, Datanet, Record, SnapshotRecord
from datanets.selectors import user_can_curate
from modelfactory.models import ModelVersion, ModelVersionParent
from modelfactory.selectors import versions_visible_to

from .models import RewardAccrual
from .selectors import contribution_viewable_by

PAGE_SIZE = 50
MAX_CURSOR = 2**63 - 1


@dataclass(frozen=True)
class Scope:
    """Which rows are the subject's, as a condition on each table that names records or contributions: snapshot
    leaves (``SnapshotRecord``), per-record credits (``RecordAttribution``) and contributor accruals
    (``RewardAccrual``)."""

    leaves: Q
    credits: Q
    accruals: Q


def scope_of_records(records: QuerySet[Record]) -> Scope:
    """Any set of records. Accruals are per contribution (the split pays contributions, not records): a record's are
    its contribution's accruals on the runs that credited the record."""
    ids = records.values("pk")
    credited_runs = RecordAttribution.objects.filter(record__in=ids).values("run_attribution__run_id")
    return Scope(
        leaves=Q(record__in=ids),
        credits=Q(record__in=ids),
        accruals=Q(
            recipient_kind=RewardAccrual.Kind.CONTRIBUTOR,
            contribution__in=records.values("contribution_id"),
            run__in=credited_runs,
        ),
    )


def scope_of_record(record: Record) -> Scope:
    """One record (the same rows as ``scope_of_records`` of it, by the direct indexes)."""
    credited_runs = RecordAttribution.objects.filter(record_id=record.pk).values("run_attribution__run_id")
    return Scope(
        leaves=Q(record_id=record.pk),
        credits=Q(record_id=record.pk),
        accruals=Q(
            recipient_kind=RewardAccrual.Kind.CONTRIBUTOR, contribution_id=record.contribution_id, run__in=credited_runs
        ),
    )


def scope_of_contribution(contribution: Contribution) -> Scope:
    return Scope(
        leaves=Q(contribution_id=contribution.pk),
        credits=Q(contribution_id=contribution.pk),
        accruals=Q(recipient_kind=RewardAccrual.Kind.CONTRIBUTOR, contribution_id=contribution.pk),
    )


def scope_of_contributor(user: Any, *, public_only: bool) -> Scope:
    """Everything ``user`` contributed; with ``public_only``, only what went into public Datanets (what anyone can
    already read in their snapshots)."""
    public = Datanet.Visibility.PUBLIC
    leaves = Q(contribution__contributor_id=user.pk)
    credits = Q(contribution__contributor_id=user.pk)
    accruals = Q(recipient_kind=RewardAccrual.Kind.CONTRIBUTOR, user_id=user.pk)
    if public_only:
        leaves &= Q(contribution__datanet__visibility=public)
        credits &= Q(contribution__datanet__visibility=public)
        accruals &= Q(datanet__visibility=public)
    return Scope(leaves=leaves, credits=credits, accruals=accruals)


@dataclass
class SnapshotReach:
    id: int
    datanet_slug: str
    datanet_name: str
    number: int
    record_count: int
    held: int  # the subject's records in it

    @property
    def share(self) -> Fraction:
        return Fraction(self.held, self.record_count)

    @property
    def percent(self) -> str:
        return _percent(float(self.share))


@dataclass
class Route:
    """How a version holds the subject: trained on snapshots that hold it (``kind="snapshots"``), or built on a
    parent that does (``kind="parent"``: its relation, the edge weight, and the parent's weight)."""

    kind: str
    weight: float
    snapshot_ids: list[int] = field(default_factory=list)
    parent_id: int | None = None
    relation: str = ""
    edge_weight: float = 1.0


def _percent(value: float) -> str:
    return f"{100 * value:.2f} %" if value >= 0.0001 or value == 0 else "< 0.01 %"


@dataclass
class VersionReach:
    id: int
    share: Fraction  # the subject's share of the records it trained on itself (0 when it holds it only by a parent)
    routes: list[Route]
    weight: float  # own share plus, for each parent edge, edge weight x parent's weight
    held: int = 0  # the subject's records in the snapshots it trained on
    trained_records: int = 0  # all the records of the snapshots it trained on


@dataclass
class Reach:
    """What a scope reached. ``versions`` holds every version, seen or not; whoever shows it filters."""

    scope: Scope
    snapshots: list[SnapshotReach]
    versions: dict[int, VersionReach]

    def credits(self) -> QuerySet[RecordAttribution]:
        return RecordAttribution.objects.filter(self.scope.credits)

    def answers(self) -> QuerySet[RunAttribution]:
        """The attributions (one per answer) that credited the subject."""
        return RunAttribution.objects.filter(id__in=self.credits().values("run_attribution_id"))

    def accruals(self) -> QuerySet[RewardAccrual]:
        """The contributor accruals the subject earned."""
        return RewardAccrual.objects.filter(self.scope.accruals)


def _snapshots(scope: Scope) -> list[SnapshotReach]:
    rows = (
        SnapshotRecord.objects.filter(scope.leaves)
        .values(
            "snapshot_id", "snapshot__datanet__slug", "snapshot__datanet__name", "snapshot__number",
            "snapshot__record_count",
        )
        .annotate(held=Count("id"))
        .order_by("snapshot__datanet__name", "snapshot__number", "snapshot_id")
    )  # fmt: skip
    return [
        SnapshotReach(
            id=r["snapshot_id"],
            datanet_slug=r["snapshot__datanet__slug"],
            datanet_name=r["snapshot__datanet__name"],
            number=r["snapshot__number"],
            record_count=r["snapshot__record_count"],
            held=r["held"],
        )
        for r in rows
    ]


def _edges_below(version_ids: list[int]) -> list[tuple[int, int, str, float]]:
    """Every lineage edge (child, parent, relation, weight) whose parent descends from ``version_ids`` (or is one):
    one recursive query. UNION visits a version reached by two paths once."""
    if not version_ids:
        return []
    versions = connection.ops.quote_name(ModelVersion._meta.db_table)
    edges = connection.ops.quote_name(ModelVersionParent._meta.db_table)
    marks = ", ".join(["%s"] * len(version_ids))
    # only table names from the models' metadata go into the text; the ids are query parameters
    sql = (
        f"WITH RECURSIVE below(id) AS (SELECT id FROM {versions} WHERE id IN ({marks}) UNION "  # noqa: S608
        f"SELECT e.child_id FROM {edges} e JOIN below b ON e.parent_id = b.id) "
        f"SELECT e.child_id, e.parent_id, e.relation, e.weight FROM {edges} e JOIN below b ON e.parent_id = b.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, version_ids)
        return [(int(c), int(p), str(r), float(w)) for c, p, r, w in cursor.fetchall()]


def reach(scope: Scope) -> Reach:
    """The snapshots holding the scope's records and the versions they reached, with weights (module docstring), in
    three queries: the snapshots, every snapshot of the versions trained on them, the lineage edges below those."""
    snapshots = _snapshots(scope)
    held = {s.id: s.held for s in snapshots}
    used = ModelVersion.snapshots.through.objects.filter(
        modelversion_id__in=ModelVersion.snapshots.through.objects.filter(
            snapshot_id__in=SnapshotRecord.objects.filter(scope.leaves).values("snapshot_id")
        ).values("modelversion_id")
    ).values_list("modelversion_id", "snapshot_id", "snapshot__record_count")
    trained: dict[int, list[int]] = {}
    totals: dict[int, int] = {}
    for version_id, snapshot_id, record_count in used:
        totals[version_id] = totals.get(version_id, 0) + record_count
        if snapshot_id in held:
            trained.setdefault(version_id, []).append(snapshot_id)
    versions: dict[int, VersionReach] = {}
    for version_id, snapshot_ids in trained.items():
        mine = sum(held[s] for s in snapshot_ids)
        share = Fraction(mine, totals[version_id])
        route = Route(kind="snapshots", weight=float(share), snapshot_ids=sorted(snapshot_ids))
        versions[version_id] = VersionReach(
            id=version_id, share=share, held=mine, trained_records=totals[version_id], routes=[route],
            weight=float(share),
        )  # fmt: skip
    parents_of: dict[int, list[tuple[int, str, float]]] = {}
    for child, parent, relation, weight in _edges_below(sorted(versions)):
        parents_of.setdefault(child, []).append((parent, relation, weight))
    # a parent is always older than its child (it existed when the child's job was launched): id order is a
    # topological order, so each parent's weight is complete before its children read it
    for child in sorted(set(parents_of) | set(versions)):
        for parent, relation, edge_weight in sorted(parents_of.get(child, [])):
            if parent not in versions:
                continue
            node = versions.setdefault(child, VersionReach(id=child, share=Fraction(0), routes=[], weight=0.0))
            part = edge_weight * versions[parent].weight
            node.routes.append(
                Route(kind="parent", weight=part, parent_id=parent, relation=relation, edge_weight=edge_weight)
            )
            node.weight += part
    return Reach(scope=scope, snapshots=snapshots, versions=versions)


def reach_of_records(records: QuerySet[Record]) -> Reach:
    """What ``records`` reached: snapshots, versions, answers, accruals (for revocation)."""
    return reach(scope_of_records(records))


# What a viewer sees


@dataclass(frozen=True)
class Subject:
    """Where the lineage starts. ``public_only``: the viewer sees only what went into public Datanets."""

    kind: str  # "record" | "contribution" | "contributor"
    record: Record | None = None
    contribution: Contribution | None = None
    contributor: Any = None
    public_only: bool = False

    @property
    def scope(self) -> Scope:
        if self.record is not None:
            return scope_of_record(self.record)
        if self.contribution is not None:
            return scope_of_contribution(self.contribution)
        return scope_of_contributor(self.contributor, public_only=self.public_only)

    @property
    def label(self) -> str:
        if self.record is not None:
            return f"record #{self.record.pk}"
        if self.contribution is not None:
            return f"contribution #{self.contribution.pk}"
        return f"{self.contributor.get_username()}'s contributions"


def _privileged(user: Any, contribution: Contribution) -> bool:
    if not user.is_authenticated:
        return False
    own = user.pk == contribution.contributor_id or user.is_staff
    return own or user_can_curate(user=user, datanet=contribution.datanet)


def record_subject(*, user: Any, record_id: int) -> Subject | None:
    """The record as a subject, or None when ``user`` may not see it: its contribution's rule (``rewards.selectors.
    contribution_viewable_by``) and, as in the record viewer, an excluded record only for its contributor, the
    Datanet's curators and staff."""
    record = Record.objects.select_related("contribution__datanet", "contribution__contributor").filter(pk=record_id)
    found = record.first()
    if found is None or not contribution_viewable_by(user=user, contribution=found.contribution):
        return None
    if found.excluded and not _privileged(user, found.contribution):
        return None
    return Subject(kind="record", record=found, contribution=found.contribution)


def contribution_subject(*, user: Any, contribution_id: int) -> Subject | None:
    contribution = Contribution.objects.select_related("datanet", "contributor").filter(pk=contribution_id).first()
    if contribution is None or not contribution_viewable_by(user=user, contribution=contribution):
        return None
    return Subject(kind="contribution", contribution=contribution)


def contributor_subject(*, user: Any, username: str) -> Subject | None:
    """A contributor as a subject: everything for themselves and staff, what went into public Datanets for anyone
    else (so a private Datanet's contributions stay unconfirmed)."""
    contributor = User.objects.filter(username=username, is_active=True).first()
    if contributor is None:
        return None
    own = user.is_authenticated and (user.pk == contributor.pk or user.is_staff)
    return Subject(kind="contributor", contributor=contributor, public_only=not own)


@dataclass
class Answer:
    run_attribution_id: int
    run_id: int
    run_public_id: Any  # the run's UUID, only for whoever asked and staff (it opens the question and answer)
    created_at: Any
    version_id: int | None
    version_name: str  # "" when the viewer may not see the version
    share: float  # the subject's share of the answer (sum of its records' shares)
    records: int  # the subject's records credited in it

    @property
    def percent(self) -> str:
        return _percent(self.share)


@dataclass
class Earned:
    id: int
    run_id: int
    run_public_id: Any
    amount: int
    share: str
    epoch: int | None
    contribution_id: int | None
    datanet_slug: str
    created_at: Any


@dataclass
class KeysetPage:
    items: list[Any]
    next_before: int | None  # the cursor of the next (older) page, None on the last


def _keyset(rows: Any, key: str, *, before: int | None, size: int) -> tuple[list[dict[str, Any]], bool]:
    """One keyset page of ``rows`` (a ``values()`` query), newest ``key`` first from below ``before``: at most ``size``
    rows, and whether more follow."""
    if before is not None:
        rows = rows.filter(**{f"{key}__lt": before})
    found = list(rows.order_by(f"-{key}")[: size + 1])
    return found[:size], len(found) > size


@dataclass
class LineagePage:
    subject: Subject
    snapshots: list[SnapshotReach]
    versions: list[tuple[ModelVersion, VersionReach]]  # the ones the viewer may see, heaviest first
    hidden_versions: int
    answers: KeysetPage
    answer_count: int
    accruals: KeysetPage
    accrual_count: int
    earned: int


def _can_open_run(user: Any, run_user_id: int) -> bool:
    return user.is_authenticated and (user.pk == run_user_id or user.is_staff)


def _answers_page(
    reach_: Reach, *, user: Any, names: dict[int, str], before: int | None, size: int
) -> tuple[KeysetPage, int]:
    def _can_open(run_user_id: int) -> bool:
        return _can_open_run(user, run_user_id)

    credits = reach_.credits()
    rows = credits.values(
        "run_attribution_id", "run_attribution__run_id", "run_attribution__run__public_id",
        "run_attribution__run__user_id", "run_attribution__run__created_at", "run_attribution__run__version_id",
    ).annotate(subject_share=Sum("share_float"), subject_records=Count("id"))  # fmt: skip
    found, more = _keyset(rows, "run_attribution_id", before=before, size=size)
    answers = [
        Answer(
            run_attribution_id=r["run_attribution_id"],
            run_id=r["run_attribution__run_id"],
            run_public_id=r["run_attribution__run__public_id"]
            if _can_open(r["run_attribution__run__user_id"])
            else None,
            created_at=r["run_attribution__run__created_at"],
            version_id=r["run_attribution__run__version_id"],
            version_name=names.get(r["run_attribution__run__version_id"], ""),
            share=float(r["subject_share"] or 0),
            records=r["subject_records"],
        )
        for r in found
    ]
    count = credits.values("run_attribution_id").distinct().count()
    return KeysetPage(answers, answers[-1].run_attribution_id if more else None), count


def _accruals_page(reach_: Reach, *, user: Any, before: int | None, size: int) -> tuple[KeysetPage, int, int]:
    accruals = reach_.accruals()
    rows = accruals.values(
        "id", "run_id", "run__public_id", "run__user_id", "amount", "share", "epoch", "contribution_id",
        "datanet__slug", "created_at",
    )  # fmt: skip
    found, more = _keyset(rows, "id", before=before, size=size)
    items = [
        Earned(
            id=r["id"],
            run_id=r["run_id"],
            run_public_id=r["run__public_id"] if _can_open_run(user, r["run__user_id"]) else None,
            amount=int(r["amount"]),
            share=r["share"],
            epoch=r["epoch"],
            contribution_id=r["contribution_id"],
            datanet_slug=r["datanet__slug"] or "",
            created_at=r["created_at"],
        )
        for r in found
    ]
    totals = accruals.aggregate(count=Count("id"), total=Sum("amount"))
    return KeysetPage(items, items[-1].id if more else None), totals["count"], int(totals["total"] or 0)


def lineage_page(
    *,
    subject: Subject,
    user: Any,
    answers_before: int | None = None,
    accruals_before: int | None = None,
    size: int = PAGE_SIZE,
) -> LineagePage:
    """Everything ``subject`` reached as ``user`` may see it, with one keyset page of answers and one of accruals:
    eight queries whatever the numbers (the reach's three, the visible versions, a page and a count of answers, a
    page and a total of accruals). Versions ``user`` may not see are counted, not named; so are the answers'."""
    reached = reach(subject.scope)
    visible = list(versions_visible_to(user=user).filter(id__in=list(reached.versions)))
    names = {v.pk: v.name for v in visible}
    versions = sorted(((v, reached.versions[v.pk]) for v in visible), key=lambda p: (-p[1].weight, p[0].pk))
    answers, answer_count = _answers_page(reached, user=user, names=names, before=answers_before, size=size)
    accruals, accrual_count, earned = _accruals_page(reached, user=user, before=accruals_before, size=size)
    return LineagePage(
        subject=subject,
        snapshots=reached.snapshots,
        versions=versions,
        hidden_versions=len(reached.versions) - len(visible),
        answers=answers,
        answer_count=answer_count,
        accruals=accruals,
        accrual_count=accrual_count,
        earned=earned,
    )


def cursor(text: str | None) -> int | None:
    """A page cursor from a query string: None when absent; ValueError (with a message for people) when it is not
    a positive whole number that an id column can hold."""
    if text is None or text == "":
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or not 0 < int(text) <= MAX_CURSOR:
        raise ValueError("a page cursor is a positive whole number (the id the previous page ended on)")
    return int(text)
