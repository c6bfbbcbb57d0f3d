"""ModelFactory's hooks (``modelfactory.hooks``): the apps above plug in at startup, and a job trains and stores its
version without any of them (its manifest then has no index entry). Real one-step training of the bundled model."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from attribution.models import AttributionIndex
from common.registry import Registry, Slot
from modelfactory import hooks, services
from modelfactory.models import FineTuneJob
from modelfactory.tests.factories import UserFactory, default_base, frozen_snapshot, tiny_config


class _OtherIndexer:
    def build(self, **kwargs: Any) -> Any:
        raise AssertionError("never called")

    def record(self, **kwargs: Any) -> None:
        raise AssertionError("never called")

    def discard(self, build: Any) -> None:
        raise AssertionError("never called")


def test_the_manifest_has_one_index_slot_so_a_second_indexer_is_refused() -> None:
    registered = hooks.version_indexer()
    assert registered is not None  # attribution's, from its AppConfig.ready()

    with pytest.raises(ImproperlyConfigured, match="registered already"):
        hooks.version_indexer_register(_OtherIndexer())

    hooks.version_indexer_register(registered)  # the same one again changes nothing
    assert hooks.version_indexer() is registered


@pytest.mark.slow
def test_without_an_indexer_a_job_stores_its_version_with_no_index_entry(db: None, monkeypatch: Any) -> None:
    # given no app above modelfactory plugged in
    monkeypatch.setattr(hooks, "_indexer", Slot("a version indexer"))
    monkeypatch.setattr(hooks, "_trained", Registry())
    owner = UserFactory()
    job = services.job_launch(
        owner=owner,
        name="alone",
        base_model=default_base(),
        snapshots=[frozen_snapshot(owner=owner)],
        config=tiny_config(max_steps=1, eval_fraction=0.0),
    )

    # when the job runs
    version = services.job_run(job_id=job.pk, worker="hooks-tests")

    # then it succeeds with a version whose manifest names no index, and nothing recorded one
    assert version is not None
    assert FineTuneJob.objects.get(pk=job.pk).status == FineTuneJob.Status.SUCCEEDED
    assert "attribution_index" not in json.loads(version.manifest)
    assert not AttributionIndex.objects.filter(version=version).exists()
