"""Two fine-tunes with identical settings (issue 11, "what was seen" 9): training is deterministic, so both make the
same adapter; the second used to fail with an IntegrityError on the manifest hash, and its retry the same way. Each
job now makes a version of its own, whose manifest names the job (docs/decisions.md, "Identical fine-tunes")."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from modelfactory import services
from modelfactory.models import FineTuneJob
from modelfactory.tests.factories import UserFactory, default_base, frozen_snapshot, tiny_config
from openledger_web.testing import celery_worker_process

WAIT_SECONDS = 300


def _finished(job: FineTuneJob) -> FineTuneJob:
    deadline = time.monotonic() + WAIT_SECONDS
    while not job.is_finished:
        assert time.monotonic() < deadline, f"job #{job.pk} is {job.status} at step {job.step}"
        time.sleep(0.5)
        job.refresh_from_db()
    return job


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_second_identical_fine_tune_gets_a_version_of_its_own(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    # given two jobs with the same snapshot, base model, config and seed
    owner = UserFactory()
    snapshot, base = frozen_snapshot(owner=owner), default_base()
    launch = {"owner": owner, "base_model": base, "snapshots": [snapshot], "config": tiny_config(max_steps=1)}
    first = services.job_launch(name="first", **launch)
    second = services.job_launch(name="second", **launch)

    # when a real worker runs both
    with celery_worker_process(queues="training", name="identical", timeout=120, MEDIA_ROOT=str(settings.MEDIA_ROOT)):
        first, second = _finished(first), _finished(second)

    # then both succeeded, with the same weights, and a version and a manifest each
    assert first.status == second.status == FineTuneJob.Status.SUCCEEDED, (first.error, second.error)
    one, two = first.version, second.version
    assert one.pk != two.pk and one.adapter_sha256 == two.adapter_sha256 and one.adapter_path == two.adapter_path
    assert one.manifest_hash != two.manifest_hash and one.anchor_id != two.anchor_id
    manifests = json.loads(one.manifest), json.loads(two.manifest)
    assert [m.pop("job") for m in manifests] == [{"id": first.pk}, {"id": second.pk}]
    assert manifests[0] == manifests[1]  # nothing else tells them apart: the same run, twice
