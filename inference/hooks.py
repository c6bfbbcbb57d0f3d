"""Inference's extension points for the apps above it, which register in their ``AppConfig.ready()``.

Inference never imports an app above it; it calls what is registered here:

- ``run finished`` receivers: called by ``services.run_finish`` with the finished run (succeeded or failed), inside
  the transaction that finishes it, so a receiver's own writes and ``on_commit`` work commit (or roll back) with the
  run. An answer's attribution is queued there.
- run extras: named pieces of data the run API (``GET /api/runs/<id>/``) adds to a run, each a key of its own, in
  registration order (an answer's attribution panel as data).
- run page sections: each renders a piece of the run's page, also shown under a fresh answer on the ask page, in
  registration order (the slot that loads the answer's attribution panel).
- the live workers source: the one function that says which Celery workers are alive now and the queues each
  consumes (the project's worker heartbeats); ``routing`` spreads runs over the inference workers it names.

An explicit registry rather than Django signals, as in ``modelfactory.hooks``: a run extra returns a value the API
serves under its name, and the registry is the one place that says who listens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured

from common.registry import Registry

if TYPE_CHECKING:
    from django.http import HttpRequest

    from .models import InferenceRun

RunFinished = Callable[["InferenceRun"], None]
RunExtra = Callable[..., dict[str, Any]]  # extra(*, run: InferenceRun, user: User | AnonymousUser | None) -> data
RunSection = Callable[["HttpRequest", "InferenceRun"], str]  # (request, run) -> HTML
LiveWorkers = Callable[[], dict[str, list[str]]]  # () -> {node name: queues it consumes}, live workers only

_finished: Registry[RunFinished] = Registry()
_extras: dict[str, RunExtra] = {}
_sections: Registry[RunSection] = Registry()
_live_workers: list[LiveWorkers] = []


def run_finished_connect(receiver: RunFinished) -> None:
    """Call ``receiver(run)`` for every run that finishes, inside its transaction (once per receiver)."""
    _finished.add(receiver)


def run_finished_receivers() -> tuple[RunFinished, ...]:
    return _finished.all()


def run_extra_register(name: str, extra: RunExtra) -> None:
    """Serve ``extra(run=, user=)`` under ``name`` in the run API; a name is one app's."""
    if _extras.get(name, extra) is not extra:
        raise ImproperlyConfigured(f"the run extra {name!r} is registered already: {_extras[name]!r}")
    _extras[name] = extra


def run_extras() -> dict[str, RunExtra]:
    return dict(_extras)


def run_section_register(section: RunSection) -> None:
    """Add ``section(request, run)``, which returns HTML, to the run's page (once per section)."""
    _sections.add(section)


def run_sections() -> tuple[RunSection, ...]:
    return _sections.all()


def live_workers_register(source: LiveWorkers) -> None:
    """Make ``source()`` the answer to "which workers are alive, consuming which queues" (one source; the last
    registered wins, so a second ``AppConfig.ready()`` changes nothing)."""
    _live_workers[:] = [source]


def live_workers() -> dict[str, list[str]]:
    """The registered source's live workers and their queues; none when no source is registered."""
    return _live_workers[0]() if _live_workers else {}
