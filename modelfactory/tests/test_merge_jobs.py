"""merge_launch and version_publish as services: what a merge job records, what it refuses (nothing written), and
who may publish. A real merge through a worker, linear and TIES, runs in test_jobs.py's acceptance test; the API's
merge refusals are in test_api.py."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from modelfactory import services
from modelfactory.models import FineTuneJob
from modelfactory.tests.factories import BaseModelFactory, UserFactory, default_base, frozen_snapshot, stand_in_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner() -> Any:
    return UserFactory()


@pytest.fixture
def base() -> Any:
    return default_base()


def test_a_merge_job_records_its_recipe_and_the_union_of_its_parents_snapshots(owner: Any, base: Any) -> None:
    first, second = (stand_in_version(owner=owner, base_model=base, name=n) for n in ("first", "second"))
    a = frozen_snapshot(owner=owner, name="A facts")
    b = frozen_snapshot(owner=owner, name="B facts")
    first.snapshots.set([a])
    second.snapshots.set([a, b])

    job = services.merge_launch(
        owner=owner, name=" blend ", parents=[(second, 2), (first, -0.5)], method="cat", description="why"
    )

    assert (job.kind, job.status, job.name, job.description, job.config) == ("merge", "queued", "blend", "why", {})
    assert job.merge == {
        "method": "cat",
        "density": 0.5,
        "parents": [{"id": second.pk, "weight": 2.0}, {"id": first.pk, "weight": -0.5}],
    }
    assert job.merge_sources() == [(second, 2.0), (first, -0.5)]
    assert sorted(job.snapshots.values_list("pk", flat=True)) == [a.pk, b.pk]
    assert job.base_model == base and job.parent_version is None and job.celery_task_id


def test_merge_refusals_write_nothing(owner: Any, base: Any) -> None:
    mine = stand_in_version(owner=owner, base_model=base, name="mine")
    other = stand_in_version(owner=owner, base_model=base, name="other")
    theirs = stand_in_version(owner=UserFactory(), base_model=base, name="theirs")
    foreign = stand_in_version(owner=owner, base_model=BaseModelFactory(name="Other base"), name="foreign")
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"parents": [(mine, 0.5), (theirs, 0.5)]}, PermissionDenied, "not published"),
        ({"parents": [(mine, float("nan")), (other, 0.5)]}, ValidationError, "finite"),
        ({"parents": [(mine, float("inf")), (other, 0.5)]}, ValidationError, "finite"),
        ({"parents": [(mine, 0.5), (foreign, 0.5)]}, ValidationError, "merge of adapters with different bases"),
        ({"parents": [(mine, 0.5), (other, 0.5)], "method": "dare"}, ValidationError, "unknown merge method"),
        ({"parents": [(mine, 0.5), (other, 0.5)], "density": 0.0}, ValidationError, "above 0 and at most 1"),
        ({"parents": [(mine, 0.5), (other, 0.5)], "density": True}, ValidationError, "above 0 and at most 1"),
        ({"parents": [(mine, 1.0)]}, ValidationError, "at least two"),
        ({"parents": [(mine, 0.5)] * 9}, ValidationError, "at most 8"),
        ({"parents": [(mine, 0.5), (other, 0.5)], "name": "  "}, ValidationError, "give the merged version a name"),
    ]
    for changes, error, words in cases:
        kwargs: dict[str, Any] = {"owner": owner, "name": "m", **changes}
        with pytest.raises(error, match=words):
            services.merge_launch(**kwargs)
    with pytest.raises(PermissionDenied, match="sign in"):
        services.merge_launch(owner=None, name="m", parents=[(mine, 0.5), (other, 0.5)])
    assert not FineTuneJob.objects.filter(kind="merge").exists()


def test_a_published_version_of_someone_else_may_be_merged(owner: Any, base: Any) -> None:
    mine = stand_in_version(owner=owner, base_model=base, name="mine")
    theirs = stand_in_version(owner=UserFactory(), base_model=base, name="theirs")
    services.version_publish(version=theirs, user=theirs.owner, published=True)
    job = services.merge_launch(owner=owner, name="m", parents=[(mine, 0.5), (theirs, 0.5)], method="ties")
    assert job.merge["method"] == "ties"


def test_publishing_is_for_the_owner_and_staff(owner: Any, base: Any) -> None:
    version = stand_in_version(owner=owner, base_model=base)
    with pytest.raises(PermissionDenied, match="only the owner"):
        services.version_publish(version=version, user=UserFactory(), published=True)
    assert services.version_publish(version=version, user=owner, published=True).published is True
    assert version.published is True
    staff = UserFactory(is_staff=True)
    assert services.version_publish(version=version, user=staff, published=False).published is False


def test_the_merge_methods_are_the_trainers() -> None:
    from modelfactory import training

    assert tuple(FineTuneJob.MergeMethod.values) == training.MERGE_METHODS
