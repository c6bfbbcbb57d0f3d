"""Reads for pages, the API and services: who may do what, what a user sees, and the numbers shown.

Every function that returns rows for a page runs a fixed number of queries whatever the amount of data
(annotations and subqueries, never a query per row); the tests hold them to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

from django.db.models import (
    Count,
    Exists,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, TruncDate

from accounts.models import Wallet
from ledger import proofs
from ledger.merkle import StandardMerkleTree

from .models import (
    Contribution,
    Datanet,
    Receipt,
    ReceiptBatch,
    Record,
    Revocation,
    RevokedRecord,
    Snapshot,
    SnapshotRecord,
)

SORTS = {
    "newest": ("-created_at", "-id"),
    "records": ("-record_count", "-created_at", "-id"),
    "contributors": ("-contributor_count", "-created_at", "-id"),
}


def _signed_in(user: Any) -> bool:
    return user is not None and getattr(user, "is_authenticated", False) and user.is_active


def _is_curator_of(user: Any, datanet: Datanet) -> bool:
    return datanet.curators.filter(pk=user.pk).exists()


def _is_member_of(user: Any, datanet: Datanet) -> bool:
    return datanet.members.filter(pk=user.pk).exists()


def user_can_manage(*, user: Any, datanet: Datanet) -> bool:
    """Change settings and curators: the owner, or a global curator."""
    return _signed_in(user) and (user.pk == datanet.owner_id or user.is_global_curator)


def user_can_curate(*, user: Any, datanet: Datanet) -> bool:
    """Review contributions, exclude records, freeze snapshots, manage members: owner, curators, global curators."""
    return _signed_in(user) and (user.pk == datanet.owner_id or user.is_global_curator or _is_curator_of(user, datanet))


def user_can_view(*, user: Any, datanet: Datanet) -> bool:
    """A public Datanet is seen by everyone, a private one by its owner, curators, members and global curators."""
    if datanet.visibility == Datanet.Visibility.PUBLIC:
        return True
    return _signed_in(user) and (user_can_curate(user=user, datanet=datanet) or _is_member_of(user, datanet))


def user_can_contribute(*, user: Any, datanet: Datanet) -> bool:
    """Signed in and able to see it; for a members-only Datanet, also a member, curator or owner."""
    if not _signed_in(user) or not user_can_view(user=user, datanet=datanet):
        return False
    if datanet.contribution_policy == Datanet.Policy.OPEN:
        return True
    return _is_member_of(user, datanet) or user_can_curate(user=user, datanet=datanet)


def user_can_train(*, user: Any, datanet: Datanet) -> bool:
    """Train a model on its snapshots: anyone signed in for a public Datanet; for a private one its owner, curators
    and global curators only. Members may see and contribute to a private Datanet, but a model trained on it carries
    its data to whoever may use that model, and that is the curators' call (docs/datanets.md)."""
    if not _signed_in(user):
        return False
    if datanet.visibility == Datanet.Visibility.PUBLIC:
        return True
    return user_can_curate(user=user, datanet=datanet)


def _curated_by(user: Any) -> Q:
    through = Datanet.curators.through
    return Q(owner=user) | Q(Exists(through.objects.filter(datanet_id=OuterRef("pk"), user_id=user.pk)))


def datanets_visible_to(*, user: Any) -> QuerySet[Datanet]:
    """The Datanets ``user`` may see (anonymous: the public ones)."""
    datanets = Datanet.objects.all()
    if not _signed_in(user):
        return datanets.filter(visibility=Datanet.Visibility.PUBLIC)
    if user.is_global_curator:
        return datanets
    members = Datanet.members.through
    return datanets.filter(
        Q(visibility=Datanet.Visibility.PUBLIC)
        | _curated_by(user)
        | Q(Exists(members.objects.filter(datanet_id=OuterRef("pk"), user_id=user.pk)))
    )


def datanets_trainable_by(*, user: Any) -> QuerySet[Datanet]:
    """The Datanets whose snapshots ``user`` may train on (``user_can_train``); none for anonymous users."""
    if not _signed_in(user):
        return Datanet.objects.none()
    if user.is_global_curator:
        return Datanet.objects.all()
    return Datanet.objects.filter(Q(visibility=Datanet.Visibility.PUBLIC) | _curated_by(user))


def datanets_curated_by(*, user: Any) -> QuerySet[Datanet]:
    if not _signed_in(user):
        return Datanet.objects.none()
    if user.is_global_curator:
        return Datanet.objects.all()
    return Datanet.objects.filter(_curated_by(user))


def _count_subquery(queryset: QuerySet[Any], group: str, expression: Any) -> Coalesce:
    counted = queryset.order_by().values(group).annotate(n=expression).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def with_numbers(datanets: QuerySet[Datanet]) -> QuerySet[Datanet]:
    """Annotate ``record_count`` (accepted, not excluded), ``word_count`` and ``contributor_count`` (with an accepted
    contribution) on each Datanet: one query for the whole list."""
    live = Record.objects.filter(
        datanet=OuterRef("pk"), contribution__status=Contribution.Status.ACCEPTED, excluded=False
    )
    accepted = Contribution.objects.filter(datanet=OuterRef("pk"), status=Contribution.Status.ACCEPTED)
    return datanets.annotate(
        record_count=_count_subquery(live, "datanet", Count("id")),
        word_count=_count_subquery(live, "datanet", Sum("words")),
        contributor_count=_count_subquery(accepted, "datanet", Count("contributor", distinct=True)),
    )


def datanet_list(
    *,
    user: Any,
    search: str = "",
    domain: str = "",
    record_type: str = "",
    licence: str = "",
    sort: str = "newest",
) -> QuerySet[Datanet]:
    """The browse list: visible Datanets matching the search (name, summary, tags) and filters, with their numbers,
    sorted by ``newest``, ``records`` or ``contributors``."""
    datanets = with_numbers(datanets_visible_to(user=user)).select_related("owner")
    for word in search.split():
        datanets = datanets.filter(
            Q(name__icontains=word) | Q(summary__icontains=word) | Q(tags__icontains=word.lower())
        )
    if domain:
        datanets = datanets.filter(domain=domain.lower())
    if record_type:
        datanets = datanets.filter(record_type=record_type)
    if licence:
        datanets = datanets.filter(licence=licence)
    return datanets.order_by(*SORTS.get(sort, SORTS["newest"]))


def datanet_stats(*, datanet: Datanet) -> dict[str, int]:
    """The Datanet's numbers: ``records``/``words``/``contributors`` count accepted, non-excluded data; the
    contribution counts are by status. Two queries."""
    records = Record.objects.filter(
        datanet=datanet, contribution__status=Contribution.Status.ACCEPTED, excluded=False
    ).aggregate(
        records=Count("id"),
        words=Coalesce(Sum("words"), 0),
        contributors=Count("contribution__contributor", distinct=True),
    )
    statuses = datanet.contributions.aggregate(
        **{status: Count("id", filter=Q(status=status)) for status in Contribution.Status.values}
    )
    return {**records, **statuses}


def contributions_per_day(*, datanet: Datanet) -> list[tuple[date, int]]:
    """Contributions submitted per UTC day (withdrawn ones left out), oldest first: the detail page's chart."""
    rows = (
        datanet.contributions.exclude(status=Contribution.Status.WITHDRAWN)
        .annotate(day=TruncDate("submitted_at"))
        .order_by("day")
        .values("day")
        .annotate(n=Count("id"))
        .values_list("day", "n")
    )
    return list(rows)


def contributions_for_curator(*, user: Any, datanet: Datanet | None = None) -> QuerySet[Contribution]:
    """Pending contributions across the Datanets ``user`` curates (or of ``datanet`` alone), oldest first."""
    contributions = Contribution.objects.filter(
        status=Contribution.Status.PENDING, datanet__in=datanets_curated_by(user=user).values("pk")
    )
    if datanet is not None:
        contributions = contributions.filter(datanet=datanet)
    return contributions.select_related("datanet", "contributor").order_by("submitted_at", "id")


def curation_queues(*, user: Any) -> QuerySet[Datanet]:
    """The Datanets ``user`` curates (owner, curator, or every one for a global curator), each with
    ``pending_count``: most waiting first, then by name; one query for the whole list."""
    pending = Contribution.objects.filter(datanet=OuterRef("pk"), status=Contribution.Status.PENDING)
    return (
        datanets_curated_by(user=user)
        .annotate(pending_count=_count_subquery(pending, "datanet", Count("id")))
        .order_by("-pending_count", "name", "id")
    )


def curation_waiting(*, user: Any) -> dict[str, int]:
    """``{"datanets": how many Datanets user curates, "pending": contributions waiting in them}``: one query, none
    for someone signed out (the navigation asks on every page)."""
    if not _signed_in(user):
        return {"datanets": 0, "pending": 0}
    return datanets_curated_by(user=user).aggregate(
        datanets=Count("id", distinct=True),
        pending=Count("contributions", filter=Q(contributions__status=Contribution.Status.PENDING)),
    )


def contributions_of(*, user: Any) -> QuerySet[Contribution]:
    """``user``'s own contributions, newest first, with their Datanet and reviewer."""
    if not _signed_in(user):
        return Contribution.objects.none()
    return (
        Contribution.objects.filter(contributor=user)
        .select_related("datanet", "reviewer")
        .order_by("-submitted_at", "-id")
    )


def contribution_snapshots(*, contribution: Contribution) -> QuerySet[Snapshot]:
    """The snapshots holding at least one record of ``contribution``."""
    return (
        Snapshot.objects.filter(
            Exists(SnapshotRecord.objects.filter(snapshot=OuterRef("pk"), contribution=contribution))
        )
        .select_related("anchor")
        .order_by("-number")
    )


def snapshots_of(*, datanet: Datanet) -> QuerySet[Snapshot]:
    return datanet.snapshots.select_related("anchor", "anchor__deployment", "created_by").order_by("-number")


def models_trained_on(*, datanet: Datanet, limit: int = 20) -> list[dict[str, Any]]:
    """Published model versions trained on a snapshot of ``datanet``, newest first, each with the snapshot numbers
    it used: one query. Reached through the snapshots' reverse relation, so this app imports nothing from
    modelfactory (which depends on it)."""
    through = Snapshot.model_versions.through
    rows = (
        through.objects.filter(snapshot__datanet=datanet, modelversion__published=True)
        .order_by("-modelversion__created_at", "-modelversion_id", "snapshot__number")
        .values_list("modelversion_id", "modelversion__name", "modelversion__base_model__name", "snapshot__number")
    )
    versions: dict[int, dict[str, Any]] = {}
    for version_id, name, base, number in rows:
        if version_id not in versions:
            if len(versions) == limit:
                break
            versions[version_id] = {"id": version_id, "name": name, "base": base, "snapshots": []}
        versions[version_id]["snapshots"].append(number)
    return list(versions.values())


def snapshot_diff(*, snapshot: Snapshot) -> dict[str, Any]:
    """What changed since the previous snapshot: ``added``/``removed`` record counts and the records as lazy
    querysets (``added_records``, ``removed_records``). Without a previous snapshot everything is added."""
    previous_id = snapshot.previous_id
    added = SnapshotRecord.objects.filter(snapshot=snapshot)
    removed = SnapshotRecord.objects.none()
    if previous_id is not None:
        added = added.exclude(
            Exists(SnapshotRecord.objects.filter(snapshot_id=previous_id, record_id=OuterRef("record_id")))
        )
        removed = SnapshotRecord.objects.filter(snapshot_id=previous_id).exclude(
            Exists(SnapshotRecord.objects.filter(snapshot=snapshot, record_id=OuterRef("record_id")))
        )
    return {
        "previous": snapshot.previous.number if previous_id is not None else None,
        "added": added.count(),
        "removed": removed.count() if previous_id is not None else 0,
        "added_records": Record.objects.filter(pk__in=added.values("record_id")),
        "removed_records": Record.objects.filter(pk__in=removed.values("record_id")),
    }


def leaderboard(*, datanet: Datanet | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Contributors ranked by accepted records (not excluded), with accepted/rejected/pending contribution counts and
    ``acceptance_rate`` = accepted / (accepted + rejected), None before any decision. One query.

    The overall board (no ``datanet``) counts public Datanets only: it is the same for every viewer, so it must not
    reveal activity in private ones."""
    contributions = Contribution.objects.exclude(status=Contribution.Status.WITHDRAWN)
    if datanet is not None:
        contributions = contributions.filter(datanet=datanet)
    else:
        contributions = contributions.filter(datanet__visibility=Datanet.Visibility.PUBLIC)
    rows = (
        contributions.order_by()
        .values("contributor_id", "contributor__username")
        .annotate(
            accepted=Count("id", filter=Q(status=Contribution.Status.ACCEPTED)),
            rejected=Count("id", filter=Q(status=Contribution.Status.REJECTED)),
            pending=Count("id", filter=Q(status=Contribution.Status.PENDING)),
            accepted_records=Coalesce(
                Sum(F("record_count") - F("excluded_count"), filter=Q(status=Contribution.Status.ACCEPTED)), 0
            ),
        )
        .order_by("-accepted_records", "-accepted", "contributor__username")[:limit]
    )
    board = []
    for row in rows:
        decided = row["accepted"] + row["rejected"]
        board.append(
            {
                "user_id": row["contributor_id"],
                "username": row["contributor__username"],
                "accepted": row["accepted"],
                "rejected": row["rejected"],
                "pending": row["pending"],
                "accepted_records": row["accepted_records"],
                "acceptance_rate": row["accepted"] / decided if decided else None,
            }
        )
    return board


def primary_addresses(*, user_ids: Iterable[int] | QuerySet[Any]) -> dict[int, str]:
    """Each user's primary (most recently linked) wallet address; users without a wallet are absent. One query."""
    addresses: dict[int, str] = {}
    for user_id, address in (
        Wallet.objects.filter(user_id__in=user_ids)
        .order_by("user_id", "-linked_at", "-id")
        .values_list("user_id", "address")
    ):
        addresses.setdefault(user_id, address)
    return addresses


def _receipts() -> QuerySet[Receipt]:
    # a batch's tree is read once per batch by receipt_proof, not once per receipt
    return Receipt.objects.select_related("batch__anchor__deployment").defer("batch__tree").order_by("id")


def receipts_of_datanet(*, datanet: Datanet) -> QuerySet[Receipt]:
    """Every receipt of the Datanet's contributions (withdrawn ones' too), oldest first."""
    return _receipts().filter(datanet=datanet)


def receipts_of_contribution(*, contribution: Contribution) -> QuerySet[Receipt]:
    """The contribution's receipts: its submission's, then each curation decision's, oldest first."""
    return _receipts().filter(contribution=contribution)


def receipt_proof(receipt: Receipt, *, trees: dict[int, StandardMerkleTree] | None = None) -> dict[str, Any] | None:
    """The receipt's inclusion proof in its batch (``ledger.proofs.tree_proof``: artifact ``contribution_receipt``
    or ``curation_receipt``, leafEncoding ["bytes32"], value [document_hash], plus ``batch``), or None until it is
    sealed. ``trees`` caches loaded batch trees by batch id across calls (a page of receipts shares a few)."""
    if receipt.batch_id is None:
        return None
    trees = {} if trees is None else trees
    tree = trees.get(receipt.batch_id)
    if tree is None:
        tree = StandardMerkleTree.load(ReceiptBatch.objects.values_list("tree", flat=True).get(pk=receipt.batch_id))
        trees[receipt.batch_id] = tree
    batch = receipt.batch
    return proofs.tree_proof(
        tree,
        tree.index_of((receipt.document_hash,)),
        artifact=f"{receipt.kind}_receipt",
        anchor=batch.anchor,
        batch={"id": batch.pk, "size": batch.size, "sealed_at": batch.sealed_at.isoformat().replace("+00:00", "Z")},
    )


# Revoked records in snapshots (issue 17): what the apps above need to refuse or replace a snapshot


def snapshots_revoked_counts(*, snapshot_ids: Iterable[int]) -> dict[int, int]:
    """How many revoked records each of these snapshots holds, by snapshot id (a snapshot that holds none is absent):
    one query, read from the revoked records' side (few) through the leaves' record index."""
    ids = list(snapshot_ids)
    if not ids:
        return {}
    rows = (
        SnapshotRecord.objects.filter(snapshot_id__in=ids, record__revoked__isnull=False)
        .order_by()
        .values("snapshot_id")
        .annotate(n=Count("record_id", distinct=True))
    )
    return {row["snapshot_id"]: row["n"] for row in rows}


def snapshot_without_revoked(*, datanet_id: int) -> Snapshot | None:
    """The Datanet's newest snapshot when it holds no revoked record (the one to train on), else None: a newer
    snapshot has to be frozen first (an older one that happens to hold none would leave out what was accepted
    since)."""
    newest = Snapshot.objects.select_related("datanet").filter(datanet_id=datanet_id).order_by("-number").first()
    if newest is None or RevokedRecord.objects.filter(record__snapshot_leaves__snapshot=newest).exists():
        return None
    return newest


# Revocations (datanets/revocation.py)


def revocations_of_contribution(*, contribution: Contribution) -> QuerySet[Revocation]:
    """A contribution's revocations, newest first, with who made and who erased them."""
    return Revocation.objects.filter(contribution=contribution).select_related("actor", "erased_by", "datanet")


def revocations_of_datanet(*, datanet: Datanet) -> QuerySet[Revocation]:
    """Every revocation of a Datanet's records, newest first (for its curators)."""
    return Revocation.objects.filter(datanet=datanet).select_related(
        "actor", "erased_by", "datanet", "contribution__contributor"
    )


def revocations_of_contributor(*, user: Any) -> QuerySet[Revocation]:
    """The revocations of ``user``'s contributions, whoever made them, newest first."""
    return Revocation.objects.filter(contribution__contributor_id=user.pk).select_related(
        "actor", "erased_by", "datanet", "contribution__contributor"
    )


def revocation_states(*, contribution_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Per contribution: how many of its records were revoked and erased, and the kinds of its revocations, in two
    queries whatever the number of contributions."""
    states: dict[int, dict[str, Any]] = {}
    rows = (
        RevokedRecord.objects.filter(record__contribution_id__in=list(contribution_ids))
        .values("record__contribution_id")
        .annotate(revoked=Count("pk"), erased=Count("pk", filter=Q(erased=True)))
        .order_by()
    )
    for row in rows:
        states[row["record__contribution_id"]] = {"revoked": row["revoked"], "erased": row["erased"], "kinds": []}
    for contribution_id, kind in (
        Revocation.objects.filter(contribution_id__in=list(states)).values_list("contribution_id", "kind").distinct()
    ):
        states[contribution_id]["kinds"].append(kind)
    for state in states.values():
        state["kinds"].sort()
    return states
