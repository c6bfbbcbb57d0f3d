"""What attribution plugs into the apps below it (``modelfactory.hooks``, ``inference.hooks``), connected by
``AttributionConfig.ready()``: the training-time index and the self-check of every new model version, the queueing
of every finished answer's attribution, and attribution's parts of the version page and the run API."""

from __future__ import annotations

from typing import Any

from inference.models import InferenceRun
from modelfactory.models import ModelVersion
from outbox.services import enqueue_on_commit

from . import selfcheck, services, storage, tasks


class VersionIndexer:
    """Each new version's attribution index (``modelfactory.hooks.VersionIndexer``), through ``services``."""

    def build(self, **arguments: Any) -> services.PendingIndex:
        """The hook's arguments (``modelfactory.hooks.VersionIndexer.build``) go to the service as they are."""
        return services.index_build_for_job(**arguments)

    def record(self, *, version: ModelVersion, build: services.PendingIndex) -> None:
        services.index_record(version=version, pending=build)

    def discard(self, build: services.PendingIndex) -> None:
        # never a folder that any index row names (``index_folder_drop``): index folders are content-addressed
        if build.built is not None and build.path:
            storage.index_folder_drop(build.path)


INDEXER = VersionIndexer()


def version_selfcheck(*, version: ModelVersion, base: Any) -> None:
    """A ``version trained`` receiver: the new version's self-check, with the training worker's loaded model (it
    stores its own outcome, failures included)."""
    selfcheck.version_selfcheck(version=version, base=base)


def run_finished(run: InferenceRun) -> None:
    """A ``run finished`` receiver: a succeeded answer of a model version (or of a composite of versions) is
    attributed once its run commits (it is scored after the answer is delivered)."""
    if run.status == InferenceRun.Status.SUCCEEDED and (run.version_id is not None or run.composition):
        enqueue_on_commit(tasks.attribution_run_task, run.pk)
