"""The lineage half of an answer's ancestry: where the model that answered came from, and where that is anchored.

``ancestry_of`` reads the adapter path (the base model, every ancestor version reached through continued-from and
merged-from edges, with the merge weights), the snapshots and Datanets those versions trained on, and every anchor
involved, in a fixed number of queries whatever the depth of the lineage: one recursive query finds the ancestors,
then each kind of row is fetched once for all of them.

The on-chain checks behind the verify links (``manifest_check``, ``snapshot_check``, ``run_inclusion_check``) ask
the chain through ``ledger.chain`` (imported inside the functions, so that importing this module costs nothing) and
raise ``ledger.chain.ChainError`` when it can't be asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from django.db import connection
from django.db.models import Count

from datanets.models import Datanet, Snapshot, SnapshotRecord
from datanets.selectors import datanets_visible_to
from ledger import chain, deployments, hashing
from ledger.models import Anchor
from modelfactory.models import BaseModel, ModelVersion, ModelVersionParent
from modelfactory.selectors import versions_visible_to


@dataclass(frozen=True)
class ParentEdge:
    """One lineage edge seen from the child: ``relation`` is continued_from or merged_from."""

    parent: ModelVersion
    relation: str
    weight: float

    @property
    def is_merge(self) -> bool:
        return self.relation == ModelVersionParent.Relation.MERGED_FROM


@dataclass
class VersionNode:
    """A version in the lineage, with its edges to its parents and the snapshots it trained on itself."""

    version: ModelVersion
    parents: list[ParentEdge] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)

    @property
    def is_merge(self) -> bool:
        return any(edge.is_merge for edge in self.parents)

    @property
    def merge_weight_total(self) -> float:
        return sum(edge.weight for edge in self.parents if edge.is_merge)


@dataclass
class SnapshotUse:
    """A snapshot and the lineage versions that trained on it; ``visible`` is whether the viewer may see its Datanet
    (a private Datanet's name and pages are not shown to others, only its numbers)."""

    snapshot: Snapshot
    used_by: list[ModelVersion]
    visible: bool


@dataclass
class DatanetUse:
    """A Datanet the lineage trained on: the snapshots used, and how many distinct records and contributors they
    hold together (a record in two snapshots counts once)."""

    datanet: Datanet
    snapshots: list[Snapshot]
    record_count: int
    contributor_count: int
    visible: bool


@dataclass(frozen=True)
class AnchorUse:
    """One anchor behind the answer. ``subject`` is the Snapshot, ModelVersion or run batch it anchors."""

    kind: str  # "snapshot", "model_version" or "inference_batch", as ledger.Anchor.Kind
    label: str
    root: str
    anchor: Anchor
    subject: Any
    visible: bool = True


@dataclass(frozen=True)
class ComponentUse:
    """One component of a composite answer: the version, its weight as asked, and its exact share of the total
    weight (what the answer's attribution and reward split weigh it by)."""

    version: ModelVersion
    weight: float
    share: Fraction

    @property
    def percent(self) -> float:
        return float(self.share * 100)


def components_of(document: dict[str, Any]) -> list[ComponentUse]:
    """A composite run's components (``InferenceRun.composition``), in its order (by version), in one query."""
    ids = [c["version"] for c in document["components"]]
    versions = ModelVersion.objects.select_related("base_model", "owner").in_bulk(ids)
    return [
        ComponentUse(version=versions[c["version"]], weight=float(c["weight"]), share=Fraction(c["share"]))
        for c in document["components"]
        if c["version"] in versions
    ]


@dataclass
class Ancestry:
    """Everything the lineage panel shows. ``path`` lists the versions ancestors first (each after its parents), so
    it reads base model -> ... -> ``version``; ``version`` is None for an answer of the base model alone, or of a
    composite: then ``components`` lists its versions with their weights, and ``path`` their lineages together."""

    base_model: BaseModel
    version: ModelVersion | None
    path: list[VersionNode]
    snapshots: list[SnapshotUse]
    datanets: list[DatanetUse]
    anchors: list[AnchorUse]
    visible_datanet_ids: set[int] = field(default_factory=set)
    components: list[ComponentUse] = field(default_factory=list)

    @property
    def answered_by(self) -> set[int]:
        """The versions that answered: the version, or a composite's components."""
        if self.components:
            return {c.version.pk for c in self.components}
        return {self.version.pk} if self.version is not None else set()

    @property
    def depth(self) -> int:
        return len(self.path)


def _walk_sql(to: str, start: str) -> str:
    """A recursive query from one version along the lineage edges (``start`` column -> ``to`` column), the version
    itself included. UNION, not UNION ALL: a version reached by two merge paths is visited once. The first term
    reads the versions table so that the column has the edges' type (PostgreSQL insists)."""
    versions = connection.ops.quote_name(ModelVersion._meta.db_table)
    edges = connection.ops.quote_name(ModelVersionParent._meta.db_table)
    # only table names from the models' metadata go into the text; the version id is a query parameter
    return (
        f"WITH RECURSIVE walk(id) AS (SELECT id FROM {versions} WHERE id = %s UNION "  # noqa: S608
        f"SELECT e.{to} FROM {edges} e JOIN walk w ON e.{start} = w.id) SELECT id FROM walk"
    )


def _ancestor_ids(version_id: int) -> list[int]:
    sql = _walk_sql("parent_id", "child_id")
    with connection.cursor() as cursor:
        cursor.execute(sql, [version_id])
        return [row[0] for row in cursor.fetchall()]


def lineage_visible_to(*, user: Any, version: ModelVersion) -> bool:
    """Whether ``user`` may see ``version``'s lineage facts: they may see the version itself, or a version built on
    it (an ancestry panel shows the whole path, so its verify links must open for whoever sees the panel)."""
    sql = _walk_sql("child_id", "parent_id")
    with connection.cursor() as cursor:
        cursor.execute(sql, [version.pk])
        ids = [row[0] for row in cursor.fetchall()]
    return versions_visible_to(user=user).filter(pk__in=ids).exists()


def _ancestors_first(nodes: dict[int, VersionNode], start: int) -> list[VersionNode]:
    """Depth-first post-order from ``start``: every version after all of its parents, parents in id order."""
    ordered: list[VersionNode] = []
    seen: set[int] = set()

    def visit(version_id: int) -> None:
        if version_id in seen or version_id not in nodes:
            return
        seen.add(version_id)
        for edge in sorted(nodes[version_id].parents, key=lambda e: e.parent.pk):
            visit(edge.parent.pk)
        ordered.append(nodes[version_id])

    visit(start)
    return ordered


def _lineage(version: ModelVersion) -> list[VersionNode]:
    ids = _ancestor_ids(version.pk)
    versions = ModelVersion.objects.select_related("base_model", "owner", "anchor", "anchor__deployment").in_bulk(ids)
    nodes = {pk: VersionNode(version=v) for pk, v in versions.items()}
    for link in ModelVersionParent.objects.filter(child_id__in=ids).order_by("child_id", "parent_id"):
        if link.parent_id in versions:
            nodes[link.child_id].parents.append(
                ParentEdge(parent=versions[link.parent_id], relation=link.relation, weight=link.weight)
            )
    used = (
        ModelVersion.snapshots.through.objects.filter(modelversion_id__in=ids)
        .select_related("snapshot__datanet", "snapshot__anchor", "snapshot__anchor__deployment")
        .order_by("snapshot__datanet__name", "snapshot__number", "snapshot_id")
    )
    for row in used:
        nodes[row.modelversion_id].snapshots.append(row.snapshot)
    return _ancestors_first(nodes, version.pk)


def _datanet_uses(snapshot_uses: list[SnapshotUse], visible_ids: set[int]) -> list[DatanetUse]:
    by_datanet: dict[int, list[Snapshot]] = {}
    for use in snapshot_uses:
        by_datanet.setdefault(use.snapshot.datanet_id, []).append(use.snapshot)
    # one snapshot's counts were frozen with it; several snapshots of a Datanet overlap, so count distinct rows then
    several = {pk: snaps for pk, snaps in by_datanet.items() if len(snaps) > 1}
    totals: dict[int, dict[str, int]] = {}
    if several:
        rows = (
            SnapshotRecord.objects.filter(snapshot_id__in=[s.pk for snaps in several.values() for s in snaps])
            .values("snapshot__datanet_id")
            .annotate(
                records=Count("record_id", distinct=True),
                contributors=Count("contribution__contributor_id", distinct=True),
            )
            .order_by()
        )
        totals = {row["snapshot__datanet_id"]: row for row in rows}
    uses = []
    for pk, snaps in by_datanet.items():
        if pk in totals:
            records, contributors = totals[pk]["records"], totals[pk]["contributors"]
        else:
            records, contributors = snaps[0].record_count, snaps[0].contributor_count
        uses.append(
            DatanetUse(
                datanet=snaps[0].datanet,
                snapshots=sorted(snaps, key=lambda s: s.number),
                record_count=records,
                contributor_count=contributors,
                visible=pk in visible_ids,
            )
        )
    return sorted(uses, key=lambda u: (not u.visible, u.datanet.name.lower(), u.datanet.pk))


def ancestry_of(
    *,
    version: ModelVersion | None,
    base_model: BaseModel,
    viewer: Any,
    batch: Any = None,
    components: Sequence[ComponentUse] = (),
) -> Ancestry:
    """The lineage panel's contents for an answer of ``version`` (None: ``base_model`` alone, or the composite of
    ``components``), seen by ``viewer``.

    ``batch`` is the run's batch (anything with ``anchor``, ``anchor_id`` and ``pk``; None while the run waits to be
    sealed into one); its anchor joins the list. Queries: at most seven, whatever the lineage's depth or width (a
    composite: three more per component, for its lineage).
    """
    if components:
        path = _lineages([c.version for c in components])
    else:
        path = _lineage(version) if version is not None else []
    uses: dict[int, SnapshotUse] = {}
    for node in path:
        for snapshot in node.snapshots:
            uses.setdefault(snapshot.pk, SnapshotUse(snapshot=snapshot, used_by=[], visible=False))
            uses[snapshot.pk].used_by.append(node.version)
    visible_ids: set[int] = set()
    datanet_ids = {use.snapshot.datanet_id for use in uses.values()}
    if datanet_ids:
        visible_ids = set(datanets_visible_to(user=viewer).filter(pk__in=datanet_ids).values_list("pk", flat=True))
    snapshot_uses = sorted(
        uses.values(), key=lambda u: (u.snapshot.datanet.name.lower(), u.snapshot.datanet_id, u.snapshot.number)
    )
    for use in snapshot_uses:
        use.visible = use.snapshot.datanet_id in visible_ids

    anchors = [
        AnchorUse(
            kind=Anchor.Kind.SNAPSHOT,
            label=(
                f"Snapshot #{use.snapshot.number} of {use.snapshot.datanet.name}"
                if use.visible
                else f"Snapshot #{use.snapshot.number} of a private Datanet"
            ),
            root=use.snapshot.merkle_root,
            anchor=use.snapshot.anchor,
            subject=use.snapshot,
            visible=use.visible,
        )
        for use in snapshot_uses
    ]
    anchors += [
        AnchorUse(
            kind=Anchor.Kind.MODEL_VERSION,
            label=f"Lineage manifest of {node.version.name}",
            root=node.version.manifest_hash,
            anchor=node.version.anchor,
            subject=node.version,
        )
        for node in path
    ]
    if batch is not None and batch.anchor_id is not None:
        anchors.append(
            AnchorUse(
                kind=Anchor.Kind.INFERENCE_BATCH,
                label=f"Inference batch #{batch.pk}",
                root=batch.anchor.root,
                anchor=batch.anchor,
                subject=batch,
            )
        )
    return Ancestry(
        base_model=version.base_model if version is not None else base_model,
        version=version,
        path=path,
        snapshots=snapshot_uses,
        datanets=_datanet_uses(snapshot_uses, visible_ids),
        anchors=anchors,
        visible_datanet_ids=visible_ids,
        components=list(components),
    )


def _lineages(versions: Sequence[ModelVersion]) -> list[VersionNode]:
    """The lineages of several versions as one path, ancestors first, a version shared by two lineages once."""
    path: list[VersionNode] = []
    seen: set[int] = set()
    for version in versions:
        for node in _lineage(version):
            if node.version.pk not in seen:
                seen.add(node.version.pk)
                path.append(node)
    return path


@dataclass(frozen=True)
class RootCheck:
    """What the chain says about one root. ``anchored``: LineageRegistry holds it (``root_info`` found it);
    ``verified``: everything checked holds (the root is anchored, as the kind expected, and any proof leads to it)."""

    root: str
    anchored: bool
    verified: bool
    block_number: int | None = None
    kind_code: int | None = None
    subject_id: str | None = None
    submitter: str | None = None
    contract_address: str | None = None
    chain_id: int | None = None
    problems: tuple[str, ...] = ()


def _root_check(root: str, *, kind: str, extra_ok: bool = True, problems: tuple[str, ...] = ()) -> RootCheck:
    deployment = deployments.active_deployment()
    info = chain.root_info(root, deployment=deployment)
    found: list[str] = list(problems)
    expected_code = Anchor.KIND_CODES[Anchor.Kind(kind)]
    if info is None:
        found.append("LineageRegistry does not hold this root")
    elif info.kind != expected_code:
        found.append(f"the root was anchored as kind {info.kind}, not {expected_code} ({kind})")
    return RootCheck(
        root=root,
        anchored=info is not None,
        verified=info is not None and not found and extra_ok,
        block_number=info.block_number if info else None,
        kind_code=info.kind if info else None,
        subject_id=info.subject_id if info else None,
        submitter=info.submitter if info else None,
        contract_address=deployment.contract_address if deployment else None,
        chain_id=deployment.chain_id if deployment else None,
        problems=tuple(found),
    )


def manifest_check(*, version: ModelVersion) -> RootCheck:
    """Re-hash the stored lineage manifest and ask the chain whether that hash is anchored as a model version. The
    stored text is hashed as it is, whatever its schema (v1 ``json.dumps`` or v2 JCS): it is what was anchored."""
    rehashed = hashing.keccak_hex(version.manifest.encode())
    problems = () if rehashed == version.manifest_hash else (f"the stored manifest hashes to {rehashed}",)
    return _root_check(version.manifest_hash, kind=Anchor.Kind.MODEL_VERSION, problems=problems)


def snapshot_check(*, snapshot: Snapshot) -> RootCheck:
    """Ask the chain whether the snapshot's Merkle root is anchored as a snapshot."""
    return _root_check(snapshot.merkle_root, kind=Anchor.Kind.SNAPSHOT)


def run_inclusion_check(*, proof: dict[str, Any]) -> RootCheck:
    """Ask the chain whether the batch root in ``proof`` (OpenZeppelin StandardMerkleTree JSON with ``root``,
    ``leaf`` and ``proof``) is anchored as an inference batch, and whether ``LineageRegistry.verify`` accepts the
    proof of the run's leaf."""
    included = chain.verify_on_chain(proof["root"], proof["leaf"], proof["proof"])
    problems = () if included else ("LineageRegistry.verify rejected the run's inclusion proof",)
    return _root_check(proof["root"], kind=Anchor.Kind.INFERENCE_BATCH, extra_ok=included, problems=problems)
