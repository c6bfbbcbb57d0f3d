"""A job cancelled (or failed) after its attribution index was built removes the index folder it wrote, and never
one that a version's index row names. Real tiny trainings in process (one step of the bundled model); the
cancellation arrives while the index is being built, as a person pressing cancel at that moment would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError

from attribution import services as attribution_services
from attribution import storage as attribution_storage
from attribution.models import AttributionIndex
from datanets.storage import media_path
from modelfactory import services
from modelfactory.models import FineTuneJob
from modelfactory.tests.factories import UserFactory, default_base, frozen_snapshot, stand_in_version, tiny_config

pytestmark = pytest.mark.slow

ONE_STEP = tiny_config(max_steps=1, eval_fraction=0.0)


@pytest.fixture(autouse=True)
def _media_root(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def _index_folders() -> list[Path]:
    return sorted(p for p in media_path("attribution").glob("*/*/*") if p.is_dir())


def _cancel_during_index_build(monkeypatch: Any, also: Any = None) -> list[Any]:
    """Let the real index build run, then request the job's cancellation (after its last step: only the version's
    transaction notices it). Returns the builds seen."""
    built: list[Any] = []
    real = attribution_services.index_build_for_job

    def build_then_cancel(*, job: Any, **kwargs: Any) -> Any:
        pending = real(job=job, **kwargs)
        built.append(pending)
        FineTuneJob.objects.filter(pk=job.pk).update(cancel_requested=True)
        if also is not None:
            also(pending)
        return pending

    monkeypatch.setattr(attribution_services, "index_build_for_job", build_then_cancel)
    return built


def test_a_job_cancelled_after_its_index_was_built_removes_the_index_folder(db: None, monkeypatch: Any) -> None:
    owner = UserFactory()
    snapshot = frozen_snapshot(owner=owner)
    job = services.job_launch(
        owner=owner, name="cancelled", base_model=default_base(), snapshots=[snapshot], config=ONE_STEP
    )
    built = _cancel_during_index_build(monkeypatch)

    assert services.job_run(job_id=job.pk, worker="cleanup-tests") is None

    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.CANCELLED
    assert len(built) == 1 and built[0].built is not None, built[0].error  # the index really was built and placed
    assert not media_path(built[0].path).exists()
    assert _index_folders() == []
    assert not AttributionIndex.objects.exists()


def test_a_job_that_fails_storing_its_version_removes_the_index_folder(db: None, monkeypatch: Any) -> None:
    owner = UserFactory()
    snapshot = frozen_snapshot(owner=owner)
    job = services.job_launch(
        owner=owner, name="failed", base_model=default_base(), snapshots=[snapshot], config=ONE_STEP
    )
    built: list[Any] = []
    real = attribution_services.index_build_for_job

    def build(**kwargs: Any) -> Any:
        built.append(real(**kwargs))
        return built[-1]

    def hiccup(**kwargs: Any) -> Any:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(attribution_services, "index_build_for_job", build)
    monkeypatch.setattr(attribution_services, "index_record", hiccup)

    assert services.job_run(job_id=job.pk, worker="cleanup-tests") is None

    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.FAILED and "OperationalError" in job.error
    assert built[0].built is not None and not media_path(built[0].path).exists()
    assert _index_folders() == []


def test_a_cancelled_job_never_removes_an_index_folder_a_published_version_uses(db: None, monkeypatch: Any) -> None:
    """Index folders are content-addressed: an identical index kept by a published version is the same folder."""
    owner = UserFactory()
    base = default_base()
    published = stand_in_version(owner=owner, base_model=base, name="published")
    published.published = True
    published.save(update_fields=["published"])

    def kept_by_the_published_version(pending: Any) -> None:
        AttributionIndex.objects.create(
            version=published,
            status=AttributionIndex.Status.OK,
            feature_hash=pending.built.feature_hash,
            span_hash=pending.built.span_hash,
            path=pending.path,
        )

    job = services.job_launch(
        owner=owner, name="cancelled", base_model=base, snapshots=[frozen_snapshot(owner=owner)], config=ONE_STEP
    )
    built = _cancel_during_index_build(monkeypatch, also=kept_by_the_published_version)

    assert services.job_run(job_id=job.pk, worker="cleanup-tests") is None

    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.CANCELLED
    folder = media_path(built[0].path)
    assert folder.is_dir() and _index_folders() == [folder]
    # still loadable by the published version's runs
    from attribution.index import load_index

    load_index(folder, feature_hash=built[0].built.feature_hash, span_hash=built[0].built.span_hash)


def test_index_folder_drop_removes_only_unnamed_folders_under_the_index_prefix(db: None, tmp_path: Path) -> None:
    owner = UserFactory()
    version = stand_in_version(owner=owner, base_model=default_base())
    named, unnamed = "attribution/aa/bb/" + "ab" * 32, "attribution/cc/dd/" + "cd" * 32
    for relative in (named, unnamed, "adapters/ee/ff/" + "ef" * 32):
        media_path(relative).mkdir(parents=True)
        (media_path(relative) / "spans.npz").write_bytes(b"x")
    AttributionIndex.objects.create(
        version=version, status=AttributionIndex.Status.OK, feature_hash="f", span_hash="s", path=named
    )

    assert attribution_storage.index_folder_drop(named) is False
    assert attribution_storage.index_folder_drop("adapters/ee/ff/" + "ef" * 32) is False
    assert attribution_storage.index_folder_drop(unnamed) is True
    assert media_path(named).is_dir() and media_path("adapters/ee/ff/" + "ef" * 32).is_dir()
    assert not media_path(unnamed).exists()
