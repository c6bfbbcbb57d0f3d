"""Which inference worker answers a run: rendezvous hashing over the live workers, keyed by adapter, with bounded load.

Every inference worker consumes the shared ``inference`` queue and a queue of its own, ``inference.<node name>``
(added when the worker starts, ``tasks.add_own_inference_queue``). A run is sent to the worker that ranks first for
its key (the adapter's sha256, or ``base:<path>`` for a base model alone) in a rendezvous (highest random weight)
ranking of the live workers, so that one adapter's questions go to one worker and its adapter stays loaded there.
Adding a worker moves only the keys it now ranks first for (about 1/n of them); losing one moves only its own keys.

Bounded load (consistent hashing with bounded loads, Mirrokni, Thorup and Zadimoghaddam 2018): a worker already
holding more than INFERENCE_ROUTE_LOAD_FACTOR times the average number of unfinished routed runs is passed over for
the next one in the key's ranking, so a single hot key spreads to a second worker instead of queueing behind itself.
Within that bound a worker whose batch is already full (INFERENCE_MAX_BATCH_SIZE unfinished runs: the next one would
wait in its engine's queue) is passed over for the next one in the key's ranking that has a free row, so no run
waits behind a full batch while another worker could start it at once; a key stays on its home worker wherever that
costs no wait.

Liveness is the project's worker heartbeats (``openledger_web.models.WorkerHeartbeat``, through
``hooks.live_workers``). With no live worker known the run goes to the shared ``inference`` queue, which any
inference worker consumes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count

from . import hooks
from .models import InferenceRun

SHARED_QUEUE = "inference"
OWN_QUEUE_PREFIX = "inference."
QUEUE_NAME_MAX = 100  # OutboxMessage.queue


def own_queue(node: str) -> str:
    """The queue only worker ``node`` (its Celery node name, ``inference@host``) consumes: ``inference.<node>``, or
    ``inference.<hash of node>`` for a node name too long to be stored with an outbox message."""
    name = f"{OWN_QUEUE_PREFIX}{node}"
    if len(name) <= QUEUE_NAME_MAX:
        return name
    return f"{OWN_QUEUE_PREFIX}{hashlib.blake2b(node.encode(), digest_size=16).hexdigest()}"


def route_key(*, adapter_sha256: str | None, base_model_path: str) -> str:
    """The affinity key of a run: its adapter, else its base model."""
    return adapter_sha256 if adapter_sha256 else f"base:{base_model_path}"


def _weight(key: str, node: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{node}\x00{key}".encode(), digest_size=8).digest(), "big")


def ranked(key: str, nodes: Iterable[str]) -> list[str]:
    """``nodes`` in rendezvous order for ``key``: the first is the key's home. Stable: the order of any two nodes
    for a key never depends on which other nodes are there."""
    return sorted(set(nodes), key=lambda node: (-_weight(key, node), node))


def pick(key: str, loads: dict[str, int], *, load_factor: float, slots: int = 0) -> str | None:
    """The node for ``key`` among ``loads`` (live node -> its unfinished routed runs): the first in the key's
    ranking whose load, this run included, stays within ``load_factor`` times the average (at least 1). With
    ``slots`` (the runs a worker's batch holds at once), the first of those whose batch still has a free row, when
    one has. None when there is no node."""
    if not loads:
        return None
    order = ranked(key, loads)
    capacity = max(1, math.ceil(load_factor * (sum(loads.values()) + 1) / len(loads)))
    within = [node for node in order if loads[node] + 1 <= capacity]
    if slots > 0:
        for node in within:
            if loads[node] < slots:
                return node
    return within[0] if within else order[0]  # none within: unreachable with load_factor >= 1


def live_workers() -> list[str]:
    """Node names of the live inference workers that consume a queue of their own, sorted."""
    return sorted(node for node, queues in hooks.live_workers().items() if own_queue(node) in (queues or []))


def worker_loads(nodes: Sequence[str]) -> dict[str, int]:
    """Each of ``nodes`` with the number of unfinished runs routed to it."""
    counts = dict(
        InferenceRun.objects.filter(
            status__in=(InferenceRun.Status.QUEUED, InferenceRun.Status.RUNNING), routed_to__in=list(nodes)
        )
        .values_list("routed_to")
        .annotate(n=Count("id"))
        .values_list("routed_to", "n")
    )
    return {node: counts.get(node, 0) for node in nodes}


@dataclass(frozen=True)
class Route:
    """Where a run's message goes: ``node`` ("" for the shared queue) and its ``queue``."""

    node: str
    queue: str


def run_key(run: InferenceRun) -> str:
    """The affinity key of ``run`` (``route_key`` of its version's adapter and its base model)."""
    return route_key(
        adapter_sha256=run.version.adapter_sha256 if run.version is not None else None,
        base_model_path=run.base_model.path,
    )


def route_for(key: str, *, nodes: Sequence[str] | None = None, exclude: Iterable[str] = ()) -> Route:
    """The worker that should answer a run with affinity ``key`` now: among ``nodes`` (default: the live inference
    workers) less ``exclude``, ranked by rendezvous hashing with bounded load, a full batch passed over for a free
    row (INFERENCE_MAX_BATCH_SIZE); the shared queue when none is left."""
    excluded = set(exclude)
    candidates = [node for node in (live_workers() if nodes is None else nodes) if node not in excluded]
    node = pick(
        key,
        worker_loads(candidates),
        load_factor=settings.INFERENCE_ROUTE_LOAD_FACTOR,
        slots=settings.INFERENCE_MAX_BATCH_SIZE,
    )
    if node is None:
        return Route(node="", queue=SHARED_QUEUE)
    return Route(node=node, queue=own_queue(node))
