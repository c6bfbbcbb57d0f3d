"""The lineage half of the ancestry panel: adapter path, training data, anchors, in a fixed number of queries."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from datanets.models import Snapshot
from datanets.storage import media_path
from inference.ancestry import ancestry_of, lineage_visible_to
from ledger import hashing
from ledger.models import Anchor
from ledger.services import anchor_request, anchor_subject_id
from modelfactory import lineage
from modelfactory.config import TrainingConfig
from modelfactory.models import BaseModel, FineTuneJob, ModelVersion, ModelVersionParent
from modelfactory.tests.factories import (
    BaseModelFactory,
    UserFactory,
    frozen_snapshot,
    instructions,
    stand_in_adapter_files,
)

CONTINUED = ModelVersionParent.Relation.CONTINUED_FROM
MERGED = ModelVersionParent.Relation.MERGED_FROM


def lineage_version(
    *,
    owner: Any,
    base_model: BaseModel,
    name: str,
    parents: Sequence[tuple[ModelVersion, str, float]] = (),
    snapshots: Sequence[Snapshot] = (),
    published: bool = True,
    adapter: Path | None = None,
) -> ModelVersion:
    """A finished ModelVersion with real lineage rows (parent edges, snapshots) and the manifest they imply,
    written directly (no training). ``adapter``: a real peft adapter folder to serve, stored content-addressed."""
    config = TrainingConfig(lora_rank=8, max_steps=1, warmup_steps=0, max_length=64)
    job = FineTuneJob.objects.create(
        name=name, owner=owner, base_model=base_model, config=config.to_dict(), status=FineTuneJob.Status.SUCCEEDED
    )
    if adapter is not None:
        from inference.tests.runs_support import store_adapter

        relative, digest = store_adapter(adapter)
        files = lineage.adapter_files(media_path(relative))
    else:
        digest = hashlib.sha256(f"{name}:{job.pk}".encode()).hexdigest()
        relative, files = f"adapters/{digest[:2]}/{digest[2:4]}/{digest}", stand_in_adapter_files(digest)
    manifest = lineage.build_manifest(
        base_model={"name": base_model.name, "weights_sha256": base_model.weights_sha256},
        parents=[
            {"id": p.pk, "manifest_hash": p.manifest_hash, "weight": weight, "relation": relation}
            for p, relation, weight in parents
        ],
        snapshots=[
            {"datanet": s.datanet.slug, "number": s.number, "id": s.pk, "merkle_root": s.merkle_root} for s in snapshots
        ],
        config=config.to_dict(),
        seed=job.pk,
        record_type="instruction",
        code_version="unknown",
        adapter_sha256=digest,
        adapter_files=files,
        metrics={"train_loss": 1.0},
    )
    digest_manifest = hashing.keccak_hex(manifest)
    version = ModelVersion.objects.create(
        job=job,
        name=name,
        owner=owner,
        base_model=base_model,
        record_type="instruction",
        config=config.to_dict(),
        seed=job.pk,
        code_version="unknown",
        adapter_path=relative,
        adapter_sha256=digest,
        adapter_bytes=sum(f["bytes"] for f in files),
        metrics={"train_loss": 1.0},
        manifest=manifest.decode(),
        manifest_hash=digest_manifest,
        anchor=anchor_request(
            kind="model_version", subject_id=anchor_subject_id("model_version", job.pk), root=digest_manifest
        ),
        published=published,
    )
    version.snapshots.set(snapshots)
    for parent, relation, weight in parents:
        ModelVersionParent.objects.create(child=version, parent=parent, relation=relation, weight=weight)
    return version


def chain_of(depth: int, *, owner: Any, base: BaseModel, snapshot: Snapshot) -> ModelVersion:
    """``depth`` versions, each continuing the one before, every one trained on ``snapshot``."""
    version = lineage_version(owner=owner, base_model=base, name="v1", snapshots=[snapshot])
    for i in range(2, depth + 1):
        version = lineage_version(
            owner=owner, base_model=base, name=f"v{i}", parents=[(version, CONTINUED, 1.0)], snapshots=[snapshot]
        )
    return version


@pytest.fixture
def owner() -> Any:
    return UserFactory(username="builder")


@pytest.fixture
def base() -> BaseModel:
    return BaseModelFactory(name="Tiny-Base")


@pytest.mark.django_db
def test_a_merge_shows_every_ancestor_after_its_parents_with_the_merge_weights(owner: Any, base: BaseModel) -> None:
    # given: a <- b (continued), c alone, and d = merge of b (0.7) and c (0.3)
    a = lineage_version(owner=owner, base_model=base, name="a")
    b = lineage_version(owner=owner, base_model=base, name="b", parents=[(a, CONTINUED, 1.0)])
    c = lineage_version(owner=owner, base_model=base, name="c")
    d = lineage_version(owner=owner, base_model=base, name="d", parents=[(b, MERGED, 0.7), (c, MERGED, 0.3)])

    # when
    found = ancestry_of(version=d, base_model=base, viewer=owner)

    # then
    names = [node.version.name for node in found.path]
    assert sorted(names) == ["a", "b", "c", "d"]
    assert names.index("a") < names.index("b") < names.index("d") and names.index("c") < names.index("d")
    assert names[-1] == "d" and found.version == d and found.base_model == base
    merge = found.path[-1]
    assert merge.is_merge and merge.merge_weight_total == pytest.approx(1.0)
    assert {(e.parent.name, e.weight) for e in merge.parents} == {("b", 0.7), ("c", 0.3)}
    continued = next(node for node in found.path if node.version == b)
    assert not continued.is_merge and [e.parent for e in continued.parents] == [a]
    assert [a.kind for a in found.anchors] == [Anchor.Kind.MODEL_VERSION] * 4


@pytest.mark.django_db
def test_a_diamond_lineage_lists_the_shared_ancestor_once(owner: Any, base: BaseModel) -> None:
    root = lineage_version(owner=owner, base_model=base, name="root")
    left = lineage_version(owner=owner, base_model=base, name="left", parents=[(root, CONTINUED, 1.0)])
    right = lineage_version(owner=owner, base_model=base, name="right", parents=[(root, CONTINUED, 1.0)])
    top = lineage_version(owner=owner, base_model=base, name="top", parents=[(left, MERGED, 0.5), (right, MERGED, 0.5)])

    found = ancestry_of(version=top, base_model=base, viewer=owner)

    assert [n.version.name for n in found.path].count("root") == 1
    assert found.path[0].version == root and found.path[-1].version == top


@pytest.mark.django_db
def test_training_data_includes_every_parents_snapshots_with_distinct_counts(owner: Any, base: BaseModel) -> None:
    # given: a parent trained on snapshot 1 of Zorblat, the child on snapshot 2 of Zorblat (a superset) and on Quux
    other = UserFactory(username="other-contributor")
    first = frozen_snapshot(owner=owner, records=instructions(3), name="Zorblat facts")
    from datanets import services as datanet_services

    more = datanet_services.contribution_submit_pasted(
        datanet=first.datanet, contributor=other, text='{"prompt": "q?", "response": "a."}\n', licence="CC-BY-4.0"
    )
    datanet_services.contribution_accept(curator=owner, contribution=more)
    second = datanet_services.snapshot_freeze(datanet=first.datanet, user=owner)
    quux = frozen_snapshot(owner=owner, records=instructions(2, topic="Quux"), name="Quux facts")
    parent = lineage_version(owner=owner, base_model=base, name="parent", snapshots=[first])
    child = lineage_version(
        owner=owner, base_model=base, name="child", parents=[(parent, CONTINUED, 1.0)], snapshots=[second, quux]
    )

    # when
    found = ancestry_of(version=child, base_model=base, viewer=owner)

    # then: three snapshots, two Datanets; Zorblat's 4 records and 2 contributors are counted once across snapshots
    assert {(u.snapshot.datanet.name, u.snapshot.number) for u in found.snapshots} == {
        ("Zorblat facts", 1),
        ("Zorblat facts", 2),
        ("Quux facts", 1),
    }
    by_name = {u.datanet.name: u for u in found.datanets}
    assert (by_name["Zorblat facts"].record_count, by_name["Zorblat facts"].contributor_count) == (4, 2)
    assert [s.number for s in by_name["Zorblat facts"].snapshots] == [1, 2]
    assert (by_name["Quux facts"].record_count, by_name["Quux facts"].contributor_count) == (2, 1)
    kinds = [a.kind for a in found.anchors]
    assert kinds.count(Anchor.Kind.SNAPSHOT) == 3 and kinds.count(Anchor.Kind.MODEL_VERSION) == 2


@pytest.mark.django_db
def test_a_private_datanet_is_counted_but_not_named_to_outsiders(owner: Any, base: BaseModel) -> None:
    secret = frozen_snapshot(owner=owner, records=instructions(2), name="Secret notes", visibility="private")
    version = lineage_version(owner=owner, base_model=base, name="v", snapshots=[secret])
    outsider = UserFactory(username="outsider")

    seen_by_owner = ancestry_of(version=version, base_model=base, viewer=owner)
    seen_by_outsider = ancestry_of(version=version, base_model=base, viewer=outsider)

    assert seen_by_owner.datanets[0].visible and "Secret notes" in seen_by_owner.anchors[0].label
    use = seen_by_outsider.datanets[0]
    assert not use.visible and use.record_count == 2
    assert "Secret" not in seen_by_outsider.anchors[0].label and not seen_by_outsider.anchors[0].visible


@pytest.mark.django_db
def test_the_base_model_alone_has_no_path_and_no_training_data(owner: Any, base: BaseModel) -> None:
    found = ancestry_of(version=None, base_model=base, viewer=owner)

    assert found.path == [] and found.datanets == [] and found.anchors == [] and found.base_model == base


@pytest.mark.django_db
@pytest.mark.parametrize("depth", [1, 3, 12])
def test_the_panel_costs_the_same_queries_whatever_the_depth(
    depth: int, owner: Any, base: BaseModel, django_assert_max_num_queries: Any
) -> None:
    # given: a chain of `depth` versions on two snapshots of one Datanet (the distinct-count query runs), merged
    # with a second chain trained on another Datanet
    first = frozen_snapshot(owner=owner, records=instructions(2), name="Deep data")
    other = frozen_snapshot(owner=owner, records=instructions(2, topic="Other"), name="Other data")
    tip = chain_of(depth, owner=owner, base=base, snapshot=first)
    side = chain_of(depth, owner=owner, base=base, snapshot=other)
    top = lineage_version(owner=owner, base_model=base, name="top", parents=[(tip, MERGED, 0.5), (side, MERGED, 0.5)])
    viewer = UserFactory(username="viewer")
    top = ModelVersion.objects.select_related("base_model").get(pk=top.pk)

    # when / then: ancestors, versions, edges, snapshots, visible Datanets, distinct counts at most
    with django_assert_max_num_queries(6):
        found = ancestry_of(version=top, base_model=base, viewer=viewer)
        for node in found.path:
            _ = [node.version.owner.username, node.version.anchor.status, node.version.base_model.name]
            _ = [(e.parent.name, e.weight) for e in node.parents]
            _ = [(s.datanet.name, s.anchor.status) for s in node.snapshots]
        for item in found.anchors:
            _ = (item.anchor.status, item.anchor.tx_hash, item.anchor.deployment)
    assert found.depth == 2 * depth + 1


@pytest.mark.django_db
def test_an_unpublished_ancestor_is_verifiable_by_whoever_sees_a_descendant(owner: Any, base: BaseModel) -> None:
    hidden = lineage_version(owner=owner, base_model=base, name="hidden", published=False)
    lineage_version(owner=owner, base_model=base, name="public", parents=[(hidden, CONTINUED, 1.0)])
    lonely = lineage_version(owner=owner, base_model=base, name="lonely", published=False)
    someone = UserFactory(username="someone")

    assert lineage_visible_to(user=someone, version=hidden)
    assert not lineage_visible_to(user=someone, version=lonely)
    assert lineage_visible_to(user=owner, version=lonely)
