"""ModelFactory's extension points for the apps above it, which register in their ``AppConfig.ready()``.

ModelFactory never imports an app above it; it calls what is registered here, at fixed points of its own work:

- the version index (``VersionIndexer``, at most one): built by the training job after its adapter is trained, in
  the same worker, under the job's heartbeat and with the worker's loaded model; its manifest entry is anchored in
  the version's manifest (the ``attribution_index`` entry); recorded inside the version's transaction; discarded
  when the attempt keeps no version (cancelled, failed).
- ``version trained`` receivers: called by the training worker once the version is committed, with the loaded base
  model (a self-check of the new version runs there). What they raise is logged, never the job's failure.
- version page sections: each renders a piece of the version page, in registration order.

An explicit registry rather than Django signals: the job needs a value back (the index build), in a fixed order
around its transaction, and each point has its own failure rule (a build never raises, a failed record fails the
version, a trained receiver is logged); a signal's list of (receiver, response) and its all-or-nothing robustness
say none of that.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from common.registry import Registry, Slot

if TYPE_CHECKING:
    from django.http import HttpRequest

    from .models import FineTuneJob, ModelVersion


class IndexBuild(Protocol):
    """The outcome of ``VersionIndexer.build``: a built index, or why there is none."""

    def manifest_entry(self) -> dict[str, Any]:
        """What the version's manifest anchors for the index (its hashes, or that the build failed)."""
        ...


class VersionIndexer(Protocol):
    def build(
        self,
        *,
        job: FineTuneJob,
        adapter_dir: str | Path,
        base: Any,
        train_step_seconds: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> IndexBuild:
        """Index a finished job's adapter with the worker's loaded base model (``training.LoadedBase``), calling
        ``progress(done, total)`` in batches as it goes (the job page shows it). Never raises: a failed build is
        returned, and its manifest entry says so."""
        ...

    def record(self, *, version: ModelVersion, build: IndexBuild) -> None:
        """Store ``build`` for ``version``, inside the version's transaction: raising fails the version (the job is
        marked failed and the build discarded)."""
        ...

    def discard(self, build: IndexBuild) -> None:
        """Remove what ``build`` left on disk: its job ended cancelled or failed and keeps no version."""
        ...


VersionTrained = Callable[..., None]  # receiver(*, version: ModelVersion, base: training.LoadedBase)
VersionSection = Callable[["HttpRequest", "ModelVersion"], str]  # (request, version) -> HTML

_indexer: Slot[VersionIndexer] = Slot("a version indexer")
_trained: Registry[VersionTrained] = Registry()
_sections: Registry[VersionSection] = Registry()


def version_indexer_register(indexer: VersionIndexer) -> None:
    """Make ``indexer`` build every new version's index; there is one index slot in the manifest, so one indexer."""
    _indexer.set(indexer)


def version_indexer() -> VersionIndexer | None:
    """The registered indexer; None when no app indexes versions (their manifests then have no index entry)."""
    return _indexer.get()


def version_trained_connect(receiver: VersionTrained) -> None:
    """Call ``receiver(version=, base=)`` after each training job has committed its version (once per receiver)."""
    _trained.add(receiver)


def version_trained_receivers() -> tuple[VersionTrained, ...]:
    return _trained.all()


def version_section_register(section: VersionSection) -> None:
    """Add ``section(request, version)``, which returns HTML, to the version page (once per section)."""
    _sections.add(section)


def version_sections() -> tuple[VersionSection, ...]:
    return _sections.all()
