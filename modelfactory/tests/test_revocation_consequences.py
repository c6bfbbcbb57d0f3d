"""What a revocation does to the models (issue 17): every version trained on the records, directly or through its
parents, is flagged with the count (and how many were erased), shown on its page, in the API and in /v1/models; its
owner is told once per revocation (in the app, and by e-mail when there is an address); new jobs refuse a snapshot
that holds revoked records; the owner's one action retrains the version without them on fresh snapshots, and the
new version supersedes it.

The lineage tests use stand-in versions (rows with real snapshots and lineage edges, no adapter): the flags are
computed from the lineage alone. The retrain test trains for real, in this process, with the bundled model."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.services import api_token_create
from datanets import revocation as datanet_revocation
from datanets import services as datanet_services
from datanets.models import Record, Revocation, Snapshot, SnapshotRecord
from modelfactory import revocations, selectors, services
from modelfactory.models import FineTuneJob, ModelVersion, ModelVersionParent, VersionNotice, VersionRevocation
from modelfactory.tests.factories import (
    BaseModelFactory,
    UserFactory,
    default_base,
    instructions,
    stand_in_version,
    tiny_config,
)

pytestmark = pytest.mark.django_db


def _datanet(owner: Any, contributors: dict[Any, list[dict[str, str]]], name: str) -> tuple[Any, dict[Any, Any]]:
    datanet = datanet_services.datanet_create(owner=owner, name=name, record_type="instruction")
    contributions = {}
    for user, rows in contributors.items():
        text = "".join(json.dumps(r) + "\n" for r in rows)
        contribution = datanet_services.contribution_submit_pasted(
            datanet=datanet, contributor=user, text=text, licence="CC-BY-4.0"
        )
        datanet_services.contribution_accept(curator=owner, contribution=contribution)
        contributions[user] = contribution
    return datanet, contributions


def _stand_in(owner: Any, base: Any, name: str, snapshots: list[Snapshot], parents: list[tuple[Any, str]] = ()):  # type: ignore[assignment]
    version = stand_in_version(owner=owner, base_model=base, name=name)
    version.snapshots.set(snapshots)
    for parent, relation in parents:
        ModelVersionParent.objects.create(child=version, parent=parent, relation=relation, weight=0.5)
    if any(r == ModelVersionParent.Relation.MERGED_FROM for _, r in parents):
        FineTuneJob.objects.filter(pk=version.job_id).update(kind=FineTuneJob.Kind.MERGE)
    return ModelVersion.objects.select_related("job").get(pk=version.pk)


@pytest.fixture
def world(db: None) -> dict[str, Any]:
    """alice and bob contribute to "Places" (snapshot 1), carol to "Lanterns"; builder owns the Datanets and trains:
    v1 on Places, v2 continues v1 on Lanterns, v3 merges v1 and v2, v0 trained on Lanterns alone."""
    alice, bob, carol = (UserFactory(username=n) for n in ("alice", "bob", "carol"))
    builder = UserFactory(username="builder")
    base = BaseModelFactory()
    places, contributions = _datanet(
        builder, {alice: instructions(3, "Alice town"), bob: instructions(2, "Bob city")}, "Places"
    )
    lanterns, _ = _datanet(builder, {carol: instructions(4, "Lantern")}, "Lanterns")
    s1 = datanet_services.snapshot_freeze(datanet=places, user=builder)
    s2 = datanet_services.snapshot_freeze(datanet=lanterns, user=builder)
    v1 = _stand_in(builder, base, "v1", [s1])
    v2 = _stand_in(builder, base, "v2", [s2], [(v1, ModelVersionParent.Relation.CONTINUED_FROM)])
    v3 = _stand_in(
        builder,
        base,
        "v3",
        [s1, s2],
        [(v1, ModelVersionParent.Relation.MERGED_FROM), (v2, ModelVersionParent.Relation.MERGED_FROM)],
    )
    v0 = _stand_in(builder, base, "v0", [s2])
    return {
        "alice": alice, "bob": bob, "carol": carol, "builder": builder, "base": base, "places": places,
        "lanterns": lanterns, "s1": s1, "s2": s2, "v1": v1, "v2": v2, "v3": v3, "v0": v0,
        "alice_contribution": contributions[alice], "bob_contribution": contributions[bob],
    }  # fmt: skip


def _revoke(django_capture_on_commit_callbacks: Any, **kwargs: Any) -> Revocation:
    # the receivers run once the revocation commits: the test's transaction never does, so its callbacks run here
    with django_capture_on_commit_callbacks(execute=True):
        return datanet_revocation.contribution_revoke(**kwargs)


def test_every_version_trained_on_the_records_is_flagged_through_continue_and_merge(
    world: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    assert selectors.version_revoked_records(world["v1"]) == (0, 0)
    _revoke(django_capture_on_commit_callbacks, contribution=world["alice_contribution"], user=world["alice"])

    flags = {f.version_id: f for f in VersionRevocation.objects.all()}
    assert set(flags) == {world["v1"].pk, world["v2"].pk, world["v3"].pk}  # not v0: Lanterns only
    for version in ("v1", "v2", "v3"):
        fresh = ModelVersion.objects.get(pk=world[version].pk)
        assert selectors.version_revoked_records(fresh) == (3, 0)
    # one notice per version and revocation, to the owner
    notices = VersionNotice.objects.order_by("version_id")
    assert [(n.version_id, n.records, n.owner_id) for n in notices] == [
        (world[v].pk, 3, world["builder"].pk) for v in ("v1", "v2", "v3")
    ]

    # a curator takes one of bob's records down and erases it: the counts grow, one more notice each
    record = Record.objects.filter(contribution=world["bob_contribution"]).order_by("position").first()
    with django_capture_on_commit_callbacks(execute=True):
        datanet_revocation.records_take_down(
            records=[record], user=world["builder"], reason="personal_data", explanation="a phone number", erase=True
        )
    assert selectors.version_revoked_records(ModelVersion.objects.get(pk=world["v3"].pk)) == (4, 1)
    assert VersionNotice.objects.count() == 6

    # the receivers again (a replay): the same counts, no notice more
    with django_capture_on_commit_callbacks(execute=True):
        datanet_revocation.revocations_replay()
    assert VersionNotice.objects.count() == 6
    assert {(f.version_id, f.revoked_records, f.erased_records) for f in VersionRevocation.objects.all()} == {
        (world[v].pk, 4, 1) for v in ("v1", "v2", "v3")
    }


def test_the_owner_is_emailed_once_per_version_and_revocation_and_only_with_an_address(
    world: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    other = UserFactory(username="noaddress", email="")
    v4 = _stand_in(other, world["base"], "v4", [world["s1"]])
    _revoke(django_capture_on_commit_callbacks, contribution=world["alice_contribution"], user=world["alice"])
    ids = list(VersionNotice.objects.values_list("pk", flat=True))
    assert len(ids) == 4
    mail.outbox.clear()

    assert revocations.version_notices_email(notice_ids=ids) == 3
    assert sorted(m.to[0] for m in mail.outbox) == ["builder@example.org"] * 3
    message = next(m for m in mail.outbox if "v2" in m.subject)
    assert message.subject == "v2: trained on 3 withdrawn records"
    assert "withdrawn by the contributor (consent withdrawn)" in message.body
    assert reverse("modelfactory:version_detail", args=[world["v2"].pk]) in message.body
    # twice: nothing more; the owner without an address is told in the app only
    assert revocations.version_notices_email(notice_ids=ids) == 0
    assert len(mail.outbox) == 3
    notice = VersionNotice.objects.get(version=v4)
    assert notice.emailed_at is None and notice.owner == other


def test_the_version_page_warns_and_the_owners_notices_are_read_there(
    world: dict[str, Any], client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    _revoke(django_capture_on_commit_callbacks, contribution=world["alice_contribution"], user=world["alice"])
    client.force_login(world["builder"])
    listing = client.get(reverse("modelfactory:version_list")).content.decode()
    assert "Withdrawn records reached 3 of your versions" in listing and "data-revoked-badge" in listing
    assert "data-version-notices>3<" in listing  # the navigation's count

    page = client.get(reverse("modelfactory:version_detail", args=[world["v2"].pk])).content.decode()
    assert "Trained on 3 withdrawn records" in page
    assert "withdrawn by the contributor (consent withdrawn)" in page and "Places" in page
    assert "Retrain without them" in page
    assert VersionNotice.objects.filter(version=world["v2"], read_at__isnull=True).count() == 0
    merged = client.get(reverse("modelfactory:version_detail", args=[world["v3"].pk])).content.decode()
    assert "This version is a merge" in merged and "data-retrain>" not in merged

    # someone else sees the warning, not the action
    client.force_login(world["carol"])
    ModelVersion.objects.filter(pk=world["v2"].pk).update(published=True)
    page = client.get(reverse("modelfactory:version_detail", args=[world["v2"].pk])).content.decode()
    assert "Trained on 3 withdrawn records" in page and "data-retrain>" not in page


def test_the_api_and_v1_models_carry_the_flag(world: dict[str, Any], django_capture_on_commit_callbacks: Any) -> None:
    _revoke(
        django_capture_on_commit_callbacks, contribution=world["alice_contribution"], user=world["alice"], erase=True
    )
    api = APIClient()
    api.force_authenticate(world["builder"])
    listed = {v["id"]: v for v in api.get(reverse("modelfactory-api:version_list")).json()["results"]}
    assert listed[world["v1"].pk]["revoked_records"]["count"] == 3
    assert listed[world["v1"].pk]["revoked_records"]["erased"] == 3
    assert listed[world["v0"].pk]["revoked_records"] is None
    detail = api.get(reverse("modelfactory-api:version_detail", args=[world["v2"].pk])).json()
    assert detail["revoked_records"]["count"] == 3
    [revoked] = detail["revoked_records"]["revocations"]
    assert revoked["reason"] == "consent" and revoked["erased"] is True and revoked["datanet"]["name"] == "Places"
    assert detail["supersedes"] is None and detail["superseded_by"] == []

    token = api_token_create(user=world["builder"]).key
    models = APIClient().get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {token}").json()["data"]
    by_id = {m["id"]: m for m in models}
    assert by_id[f"mv-{world['v3'].pk}"]["openledger"]["revoked_records"] == {"count": 3, "erased": 3}
    assert by_id[f"mv-{world['v0'].pk}"]["openledger"]["revoked_records"] is None


def test_a_new_job_refuses_a_snapshot_holding_revoked_records_and_names_the_one_to_use(
    world: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    _revoke(django_capture_on_commit_callbacks, contribution=world["alice_contribution"], user=world["alice"])
    base = default_base()
    with pytest.raises(ValidationError) as refused:
        services.job_launch(
            owner=world["builder"], name="again", base_model=base, snapshots=[world["s1"]], config=tiny_config()
        )
    assert "holds 3 withdrawn records: no snapshot leaves them out yet" in str(refused.value)
    s1b = datanet_services.snapshot_freeze(datanet=world["places"], user=world["builder"])
    api = APIClient()
    api.force_authenticate(world["builder"])
    response = api.post(
        reverse("modelfactory-api:job_launch"),
        {"name": "again", "snapshots": [world["s1"].pk], "base_model": base.pk},
        format="json",
    )
    assert response.status_code == 400
    assert f"train on snapshot #2 (id {s1b.pk}), which leaves them out" in response.json()["detail"]
    assert not FineTuneJob.objects.filter(name="again").exists()


def test_a_snapshot_is_frozen_for_a_trainer_only_while_the_newest_holds_revoked_records(
    world: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    with pytest.raises(ValidationError, match="holds no revoked record"):
        datanet_services.snapshot_freeze_without_revoked(datanet=world["places"], user=world["carol"])
    _revoke(django_capture_on_commit_callbacks, contribution=world["alice_contribution"], user=world["alice"])
    private = datanet_services.datanet_create(
        owner=world["builder"], name="Private", record_type="instruction", visibility="private"
    )
    with pytest.raises(PermissionDenied):
        datanet_services.snapshot_freeze_without_revoked(datanet=private, user=world["carol"])
    fresh = datanet_services.snapshot_freeze_without_revoked(datanet=world["places"], user=world["carol"])
    assert fresh.number == 2 and fresh.created_by == world["carol"] and fresh.record_count == 2
    assert not SnapshotRecord.objects.filter(snapshot=fresh, record__contribution=world["alice_contribution"]).exists()
    with pytest.raises(ValidationError, match="holds no revoked record"):
        datanet_services.snapshot_freeze_without_revoked(datanet=world["places"], user=world["carol"])


def test_retrain_refuses_others_the_unflagged_merges_and_twice(
    world: dict[str, Any], client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    api = APIClient()
    api.force_authenticate(world["builder"])
    url = reverse("modelfactory-api:version_retrain", args=[world["v2"].pk])
    response = api.post(url)
    assert response.status_code == 409 and "trained on no withdrawn record" in response.json()["detail"]
    _revoke(django_capture_on_commit_callbacks, contribution=world["alice_contribution"], user=world["alice"])

    ModelVersion.objects.filter(pk=world["v2"].pk).update(published=True)
    carol = APIClient()
    carol.force_authenticate(world["carol"])
    assert carol.post(url).status_code == 403
    client.force_login(world["carol"])
    page = client.post(reverse("modelfactory:version_retrain", args=[world["v2"].pk]))
    assert page.status_code == 403 and "only the owner" in page.content.decode().lower()

    merged = api.post(reverse("modelfactory-api:version_retrain", args=[world["v3"].pk]))
    assert merged.status_code == 409
    assert (
        f"#{world['v1'].pk} 'v1'" in merged.json()["detail"]
        and "merge the new versions again" in merged.json()["detail"]
    )

    first = api.post(url)
    assert first.status_code == 201, first.json()
    job = FineTuneJob.objects.get(pk=first.json()["id"])
    assert job.supersedes == world["v2"] and job.parent_version is None and first.json()["supersedes"] == world["v2"].pk
    assert job.name == "v2 (without withdrawn records)" and job.config == world["v2"].config
    # from scratch on both Datanets of its ancestry: Places frozen anew for the owner, Lanterns' newest reused
    snapshots = {s.datanet_id: s for s in job.snapshots.all()}
    assert snapshots[world["lanterns"].pk] == world["s2"]
    assert snapshots[world["places"].pk].number == 2 and snapshots[world["places"].pk].created_by == world["builder"]
    again = api.post(url)
    assert again.status_code == 409 and f"job #{job.pk} is queued" in again.json()["detail"]
    client.force_login(world["builder"])
    assert client.post(reverse("modelfactory:version_retrain", args=[world["v2"].pk])).status_code == 409
    assert FineTuneJob.objects.filter(supersedes=world["v2"]).count() == 1


@pytest.mark.slow
def test_retrain_trains_a_version_that_supersedes_the_flagged_one_without_the_records(
    db: None, settings: Any, tmp_path: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    alice, builder = UserFactory(username="alice"), UserFactory(username="builder")
    base = default_base()
    config = tiny_config(eval_fraction=0.0, max_steps=1)
    places, contributions = _datanet(
        builder, {alice: instructions(4, "Alice town"), builder: instructions(4, "Builder city")}, "Places"
    )
    lanterns, _ = _datanet(builder, {builder: instructions(4, "Lantern")}, "Lanterns")
    s1 = datanet_services.snapshot_freeze(datanet=places, user=builder)
    s2 = datanet_services.snapshot_freeze(datanet=lanterns, user=builder)

    def train(job: FineTuneJob) -> ModelVersion:
        version = services.job_run(job_id=job.pk, worker="revocation-tests")
        assert version is not None, FineTuneJob.objects.get(pk=job.pk).error
        return ModelVersion.objects.get(pk=version.pk)

    # v2 continued v1: their rows and lineage are what the flag and the retrain read (the retrain never loads a
    # parent adapter: it trains from scratch), so they stand in; the pending job and the retrain train for real
    v1 = _stand_in(builder, base, "v1", [s1])
    v2 = _stand_in(builder, base, "v2", [s2], [(v1, ModelVersionParent.Relation.CONTINUED_FROM)])
    # a job launched before the erasure, which runs after it: it trains on what is left and comes out flagged
    pending = services.job_launch(owner=builder, name="pending", base_model=base, snapshots=[s1], config=config)
    _revoke(django_capture_on_commit_callbacks, contribution=contributions[alice], user=alice, erase=True)
    assert selectors.version_revoked_records(ModelVersion.objects.get(pk=v2.pk)) == (4, 4)
    late = train(pending)
    assert selectors.version_revoked_records(late) == (4, 4)
    assert VersionNotice.objects.filter(version=late).count() == 1

    job = services.version_retrain_without_revoked(version=v2, user=builder)
    retrained = train(job)
    assert retrained.job.supersedes_id == v2.pk
    manifest = json.loads(retrained.manifest)
    assert manifest["supersedes"] == {"id": v2.pk, "manifest_hash": v2.manifest_hash}
    assert manifest["parents"] == [] and retrained.config == v2.config
    assert selectors.version_revoked_records(retrained) == (0, 0)
    alice_hashes = set(Record.objects.filter(contribution=contributions[alice]).values_list("record_hash", flat=True))
    trained_on = set(
        SnapshotRecord.objects.filter(snapshot__in=retrained.snapshots.all()).values_list(
            "record__record_hash", flat=True
        )
    )
    assert trained_on and not trained_on & alice_hashes
    assert {s.datanet_id for s in retrained.snapshots.all()} == {places.pk, lanterns.pk}
    with pytest.raises(services.RetrainConflict, match=f"version #{retrained.pk}"):
        services.version_retrain_without_revoked(version=v2, user=builder)

    api = APIClient()
    api.force_authenticate(builder)
    assert api.get(reverse("modelfactory-api:version_detail", args=[v2.pk])).json()["superseded_by"] == [retrained.pk]
    assert api.get(reverse("modelfactory-api:version_detail", args=[retrained.pk])).json()["supersedes"] == v2.pk
