"""The ModelFactory API without a worker: who sees and does what, and every bad input refused with a clear message
and nothing written. Training through the API is in test_jobs.py (a real worker), faults in test_faults.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from ledger import hashing
from ledger.models import Anchor
from modelfactory import services
from modelfactory.config import TrainingConfig
from modelfactory.models import BaseModel, FineTuneJob, ModelVersion
from modelfactory.tests.factories import BaseModelFactory, UserFactory, default_base, frozen_snapshot, stand_in_version

pytestmark = pytest.mark.django_db

QUICK = {"max_steps": 3, "max_length": 64, "lora_rank": 4, "warmup_steps": 0}


def _as(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _url(name: str, *args: Any) -> str:
    return reverse(f"modelfactory-api:{name}", args=args)


def _counts() -> tuple[int, int, int]:
    return FineTuneJob.objects.count(), ModelVersion.objects.count(), Anchor.objects.count()


@pytest.fixture
def owner() -> Any:
    return UserFactory()


@pytest.fixture
def base() -> BaseModel:
    return default_base()


@pytest.fixture
def snapshot(owner: Any) -> Any:
    return frozen_snapshot(owner=owner)


def _launch(client: APIClient, **body: Any) -> Any:
    return client.post(_url("job_launch"), body, format="json")


# Launching


def test_it_launches_a_queued_job_from_a_preset_with_overrides(owner: Any, base: BaseModel, snapshot: Any) -> None:
    response = _launch(
        _as(owner), name="Zorblat", snapshots=[snapshot.pk], preset="quick-test", config={"max_steps": 2}
    )
    assert response.status_code == 201, response.json()
    job = FineTuneJob.objects.get()
    body = response.json()
    assert body["id"] == job.pk and body["status"] == "queued" and body["kind"] == "train"
    assert body["base_model"] == base.pk and body["snapshots"][0]["id"] == snapshot.pk
    assert job.config["max_steps"] == 2 and job.config["lora_rank"] == 4  # the preset's rank, our step count
    detail = _as(owner).get(_url("job_detail", job.pk)).json()
    assert detail["log_tail"] and detail["version"] is None and detail["loss_history"] == []


@pytest.mark.parametrize(
    ("config", "field", "words"),
    [
        ({"lora_rank": 0}, "config.lora_rank", "between 1 and 256"),
        ({"lora_rank": 100_000}, "config.lora_rank", "out of range"),
        ({"learning_rate": -1e-4}, "config.learning_rate", "must be positive"),
        ({"max_length": 9000}, "config.max_length", "above the base model's context of 8,192"),
        ({"lora_rank": "eight"}, "config.lora_rank", "whole number"),
        ({"warp_speed": 9}, "config", "unknown training settings: warp_speed"),
        ({"formatting": ["plain"]}, "config", "formatting maps record types to modes"),
    ],
)
def test_a_bad_config_is_refused_next_to_its_field(
    owner: Any, base: BaseModel, snapshot: Any, config: dict[str, Any], field: str, words: str
) -> None:
    response = _launch(_as(owner), name="x", snapshots=[snapshot.pk], config={**QUICK, **config})
    assert response.status_code == 400
    body = response.json()
    assert words in body["fields"][field][0], body
    assert words in body["detail"]
    assert _counts() == (0, 0, 1)  # the snapshot's own anchor only


def test_a_private_datanets_snapshot_is_refused_without_naming_the_datanet(owner: Any, base: BaseModel) -> None:
    private = frozen_snapshot(owner=owner, visibility="private", name="Secret facts")
    response = _launch(_as(UserFactory()), name="x", snapshots=[private.pk], config=QUICK)
    assert response.status_code == 403
    assert "private Datanet" in response.json()["detail"] and "Secret" not in response.json()["detail"]
    assert FineTuneJob.objects.count() == 0


def test_a_snapshot_the_user_may_no_longer_use_or_that_does_not_exist_is_refused(owner: Any, base: BaseModel) -> None:
    private = frozen_snapshot(owner=owner, visibility="private", name="Members only")
    former = UserFactory()
    private.datanet.curators.add(former)
    assert _launch(_as(former), name="ok", snapshots=[private.pk], config=QUICK).status_code == 201
    private.datanet.curators.remove(former)

    refused = _launch(_as(former), name="x", snapshots=[private.pk], config=QUICK)
    unknown = _launch(_as(former), name="x", snapshots=[private.pk + 1000], config=QUICK)

    assert refused.status_code == 403 and "only its owner and curators may train" in refused.json()["detail"]
    assert unknown.status_code == 400 and unknown.json()["fields"]["snapshots"] == [f"no snapshot #{private.pk + 1000}"]
    assert FineTuneJob.objects.count() == 1


def test_a_member_who_is_not_a_curator_may_not_train_on_a_private_snapshot(owner: Any, base: BaseModel) -> None:
    private = frozen_snapshot(owner=owner, visibility="private", name="Members only")
    member, curator = UserFactory(), UserFactory()
    private.datanet.members.add(member)
    private.datanet.curators.add(curator)
    refused = _launch(_as(member), name="x", snapshots=[private.pk], config=QUICK)
    assert refused.status_code == 403
    assert refused.json()["detail"] == (
        "'Members only' is private: only its owner and curators may train on its snapshots"
    )
    assert _launch(_as(curator), name="ok", snapshots=[private.pk], config=QUICK).status_code == 201
    assert FineTuneJob.objects.get().owner == curator


def _trained_on(snapshot: Any, *, owner: Any, base: BaseModel) -> ModelVersion:
    """A published stand-in version trained on ``snapshot``, with a sample quoting its first record."""
    version = stand_in_version(owner=owner, base_model=base, name="public model")
    version.snapshots.set([snapshot])
    sample = {"prompt": "Question 0: what is the secret code of Zorblat?", "reference": "The code of Zorblat is 7421."}
    samples = [{**sample, "base": "?", "tuned": "7421"}]
    ModelVersion.objects.filter(pk=version.pk).update(published=True, samples=samples)
    version.refresh_from_db()
    return version


def test_a_published_version_trained_on_private_data_shows_that_it_did_but_not_the_data(
    owner: Any, base: BaseModel
) -> None:
    private = frozen_snapshot(owner=owner, visibility="private", name="Secret facts")
    version = _trained_on(private, owner=owner, base=base)
    stranger = _as(UserFactory()).get(_url("version_detail", version.pk))
    assert stranger.status_code == 200
    body = stranger.json()
    assert (body["samples"], body["snapshots"], body["private_datanets"]) == ([], [], 1)
    assert "7421" not in stranger.content.decode() and "Secret" not in stranger.content.decode()

    mine = _as(owner).get(_url("version_detail", version.pk)).json()
    assert mine["private_datanets"] == 0 and mine["samples"][0]["tuned"] == "7421"
    assert [s["id"] for s in mine["snapshots"]] == [private.pk]


def test_incompatible_licences_are_refused(owner: Any, base: BaseModel) -> None:
    share_alike = frozen_snapshot(owner=owner, licence="CC-BY-SA-4.0", name="Share alike")
    non_commercial = frozen_snapshot(owner=owner, licence="CC-BY-NC-4.0", name="Non commercial")
    response = _launch(_as(owner), name="x", snapshots=[share_alike.pk, non_commercial.pk], config=QUICK)
    assert response.status_code == 400
    assert "incompatible licences" in response.json()["fields"]["snapshots"][0]
    assert FineTuneJob.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"name": "x", "snapshots": []}, "snapshots"),
        ({"name": "", "snapshots": [1]}, "name"),
        ({"name": "x", "snapshots": ["one"]}, "snapshots"),
        ({"name": "x", "snapshots": [1], "base_model": 99999}, "no base model #99999"),
        ({"name": "x", "snapshots": [1], "parent_version": 99999}, "no model version #99999"),
        ({"name": "x", "snapshots": [1], "preset": "ludicrous"}, "preset"),
        ({"name": "x" * 201, "snapshots": [1]}, "name"),
        ({"name": "x", "snapshots": list(range(1, 30))}, "snapshots"),
        ({"name": "x", "snapshots": [10**30]}, "snapshots"),
        ({"name": "x", "snapshots": [1], "parent_version": -1}, "parent_version"),
    ],
)
def test_malformed_launch_bodies_are_refused(owner: Any, base: BaseModel, body: dict[str, Any], words: str) -> None:
    response = _launch(_as(owner), **body)
    assert response.status_code == 400
    assert words in response.json()["detail"]
    assert FineTuneJob.objects.count() == 0


def test_broken_json_and_anonymous_callers_are_refused(owner: Any, base: BaseModel, snapshot: Any) -> None:
    client = _as(owner)
    broken = client.post(_url("job_launch"), b'{"name": "x", "snapshots": [', content_type="application/json")
    latin = client.post(_url("job_launch"), '{"name": "caf\xe9"}'.encode("latin-1"), content_type="application/json")
    nan = client.post(_url("job_launch"), b'{"name": "x", "snapshots": [1], "config": {"learning_rate": NaN}}',
                      content_type="application/json")  # fmt: skip
    anonymous = APIClient().post(_url("job_launch"), {"name": "x", "snapshots": [snapshot.pk]}, format="json")
    assert broken.status_code == 400 and "JSON parse error" in broken.json()["detail"]
    assert latin.status_code == 400 and "not UTF-8" in latin.json()["detail"]
    assert nan.status_code == 400
    assert anonymous.status_code == 401
    for name, args in [("job_list", ()), ("base_model_list", ()), ("job_detail", (1,))]:
        assert APIClient().get(_url(name, *args)).status_code == 401
    assert FineTuneJob.objects.count() == 0


def test_an_oversized_body_is_refused_before_it_is_read(owner: Any, base: BaseModel, settings: Any) -> None:
    settings.JSON_MAX_BODY_BYTES = 10_000
    body = json.dumps({"name": "x", "snapshots": [1], "description": "d" * 20_000})
    response = _as(owner).post(_url("job_launch"), body, content_type="application/json")
    assert response.status_code == 413 and "at most" in response.json()["detail"]
    assert FineTuneJob.objects.count() == 0


# Watching, cancelling, retrying


def test_jobs_are_seen_by_their_owner_and_staff_only(owner: Any, base: BaseModel, snapshot: Any) -> None:
    job = services.job_launch(
        owner=owner, name="mine", base_model=base, snapshots=[snapshot], config=TrainingConfig(**QUICK)
    )
    stranger, staff = UserFactory(), UserFactory(is_staff=True)
    assert _as(owner).get(_url("job_list")).json()["count"] == 1
    assert _as(stranger).get(_url("job_list")).json()["count"] == 0
    assert _as(stranger).get(_url("job_detail", job.pk)).status_code == 404
    assert _as(stranger).post(_url("job_cancel", job.pk)).status_code == 404
    assert _as(stranger).post(_url("job_retry", job.pk)).status_code == 404
    assert _as(staff).get(_url("job_detail", job.pk)).json()["name"] == "mine"
    assert _as(owner).get(_url("job_detail", 999_999)).status_code == 404
    assert _as(owner).get(f"/api/modelfactory/jobs/{10**30}/").status_code == 404
    assert _as(owner).get(f"/api/modelfactory/versions/{10**30}/manifest/").status_code == 404
    assert _as(owner).get(_url("job_list"), {"status": "sideways"}).status_code == 400
    job.refresh_from_db()
    assert job.status == "queued" and not job.cancel_requested


def test_a_job_is_cancelled_once_and_retried_only_when_it_ended(owner: Any, base: BaseModel, snapshot: Any) -> None:
    job = services.job_launch(
        owner=owner, name="x", base_model=base, snapshots=[snapshot], config=TrainingConfig(**QUICK)
    )
    client = _as(owner)

    running_retry = client.post(_url("job_retry", job.pk))
    cancelled = client.post(_url("job_cancel", job.pk))
    again = client.post(_url("job_cancel", job.pk))
    retried = client.post(_url("job_retry", job.pk))

    assert running_retry.status_code == 400 and "only a failed or cancelled job" in running_retry.json()["detail"]
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert again.status_code == 400 and "already cancelled" in again.json()["detail"]
    assert retried.status_code == 200 and retried.json()["status"] == "queued"
    assert retried.json()["log_tail"][-1].endswith("retry queued (attempt 1)")
    assert _counts() == (1, 0, 1)


def test_a_second_cancel_of_a_running_job_says_it_is_already_stopping(
    owner: Any, base: BaseModel, snapshot: Any
) -> None:
    job = services.job_launch(
        owner=owner, name="x", base_model=base, snapshots=[snapshot], config=TrainingConfig(**QUICK)
    )
    now = timezone.now()
    FineTuneJob.objects.filter(pk=job.pk).update(status="running", started_at=now, heartbeat_at=now, worker="w")
    assert _as(owner).post(_url("job_cancel", job.pk)).json()["cancel_requested"] is True
    again = _as(owner).post(_url("job_cancel", job.pk))
    assert again.status_code == 400 and "already being cancelled" in again.json()["detail"]


# Merges


def test_a_merge_is_launched_as_a_merge_job(owner: Any, base: BaseModel, snapshot: Any) -> None:
    first = stand_in_version(owner=owner, base_model=base, name="first")
    first.snapshots.set([snapshot])
    published = stand_in_version(owner=UserFactory(), base_model=base, name="someone's published")
    services.version_publish(version=published, user=published.owner, published=True)

    response = _as(owner).post(
        _url("merge_launch"),
        {
            "name": "blend",
            "parents": [{"version": first.pk, "weight": 0.7}, {"version": published.pk, "weight": 0.3}],
            "method": "ties",
            "density": 0.4,
        },
        format="json",
    )

    assert response.status_code == 201, response.json()
    job = FineTuneJob.objects.get(pk=response.json()["id"])
    assert job.kind == "merge" and job.base_model == base and job.config == {}
    assert job.merge == {
        "method": "ties",
        "density": 0.4,
        "parents": [{"id": first.pk, "weight": 0.7}, {"id": published.pk, "weight": 0.3}],
    }
    assert job.merge_sources() == [(first, 0.7), (published, 0.3)]
    assert list(job.snapshots.all()) == [snapshot]


@pytest.mark.parametrize(
    ("parents", "extra", "status", "words"),
    [
        ("different bases", {}, 400, "merge of adapters with different bases"),
        ("one", {}, 400, "parents"),
        ("repeated", {}, 400, "each model version may appear once"),
        ("unknown", {}, 400, "no model version #"),
        ("private", {}, 400, "no model version #"),
        ("ok", {"method": "average"}, 400, "method"),
        ("ok", {"density": 0}, 400, "above 0 and at most 1"),
        ("ok", {"density": 1.5}, 400, "above 0 and at most 1"),
        ("zero weights", {}, 400, "at least one weight must be non-zero"),
        ("bad weight", {}, 400, "weight"),
        ("not objects", {}, 400, "parents"),
    ],
)
def test_a_bad_merge_is_refused_and_writes_nothing(
    owner: Any, base: BaseModel, parents: str, extra: dict[str, Any], status: int, words: str
) -> None:
    mine = stand_in_version(owner=owner, base_model=base, name="mine")
    other = stand_in_version(owner=owner, base_model=base, name="other")
    foreign = stand_in_version(owner=owner, base_model=BaseModelFactory(), name="foreign base")
    private = stand_in_version(owner=UserFactory(), base_model=base, name="theirs")
    bodies: dict[str, Any] = {
        "different bases": [{"version": mine.pk, "weight": 0.5}, {"version": foreign.pk, "weight": 0.5}],
        "one": [{"version": mine.pk, "weight": 1}],
        "repeated": [{"version": mine.pk, "weight": 0.5}, {"version": mine.pk, "weight": 0.5}],
        "unknown": [{"version": mine.pk, "weight": 0.5}, {"version": 999_999, "weight": 0.5}],
        "private": [{"version": mine.pk, "weight": 0.5}, {"version": private.pk, "weight": 0.5}],
        "ok": [{"version": mine.pk, "weight": 0.5}, {"version": other.pk, "weight": 0.5}],
        "zero weights": [{"version": mine.pk, "weight": 0}, {"version": other.pk, "weight": 0}],
        "bad weight": [{"version": mine.pk, "weight": "heavy"}, {"version": other.pk, "weight": 0.5}],
        "not objects": [mine.pk, other.pk],
    }
    before = _counts()
    response = _as(owner).post(_url("merge_launch"), {"name": "m", "parents": bodies[parents], **extra}, format="json")
    assert response.status_code == status
    assert words in response.json()["detail"], response.json()
    assert _counts() == before


def test_infinite_huge_and_out_of_range_merge_numbers_are_refused(owner: Any, base: BaseModel) -> None:
    mine = stand_in_version(owner=owner, base_model=base, name="mine")
    other = stand_in_version(owner=owner, base_model=base, name="other")
    parents = [{"version": mine.pk, "weight": 1}, {"version": other.pk, "weight": 0.5}]
    valid = json.dumps({"name": "m", "parents": parents})
    # 1e400 is valid JSON that Python reads as infinity
    huge = valid.replace('"weight": 1}', '"weight": 1e400}')
    dense = valid[:-1] + ', "density": 1e400}'
    heavy = valid.replace('"weight": 1}', '"weight": 1e308}')
    beyond = valid.replace(f'"version": {mine.pk}', '"version": 9223372036854775808')
    for body, words in (
        (huge, "the number 1e400 is too large"),
        (dense, "the number 1e400 is too large"),
        (heavy, "weight: Ensure this value is less than or equal to 100"),
        (beyond, "between -2^63 and 2^63-1"),
    ):
        response = _as(owner).post(_url("merge_launch"), body, content_type="application/json")
        assert response.status_code == 400 and words in response.json()["detail"], response.json()
    assert not FineTuneJob.objects.filter(kind="merge").exists()


# Versions


def test_versions_are_listed_searched_and_shown_as_the_selectors_allow(owner: Any, base: BaseModel) -> None:
    mine = stand_in_version(owner=owner, base_model=base, name="Zorblat expert")
    stranger = UserFactory()
    hidden = stand_in_version(owner=stranger, base_model=base, name="Zorblat secret")
    shown = stand_in_version(owner=stranger, base_model=base, name="Public helper")
    services.version_publish(version=shown, user=stranger, published=True)
    client = _as(owner)

    names = [v["name"] for v in client.get(_url("version_list")).json()["results"]]
    searched = [v["name"] for v in client.get(_url("version_list"), {"q": "zorblat"}).json()["results"]]
    mine_only = client.get(_url("version_list"), {"mine": "true"}).json()["count"]

    assert sorted(names) == ["Public helper", "Zorblat expert"]
    assert searched == ["Zorblat expert"]
    assert mine_only == 1
    assert client.get(_url("version_detail", hidden.pk)).status_code == 404
    detail = client.get(_url("version_detail", mine.pk)).json()
    assert detail["manifest"] == json.loads(mine.manifest) and detail["manifest_hash"] == mine.manifest_hash
    assert detail["anchor"]["status"] == "pending" and detail["parents"] == [] and detail["children"] == []
    assert detail["downloads"]["manifest"].endswith(f"/api/modelfactory/versions/{mine.pk}/manifest/")


def test_only_the_owner_or_staff_publish_and_unpublish(owner: Any, base: BaseModel) -> None:
    version = stand_in_version(owner=owner, base_model=base)
    stranger, staff = UserFactory(), UserFactory(is_staff=True)
    url = _url("version_publish", version.pk)

    hidden = _as(stranger).post(url, {"published": True}, format="json")
    published = _as(owner).post(url, {"published": True}, format="json")
    refused = _as(stranger).post(url, {"published": False}, format="json")
    malformed = _as(owner).post(url, {"published": "perhaps"}, format="json")
    unpublished = _as(staff).post(url, {"published": False}, format="json")

    assert hidden.status_code == 404
    assert published.status_code == 200 and published.json()["published"] is True
    assert refused.status_code == 403 and "only the owner" in refused.json()["detail"]
    assert malformed.status_code == 400
    assert unpublished.status_code == 200 and unpublished.json()["published"] is False
    assert ModelVersion.objects.get(pk=version.pk).published is False


def test_the_manifest_download_is_the_anchored_bytes(owner: Any, base: BaseModel) -> None:
    version = stand_in_version(owner=owner, base_model=base)
    response = _as(owner).get(_url("version_manifest", version.pk))
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response.content == version.manifest.encode()
    assert hashing.keccak_hex(response.content) == version.manifest_hash == response["X-Manifest-Keccak256"]
    assert _as(UserFactory()).get(_url("version_manifest", version.pk)).status_code == 404


def test_adapter_downloads_refuse_other_files_and_say_when_a_file_is_missing(owner: Any, base: BaseModel) -> None:
    version = stand_in_version(owner=owner, base_model=base)  # its adapter folder was never written
    client = _as(owner)
    missing = client.get(_url("version_adapter_file", version.pk, "adapter_model.safetensors"))
    other = client.get(_url("version_adapter_file", version.pk, "..%2F..%2Fsettings.py"))
    secret = client.get(_url("version_adapter_file", version.pk, "training_args.bin"))
    assert missing.status_code == 404 and "missing on this server" in missing.json()["detail"]
    assert other.status_code == 404 and secret.status_code == 404
    assert "adapter_model.safetensors and adapter_config.json" in secret.json()["detail"]


# Base models and the schema


def test_base_models_are_listed_default_first(owner: Any, base: BaseModel) -> None:
    BaseModelFactory(name="Another")
    listed = _as(owner).get(_url("base_model_list")).json()
    assert [m["name"] for m in listed] == [base.name, "Another"]
    assert listed[0]["is_default"] and listed[0]["context_length"] == 8192


def test_the_schema_lists_every_modelfactory_endpoint() -> None:
    from modelfactory import api_urls

    response = APIClient().get(reverse("api_schema"), {"format": "json"})
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    for pattern in api_urls.urlpatterns:
        route = "/api/modelfactory/" + str(pattern.pattern)
        for converter in ("int:", "str:"):
            route = route.replace("<" + converter, "{")
        assert route.replace(">", "}") in paths, route
