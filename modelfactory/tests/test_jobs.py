"""Fine-tune jobs and model versions: launch checks, claims, cancellation, the stale-job reaper, and real training
through a real Celery worker on the training queue (Redis, PostgreSQL, the bundled model), with the version's
manifest anchored on anvil. Runs are three steps of rank-4 LoRA on 64-token rows, so the file stays short."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from datanets.storage import media_path
from ledger import chain
from ledger import services as ledger_services
from ledger.models import Anchor
from modelfactory import lineage, services
from modelfactory.config import TrainingConfig
from modelfactory.models import FineTuneJob, ModelVersion, ModelVersionFrozen, ModelVersionParent
from modelfactory.tests.factories import (
    BaseModelFactory,
    UserFactory,
    default_base,
    frozen_snapshot,
    stand_in_version,
)
from openledger_web.testing import celery_worker_process

TINY = TrainingConfig(
    lora_rank=4,
    lora_alpha=8.0,
    lora_dropout=0.0,
    learning_rate=5e-3,
    schedule="constant",
    warmup_steps=0,
    max_steps=3,
    batch_size=4,
    max_length=64,
    eval_fraction=0.25,
    seed=7,
)
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
    assert data == lineage.canonical_json(parsed)
    assert b" " not in data and b"\n" not in data
    assert [p["id"] for p in parsed["parents"]] == [2, 5]
    assert [s["id"] for s in parsed["snapshots"]] == [3, 9]
    assert parsed["metrics"]["eval_loss"] is None
    assert lineage.manifest_hash(data) == lineage.manifest_hash(again)
    assert len(lineage.manifest_hash(data)) == 66


# The real thing: a Celery worker on the training queue


def _assert_version_checks_out(version: ModelVersion, snapshot: Any) -> None:
    folder = media_path(version.adapter_path)
    weights = (folder / "adapter_model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() == version.adapter_sha256
    assert (folder / "adapter_config.json").exists()
    assert lineage.manifest_hash(version.manifest.encode()) == version.manifest_hash
    manifest = json.loads(version.manifest)
    assert lineage.canonical_json(manifest) == version.manifest.encode()
    assert manifest["adapter_sha256"] == version.adapter_sha256
    assert manifest["snapshots"] == [
        {"datanet": snapshot.datanet.slug, "number": 1, "id": snapshot.pk, "merkle_root": snapshot.merkle_root}
    ]
    assert manifest["base_model"]["weights_sha256"] == version.base_model.weights_sha256
    assert manifest["config"] == TINY.to_dict() and manifest["seed"] == 7
    assert manifest["code_version"] == lineage.code_version()
    assert version.anchor.kind == Anchor.Kind.MODEL_VERSION and version.anchor.root == version.manifest_hash


@pytest.mark.slow
@pytest.mark.chain
def test_it_trains_a_version_through_a_real_worker_once_and_anchors_its_manifest(
    transactional_db: None, deployed_chain: Any, settings: Any
) -> None:
    # given a real snapshot and a launched job
    owner = UserFactory()
    base = default_base()
    snapshot = frozen_snapshot(owner=owner)
    job = services.job_launch(owner=owner, name="zorblat", base_model=base, snapshots=[snapshot], config=TINY)

    # when a real worker on the training queue runs it, and then a job continuing its version
    with _worker(settings):
        job = _wait_for(job, lambda j: j.is_finished)
        assert job.status == FineTuneJob.Status.SUCCEEDED, job.error
        child = services.job_launch(
            owner=owner,
            name="zorblat continued",
            base_model=base,
            snapshots=[snapshot],
            config=TINY.with_changes(seed=8),
            parent_version=job.version,
        )
        child = _wait_for(child, lambda j: j.is_finished)

    # then the version, its adapter and its manifest check out
    assert job.status == FineTuneJob.Status.SUCCEEDED, job.error
    assert (job.step, job.total_steps, len(job.loss_history), job.attempts) == (3, 3, 3, 1)
    assert job.worker.startswith("jobs-") and job.heartbeat_at and job.train_loss is not None
    version = job.version
    _assert_version_checks_out(version, snapshot)
    assert version.metrics["eval_loss"] is not None and version.samples
    assert not services._checkpoint_dir(job).exists()

    # and the continued version lists its parent in its lineage
    assert child.status == FineTuneJob.Status.SUCCEEDED, child.error
    parents = json.loads(child.version.manifest)["parents"]
    assert parents == [
        {"id": version.pk, "manifest_hash": version.manifest_hash, "weight": 1.0, "relation": "continued_from"}
    ]
    assert list(child.version.parents.all()) == [version]
    assert child.version.adapter_sha256 != version.adapter_sha256

    # and the same task delivered again trains nothing
    assert services.job_run(job_id=job.pk, worker="another") is None
    job.refresh_from_db()
    assert (job.attempts, ModelVersion.objects.count()) == (1, 2)

    # and the manifest hash is on chain, anchored as a model version
    ledger_services.anchor_send(anchor_id=version.anchor_id)
    ledger_services.anchors_confirm()
    version.anchor.refresh_from_db()
    assert version.anchor.status == Anchor.Status.CONFIRMED
    info = chain.root_info(version.manifest_hash)
    assert info is not None and info.kind == Anchor.KIND_CODES[Anchor.Kind.MODEL_VERSION]


@pytest.mark.slow
def test_a_lost_job_is_reaped_retried_to_success_and_a_running_job_can_be_cancelled(
    transactional_db: None, settings: Any
) -> None:
    owner = UserFactory()
    base = default_base()
    snapshot = frozen_snapshot(owner=owner)

    # given a job whose worker died mid-run, reaped for its stale heartbeat (its message still queued, as acks_late
    # leaves it: the worker will meet it before the retry's)
    lost = services.job_launch(owner=owner, name="lost", base_model=base, snapshots=[snapshot], config=TINY)
    old = timezone.now() - timedelta(seconds=services.stale_after_seconds() + 5)
    FineTuneJob.objects.filter(pk=lost.pk).update(
        status="running", started_at=old, heartbeat_at=old, worker="dead@host", attempts=1
    )
    assert services.jobs_reap_stale() == 1
    lost.refresh_from_db()
    assert lost.status == "failed" and "worker lost" in lost.error

    # when it is retried, and a long job is launched and cancelled while it runs
    services.job_retry(job=lost, user=owner)
    long = services.job_launch(
        owner=owner, name="long", base_model=base, snapshots=[snapshot], config=TINY.with_changes(max_steps=500)
    )
    with _worker(settings):
        lost = _wait_for(lost, lambda j: j.is_finished)
        long = _wait_for(long, lambda j: j.status == "running" and j.step >= 1)
        services.job_cancel(job=long, user=owner)
        long = _wait_for(long, lambda j: j.is_finished)

    # then the retry trained a version, and the cancelled job kept nothing
    assert lost.status == FineTuneJob.Status.SUCCEEDED, lost.error
    assert (lost.attempts, lost.error) == (2, "")
    _assert_version_checks_out(lost.version, snapshot)
    assert long.status == FineTuneJob.Status.CANCELLED
    assert 1 <= long.step < 500
    assert not ModelVersion.objects.filter(job=long).exists()
    assert not services._checkpoint_dir(long).exists()
    leftovers = list(media_path("tmp/adapters").glob(f"*job-{long.pk}-*"))
    assert leftovers == []
    assert ModelVersionParent.objects.count() == 0
