"""Fine-tune jobs and model versions: launch checks, claims, cancellation, the stale-job reaper, and the acceptance
run: training, continuing and merging through the API on a real Celery worker on the training queue (Redis,
PostgreSQL, the bundled model), the downloads checked with plain peft and the manifest's hash found on anvil. Runs
are three steps of rank-4 LoRA on 64-token rows, so the file stays short. Worker faults are in test_faults.py."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from datanets.storage import media_path
from ledger import chain, hashing
from ledger import services as ledger_services
from ledger.models import Anchor
from modelfactory import lineage, services
from modelfactory.config import TrainingConfig
from modelfactory.models import FineTuneJob, ModelVersion, ModelVersionFrozen
from modelfactory.tests.factories import (
    BaseModelFactory,
    UserFactory,
    default_base,
    frozen_snapshot,
    stand_in_version,
    tiny_config,
)
from openledger_web.testing import celery_worker_process

TINY = tiny_config()
WAIT_SECONDS = 180


@pytest.fixture(autouse=True)
def _media_root(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def _wait_for(job: FineTuneJob, done: Any, timeout: float = WAIT_SECONDS) -> FineTuneJob:
    deadline = time.monotonic() + timeout
    while True:
        job.refresh_from_db()
        if done(job):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job #{job.pk} is {job.status} at step {job.step}; log: {job.log_tail[-5:]}")
        time.sleep(0.2)


def _worker(settings: Any) -> Any:
    # the worker writes adapters where this test reads them
    return celery_worker_process(queues="training", name="jobs", timeout=90, MEDIA_ROOT=str(settings.MEDIA_ROOT))


# Launch refusals: each one clear, and nothing written


@pytest.fixture
def owner(db: None) -> Any:
    return UserFactory()


@pytest.fixture
def base(db: None) -> Any:
    return default_base()


@pytest.fixture
def snapshot(owner: Any) -> Any:
    return frozen_snapshot(owner=owner)


def test_launch_creates_a_queued_job_with_its_snapshots_and_config(owner: Any, base: Any, snapshot: Any) -> None:
    job = services.job_launch(owner=owner, name=" first ", base_model=base, snapshots=[snapshot], config=TINY)
    assert job.status == FineTuneJob.Status.QUEUED
    assert job.name == "first"
    assert list(job.snapshots.all()) == [snapshot]
    assert TrainingConfig.from_dict(job.config) == TINY
    assert job.celery_task_id


def test_only_the_owner_and_curators_of_a_private_datanet_train_on_its_snapshots(owner: Any, base: Any) -> None:
    private = frozen_snapshot(owner=owner, visibility="private", name="Secret facts")
    member, curator, global_curator = UserFactory(), UserFactory(), UserFactory(is_global_curator=True)
    private.datanet.members.add(member)
    private.datanet.curators.add(curator)
    with pytest.raises(PermissionDenied, match="only its owner and curators may train"):
        services.job_launch(owner=member, name="x", base_model=base, snapshots=[private], config=TINY)
    for user in (owner, curator, global_curator):
        job = services.job_launch(owner=user, name="ok", base_model=base, snapshots=[private], config=TINY)
        assert job.owner == user


def test_a_curator_who_stepped_down_cannot_retry_a_job_on_a_private_snapshot(owner: Any, base: Any) -> None:
    private = frozen_snapshot(owner=owner, visibility="private", name="Secret facts")
    curator = UserFactory()
    private.datanet.curators.add(curator)
    job = services.job_launch(owner=curator, name="x", base_model=base, snapshots=[private], config=TINY)
    services.job_cancel(job=job, user=curator)
    private.datanet.curators.remove(curator)
    with pytest.raises(PermissionDenied, match="may no longer train on 'Secret facts'"):
        services.job_retry(job=job, user=curator)
    assert FineTuneJob.objects.get(pk=job.pk).status == "cancelled"


def test_a_private_datanets_snapshot_is_refused_to_a_non_member(owner: Any, base: Any) -> None:
    private = frozen_snapshot(owner=owner, visibility="private", name="Secret facts")
    with pytest.raises(PermissionDenied, match="private"):
        services.job_launch(owner=UserFactory(), name="x", base_model=base, snapshots=[private], config=TINY)
    assert not FineTuneJob.objects.exists()


def test_incompatible_licences_are_refused(owner: Any, base: Any) -> None:
    share_alike = frozen_snapshot(owner=owner, licence="CC-BY-SA-4.0", name="Share alike")
    non_commercial = frozen_snapshot(owner=owner, licence="CC-BY-NC-4.0", name="Non commercial")
    with pytest.raises(ValidationError, match="incompatible licences"):
        services.job_launch(
            owner=owner, name="x", base_model=base, snapshots=[share_alike, non_commercial], config=TINY
        )
    assert not FineTuneJob.objects.exists()


def test_compatible_licences_combine(owner: Any, base: Any) -> None:
    by = frozen_snapshot(owner=owner, licence="CC-BY-4.0", name="By")
    zero = frozen_snapshot(owner=owner, licence="CC0-1.0", name="Zero")
    job = services.job_launch(owner=owner, name="x", base_model=base, snapshots=[by, zero], config=TINY)
    assert job.snapshots.count() == 2


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"lora_rank": 0}, "config.lora_rank", "between 1 and 256"),
        ({"lora_rank": 100_000}, "config.lora_rank", "out of range"),
        ({"learning_rate": -1e-4}, "config.learning_rate", "must be positive"),
        ({"max_length": 9000}, "config.max_length", "above the base model's context of 8,192"),
    ],
)
def test_an_invalid_config_is_refused_with_field_messages(
    owner: Any, base: Any, snapshot: Any, changes: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        services.job_launch(
            owner=owner, name="x", base_model=base, snapshots=[snapshot], config=TINY.with_changes(**changes)
        )
    assert words in caught.value.message_dict[field][0]
    assert not FineTuneJob.objects.exists()


def test_a_parent_of_another_base_model_is_refused(owner: Any, base: Any, snapshot: Any) -> None:
    foreign = stand_in_version(owner=owner, base_model=BaseModelFactory())
    with pytest.raises(ValidationError) as caught:
        services.job_launch(
            owner=owner, name="x", base_model=base, snapshots=[snapshot], config=TINY, parent_version=foreign
        )
    assert "same base model" in caught.value.message_dict["parent_version"][0]
    assert FineTuneJob.objects.count() == 1  # the stand-in's own job only


def test_snapshots_of_different_record_types_are_refused(owner: Any, base: Any, snapshot: Any) -> None:
    texts = frozen_snapshot(owner=owner, record_type="text", name="Texts")
    with pytest.raises(ValidationError, match="one record type"):
        services.job_launch(owner=owner, name="x", base_model=base, snapshots=[snapshot, texts], config=TINY)
    assert not FineTuneJob.objects.exists()


# Claims, cancellation, the reaper


def test_cancelling_a_queued_job_means_its_task_does_nothing(owner: Any, base: Any, snapshot: Any) -> None:
    job = services.job_launch(owner=owner, name="x", base_model=base, snapshots=[snapshot], config=TINY)
    services.job_cancel(job=job, user=owner)
    assert services.job_run(job_id=job.pk, worker="w1") is None
    job.refresh_from_db()
    assert (job.status, job.attempts) == (FineTuneJob.Status.CANCELLED, 0)


def test_only_the_owner_may_cancel(owner: Any, base: Any, snapshot: Any) -> None:
    job = services.job_launch(owner=owner, name="x", base_model=base, snapshots=[snapshot], config=TINY)
    with pytest.raises(PermissionDenied):
        services.job_cancel(job=job, user=UserFactory())


def test_a_second_delivery_finds_a_running_job_with_a_fresh_heartbeat_and_does_nothing(
    owner: Any, base: Any, snapshot: Any
) -> None:
    job = services.job_launch(owner=owner, name="x", base_model=base, snapshots=[snapshot], config=TINY)
    now = timezone.now()
    FineTuneJob.objects.filter(pk=job.pk).update(status="running", started_at=now, heartbeat_at=now, worker="w1")
    assert services.job_run(job_id=job.pk, worker="w2") is None
    job.refresh_from_db()
    assert (job.status, job.worker, job.attempts) == ("running", "w1", 0)


def test_the_reaper_fails_only_jobs_whose_heartbeat_went_stale(owner: Any, base: Any, snapshot: Any) -> None:
    stale = services.job_launch(owner=owner, name="stale", base_model=base, snapshots=[snapshot], config=TINY)
    fresh = services.job_launch(owner=owner, name="fresh", base_model=base, snapshots=[snapshot], config=TINY)
    now = timezone.now()
    old = now - timedelta(seconds=services.stale_after_seconds() + 1)
    FineTuneJob.objects.filter(pk=stale.pk).update(status="running", started_at=old, heartbeat_at=old, worker="gone")
    FineTuneJob.objects.filter(pk=fresh.pk).update(status="running", started_at=now, heartbeat_at=now, worker="w")
    assert services.jobs_reap_stale(now=now) == 1
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.status == "failed" and stale.error.startswith("worker lost")
    assert fresh.status == "running"


def test_only_failed_or_cancelled_jobs_can_be_retried(owner: Any, base: Any, snapshot: Any) -> None:
    job = services.job_launch(owner=owner, name="x", base_model=base, snapshots=[snapshot], config=TINY)
    with pytest.raises(ValidationError, match="only a failed or cancelled job"):
        services.job_retry(job=job, user=owner)


def test_training_runs_on_the_training_queue_and_the_reaper_on_the_default_queue() -> None:
    from openledger_web.celery import app

    router = app.amqp.router
    assert router.route({}, "modelfactory.tasks.training_run_task", (1,), {})["queue"].name == "training"
    # the reaper must run while the training worker is busy or gone
    assert router.route({}, "modelfactory.tasks.jobs_reap_stale_task", (), {})["queue"].name == "default"


# Model versions and manifests


def test_a_model_version_is_immutable_except_for_publishing(owner: Any) -> None:
    version = stand_in_version(owner=owner, base_model=BaseModelFactory())
    version.published = True
    version.save(update_fields=["published"])
    version.name = "renamed"
    with pytest.raises(ModelVersionFrozen):
        version.save()
    with pytest.raises(ModelVersionFrozen):
        version.delete()
    assert ModelVersion.objects.get(pk=version.pk).published is True


def test_the_manifest_is_canonical_json_and_its_hash_is_keccak256() -> None:
    common: dict[str, Any] = {
        "base_model": {"name": "b", "weights_sha256": "00"},
        "snapshots": [
            {"datanet": "z", "number": 2, "id": 9, "merkle_root": "0x2"},
            {"datanet": "a", "number": 1, "id": 3, "merkle_root": "0x1"},
        ],
        "config": TINY.to_dict(),
        "seed": 7,
        "record_type": "instruction",
        "code_version": "unknown",
        "adapter_sha256": "ab" * 32,
        "adapter_files": [
            {"name": "adapter_model.safetensors", "sha256": "ab" * 32, "bytes": 10},
            {"name": "adapter_config.json", "sha256": "cd" * 32, "bytes": 2},
        ],
        "metrics": {"eval_loss": float("nan"), "train_loss": 1.5},
    }
    parents = [
        {"id": 5, "manifest_hash": "0x5", "weight": 0.5, "relation": "merged_from"},
        {"id": 2, "manifest_hash": "0x2", "weight": 0.5, "relation": "merged_from"},
    ]
    data = lineage.build_manifest(parents=parents, **common)
    again = lineage.build_manifest(parents=list(reversed(parents)), **common)
    parsed = json.loads(data)
    assert data == again
    assert data == hashing.jcs(parsed)
    assert b" " not in data and b"\n" not in data
    assert parsed["schema"] == "openledger.model_version.v2" and parsed["seed"] == "7"
    assert [f["name"] for f in parsed["adapter"]["files"]] == ["adapter_config.json", "adapter_model.safetensors"]
    assert parsed["adapter"]["bytes"] == 12
    assert [p["id"] for p in parsed["parents"]] == [2, 5]
    assert [s["id"] for s in parsed["snapshots"]] == [3, 9]
    assert parsed["metrics"]["eval_loss"] is None
    assert hashing.keccak_hex(data) == hashing.keccak_hex(again)
    assert len(hashing.keccak_hex(data)) == 66


# The real thing: a Celery worker on the training queue


def _assert_version_checks_out(version: ModelVersion, snapshot: Any) -> None:
    folder = media_path(version.adapter_path)
    weights = (folder / "adapter_model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() == version.adapter_sha256
    assert (folder / "adapter_config.json").exists()
    assert hashing.keccak_hex(version.manifest.encode()) == version.manifest_hash
    manifest = json.loads(version.manifest)
    assert hashing.jcs(manifest) == version.manifest.encode()
    assert manifest["adapter_sha256"] == version.adapter_sha256
    files = {f.name: f.read_bytes() for f in folder.iterdir()}
    assert manifest["adapter"]["files"] == [
        {"name": name, "sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}
        for name, body in sorted(files.items())
    ]
    assert version.adapter_bytes == manifest["adapter"]["bytes"] == sum(len(b) for b in files.values())
    assert manifest["snapshots"] == [
        {"datanet": snapshot.datanet.slug, "number": 1, "id": snapshot.pk, "merkle_root": snapshot.merkle_root}
    ]
    assert manifest["base_model"]["weights_sha256"] == version.base_model.weights_sha256
    assert manifest["config"] == TINY.to_dict() and manifest["seed"] == "7"
    assert manifest["code_version"] == lineage.code_version()
    assert version.anchor.kind == Anchor.Kind.MODEL_VERSION and version.anchor.root == version.manifest_hash


def _as(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _api(name: str, *args: Any) -> str:
    return reverse(f"modelfactory-api:{name}", args=args)


def _download(client: APIClient, url: str) -> tuple[bytes, Any]:
    response = client.get(url)
    assert response.status_code == 200, url
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return body, response


@pytest.mark.slow
@pytest.mark.chain
def test_it_trains_through_the_api_on_a_real_worker_and_the_downloads_check_out(
    transactional_db: None, deployed_chain: Any, settings: Any, tmp_path: Path
) -> None:
    # given a real snapshot, and a job launched through the API
    owner = UserFactory()
    base = default_base()
    snapshot = frozen_snapshot(owner=owner)
    client = _as(owner)
    launched = client.post(
        _api("job_launch"), {"name": "zorblat", "snapshots": [snapshot.pk], "config": TINY.to_dict()}, format="json"
    )
    assert launched.status_code == 201, launched.json()
    job = FineTuneJob.objects.get(pk=launched.json()["id"])

    # when a real worker on the training queue (Redis) runs it, and then a job continuing its version
    with _worker(settings):
        job = _wait_for(job, lambda j: j.is_finished)
        assert job.status == FineTuneJob.Status.SUCCEEDED, job.error
        continued = client.post(
            _api("job_launch"),
            {
                "name": "zorblat continued",
                "snapshots": [snapshot.pk],
                "parent_version": job.version.pk,
                "config": TINY.with_changes(seed=8, max_steps=1).to_dict(),
            },
            format="json",
        )
        assert continued.status_code == 201, continued.json()
        child = _wait_for(FineTuneJob.objects.get(pk=continued.json()["id"]), lambda j: j.is_finished)
        assert child.status == FineTuneJob.Status.SUCCEEDED, child.error

        # and the two versions are merged through the API, linearly and with TIES
        merges = []
        for method, weights in (("linear", (0.6, 0.4)), ("ties", (1.0, 0.5))):
            pair = (job.version.pk, child.version.pk)
            parents = [{"version": pk, "weight": weight} for pk, weight in zip(pair, weights, strict=True)]
            response = client.post(
                _api("merge_launch"),
                {"name": f"blend {method}", "parents": parents, "method": method, "density": 0.5},
                format="json",
            )
            assert response.status_code == 201, response.json()
            merges.append((method, weights, FineTuneJob.objects.get(pk=response.json()["id"])))
        for _, _, merge in merges:
            _wait_for(merge, lambda j: j.is_finished)

    # then the version, its adapter and its manifest check out, and the API showed the progress
    assert (job.step, job.total_steps, len(job.loss_history), job.attempts) == (3, 3, 3, 1)
    assert job.worker.startswith("jobs-") and job.heartbeat_at and job.train_loss is not None
    version = job.version
    _assert_version_checks_out(version, snapshot)
    assert version.metrics["eval_loss"] is not None and version.samples
    assert not services._checkpoint_dir(job).exists()
    watched = client.get(_api("job_detail", job.pk)).json()
    assert (watched["status"], watched["step"], watched["total_steps"], watched["version"]) == (
        "succeeded",
        3,
        3,
        version.pk,
    )
    assert len(watched["loss_history"]) == 3 and watched["progress_percent"] == 100 and watched["log_tail"]

    # and the continued version lists its parent, with the parent's manifest hash, in its lineage
    parents = json.loads(child.version.manifest)["parents"]
    assert parents == [
        {"id": version.pk, "manifest_hash": version.manifest_hash, "weight": 1.0, "relation": "continued_from"}
    ]
    assert list(child.version.parent_links.values_list("parent", "relation")) == [(version.pk, "continued_from")]
    assert child.version.adapter_sha256 != version.adapter_sha256
    child_page = client.get(_api("version_detail", child.version.pk)).json()
    assert child_page["parents"] == [
        {
            "id": version.pk,
            "name": "zorblat",
            "relation": "continued_from",
            "weight": 1.0,
            "manifest_hash": version.manifest_hash,
        }
    ]

    # and each merged version lists both parents with their weights, in its rows and in its anchored manifest
    for method, weights, merge in merges:
        assert merge.status == FineTuneJob.Status.SUCCEEDED, merge.error
        assert (merge.kind, merge.step, merge.total_steps, merge.attempts) == ("merge", 1, 1, 1)
        merged = merge.version
        links = list(merged.parent_links.order_by("parent_id").values_list("parent", "relation", "weight"))
        assert links == [(version.pk, "merged_from", weights[0]), (child.version.pk, "merged_from", weights[1])]
        manifest = json.loads(merged.manifest)
        assert manifest["parents"] == [
            {"id": version.pk, "manifest_hash": version.manifest_hash, "weight": weights[0], "relation": "merged_from"},
            {
                "id": child.version.pk,
                "manifest_hash": child.version.manifest_hash,
                "weight": weights[1],
                "relation": "merged_from",
            },
        ]
        assert manifest["config"] == {
            "kind": "merge",
            "method": method,
            "density": 0.5,
            "combination_type": method,  # equal ranks: no fallback
            "rank": 4,
        }
        assert [s["id"] for s in manifest["snapshots"]] == [snapshot.pk]
        assert manifest["adapter_sha256"] == merged.adapter_sha256
        assert merged.adapter_sha256 not in (version.adapter_sha256, child.version.adapter_sha256)
        stored = media_path(merged.adapter_path) / "adapter_model.safetensors"
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == merged.adapter_sha256
        assert hashing.keccak_hex(merged.manifest.encode()) == merged.manifest_hash == merged.anchor.root
        assert len(merged.samples) == services.MERGE_SAMPLE_PROMPTS and all(r["tuned"] for r in merged.samples)
    children = client.get(_api("version_detail", version.pk)).json()["children"]
    assert sorted((c["name"], c["relation"]) for c in children) == [
        ("blend linear", "merged_from"),
        ("blend ties", "merged_from"),
        ("zorblat continued", "continued_from"),
    ]

    # and the same task delivered again trains nothing
    assert services.job_run(job_id=job.pk, worker="another") is None
    job.refresh_from_db()
    assert (job.attempts, ModelVersion.objects.count()) == (1, 4)

    # when the adapter is downloaded through the API into a folder of its own
    folder = tmp_path / "downloaded-adapter"
    folder.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        body, response = _download(client, _api("version_adapter_file", version.pk, name))
        assert response["X-Content-SHA256"] == hashlib.sha256(body).hexdigest()
        (folder / name).write_bytes(body)
    weights = (folder / "adapter_model.safetensors").read_bytes()
    manifest_bytes, response = _download(client, _api("version_manifest", version.pk))

    # then the weights are the ones the manifest names, and the manifest is the one anchored
    assert hashlib.sha256(weights).hexdigest() == json.loads(manifest_bytes)["adapter_sha256"]
    assert hashing.keccak_hex(manifest_bytes) == version.manifest_hash == response["X-Manifest-Keccak256"]

    # and a plain PeftModel.from_pretrained loads it and it changes the model's output
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base.path)
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    inputs = tokenizer("Question 1: what is the secret code of Zorblat?", return_tensors="pt")
    with torch.no_grad():
        before = model(**inputs).logits
        tuned = PeftModel.from_pretrained(model, str(folder))
        after = tuned(**inputs).logits
    assert (after - before).abs().max().item() > 1e-3

    # and once the outbox sends it, the root on chain is the downloaded manifest's hash, anchored as a model version
    ledger_services.anchor_send(anchor_id=version.anchor_id)
    ledger_services.anchors_confirm()
    info = chain.root_info(hashing.keccak_hex(manifest_bytes))
    assert info is not None and info.kind == Anchor.KIND_CODES[Anchor.Kind.MODEL_VERSION]
    anchor = client.get(_api("version_detail", version.pk)).json()["anchor"]
    assert anchor["status"] == Anchor.Status.CONFIRMED and anchor["tx_hash"].startswith("0x")
    assert anchor["block_number"] == info.block_number
