"""The long-lived engine host inside an ``inference`` queue worker.

The worker runs a thread pool (``celery worker -Q inference -P threads -c 16``): every task thread of the process
shares one Engine per base model, created on first use, and the engine's scheduler gathers the threads' concurrent
submissions into one batch. A heartbeat thread marks the runs this process is generating as alive, so the reaper
can tell a slow run from a lost one, and publishes the engines' state for /healthz. A run this process no longer
holds (the reaper gave it to another worker while this one could not beat) stops streaming at once, so its client
never gets the answer twice. Loaded only by the worker: importing this module imports no torch.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections, connection

from modelfactory.models import BaseModel, ModelVersion

from . import services
from .engine import AdapterError, CompositeComponent, Composition, Engine, GenerationRequest
from .models import InferenceRun
from .selectors import ENGINE_STATE_CACHE_KEY, ENGINE_WORKERS_CACHE_KEY, runs_held_by
from .streams import RunStreamWriter

logger = logging.getLogger(__name__)

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()
_heartbeat: threading.Thread | None = None
_node = ""  # this worker's Celery node name, as routing knows it
# The runs this process generates, each with an event set when its claim is lost (taken over by another worker).
_active: dict[int, threading.Event] = {}
_active_lock = threading.Lock()


def worker_name() -> str:
    """This process, as written in a run's ``claimed_by``: host and pid (threads of one process share a claim)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _limit_torch_threads() -> None:
    # INFERENCE_TORCH_THREADS: OMP_NUM_THREADS for a torch not imported yet, set_num_threads for one that is
    threads = settings.INFERENCE_TORCH_THREADS
    if threads <= 0:
        return
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def engine_for(base_model: BaseModel) -> Engine:
    """The process's Engine for ``base_model`` (loaded once), with the cache bounds and pins from settings, on
    INFERENCE_TORCH_THREADS threads when that is set."""
    key = str(Path(base_model.path).resolve())
    engine = _engines.get(key)
    if engine is not None:
        return engine
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            _limit_torch_threads()
            engine = Engine(
                base_model.path,
                max_adapters=settings.INFERENCE_CACHE_ADAPTERS,
                max_adapter_bytes=settings.INFERENCE_CACHE_BYTES,
                warm_dir=settings.INFERENCE_WARM_DIR,
                max_warm_bytes=settings.INFERENCE_WARM_BYTES,
                batch_window_ms=settings.INFERENCE_BATCH_WAIT_MS,
                max_batch_size=settings.INFERENCE_MAX_BATCH_SIZE,
                # adapters trained here name their base by its folder or its registered name
                base_model_aliases=[base_model.name, base_model.path],
            )
            _pin_configured(engine, base_model)
            _engines[key] = engine
            _start_heartbeat()
    return engine


def _adapter_folder(version: ModelVersion) -> Path:
    return Path(settings.MEDIA_ROOT) / version.adapter_path


def _pin_configured(engine: Engine, base_model: BaseModel) -> None:
    for version in ModelVersion.objects.filter(pk__in=settings.INFERENCE_PIN_VERSIONS, base_model=base_model):
        try:
            engine.pin(version.adapter_sha256, _adapter_folder(version))
        except AdapterError as e:
            logger.error("cannot pin model version %s: %s", version.pk, e)


def _start_heartbeat() -> None:
    global _heartbeat
    if _heartbeat is not None and _heartbeat.is_alive():
        return
    _heartbeat = threading.Thread(target=_beat_forever, name="inference-heartbeat", daemon=True)
    _heartbeat.start()


def _beat_forever() -> None:
    worker = worker_name()
    last_beat = time.monotonic()
    while True:
        time.sleep(settings.INFERENCE_HEARTBEAT_SECONDS)
        try:
            close_old_connections()
            services.runs_heartbeat(worker=worker)
            last_beat = time.monotonic()
            fence_lost_runs(worker=worker)
        except Exception:  # a database blip must not end the heartbeat for good
            logger.exception("inference heartbeat failed")
            if time.monotonic() - last_beat > settings.INFERENCE_STALE_SECONDS:
                # the reaper may have given these runs to another worker by now: stop streaming them
                with _active_lock:
                    for lost in _active.values():
                        lost.set()
        try:
            publish_state()
        except Exception:  # the state is for a status page
            logger.exception("cannot publish the engine state")


def fence_lost_runs(*, worker: str) -> list[int]:
    """Tell each run this process generates whose claim ``worker`` no longer holds (the reaper gave it to another
    worker) to stop streaming; returns their ids."""
    with _active_lock:
        active = dict(_active)
    held = runs_held_by(worker=worker, run_ids=list(active))
    lost = [run_id for run_id in active if run_id not in held]
    for run_id in lost:
        active[run_id].set()
    return lost


def publish_state() -> None:
    """Write each engine's state where the web process can read it (selectors.engine_states): a list of
    ``Engine.state()`` plus ``worker`` (host:pid), ``node`` (the Celery node name) and ``published_at``, kept for
    three inference heartbeats (at least 30 s), so only live workers' engines are listed."""
    worker = worker_name()
    now = time.time()
    states = [{**engine.state(), "worker": worker, "node": _node, "published_at": now} for engine in _engines.values()]
    if not states:
        return
    ttl = max(30, 3 * settings.INFERENCE_HEARTBEAT_SECONDS)
    cache.set(ENGINE_STATE_CACHE_KEY.format(worker=worker), states, ttl)
    known = cache.get(ENGINE_WORKERS_CACHE_KEY) or []
    if worker not in known:
        # forget workers whose state expired; a worker a concurrent writer dropped adds itself again next beat
        present = cache.get_many([ENGINE_STATE_CACHE_KEY.format(worker=w) for w in known])
        alive = [w for w in known if ENGINE_STATE_CACHE_KEY.format(worker=w) in present]
        cache.set(ENGINE_WORKERS_CACHE_KEY, sorted({*alive, worker}), None)


def _composition_for(document: dict) -> Composition:
    """A composite run's components as the engine takes them: each version's adapter hash, weight and folder."""
    versions = ModelVersion.objects.in_bulk([c["version"] for c in document["components"]])
    return Composition(
        components=tuple(
            CompositeComponent(
                adapter_id=c["adapter_sha256"],
                weight=float(c["weight"]),
                adapter_path=_adapter_folder(versions[c["version"]]),
            )
            for c in document["components"]
        ),
        method=document["method"],
        density=float(document["density"]) if document.get("density") is not None else 1.0,
        seed=int(document["seed"]) if document.get("seed") is not None else 0,
    )


def _request_for(run: InferenceRun) -> GenerationRequest:
    options = run.options
    version = run.version
    return GenerationRequest(
        composition=_composition_for(run.composition) if run.composition else None,
        adapter_id=version.adapter_sha256 if version is not None else None,
        adapter_path=_adapter_folder(version) if version is not None else None,
        prompt=run.prompt if run.kind == InferenceRun.Kind.COMPLETION else None,
        messages=run.messages if run.kind == InferenceRun.Kind.CHAT else None,
        max_new_tokens=options["max_tokens"],
        temperature=options["temperature"],
        top_p=options["top_p"],
        stop=tuple(options.get("stop") or ()),
        seed=run.seed if run.seed is not None else options.get("seed"),
    )


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def run_generate(*, run_id: int, node: str = "") -> InferenceRun | None:
    """Claim run ``run_id``, generate its answer in the shared engine while streaming it, and finish it.

    A redelivered message for a finished or freshly claimed run does nothing (None). An adapter that cannot load,
    or any other failure, fails this run alone with its reason. A run whose claim is lost meanwhile (the reaper gave
    it to another worker) stops streaming and ends here unfinished (None): the other worker answers it. ``node``:
    this worker's Celery node name, shown with its engines' state.
    """
    global _node
    if node:
        _node = node
    worker = worker_name()
    run = services.run_claim(run_id=run_id, worker=worker)
    if run is None:
        return None
    lost = threading.Event()
    with _active_lock:
        _active[run.pk] = lost
    try:
        return _generate(run, worker=worker, lost=lost)
    finally:
        with _active_lock:
            _active.pop(run.pk, None)


def _release_connection() -> None:
    """Give this task thread's database connection back while its answer streams (through Redis: seconds to
    minutes, and no query), so that a worker's pool of 32 threads does not hold 32 idle connections; ``run_finish``
    opens one again. Inside a transaction (a test calling ``run_generate`` in its own) the connection stays."""
    if not connection.in_atomic_block:
        connection.close()


def _generate(run: InferenceRun, *, worker: str, lost: threading.Event) -> InferenceRun | None:
    try:
        engine = engine_for(run.base_model)
        writer = RunStreamWriter(run_id=run.pk, public_id=run.public_id, retry=run.attempts > 1)
        handle = engine.submit(_request_for(run))
        _release_connection()
        try:
            for delta in handle:
                if lost.is_set():
                    logger.warning("inference run %s: another worker took it over; this one stops", run.public_id)
                    return None
                writer.token(delta)
            if lost.is_set():
                return None
            writer.flush()
        finally:
            # A run whose stream fails, whose worker is stopping, or that another worker took over leaves the batch
            # at the next decode step rather than decoding for no one; once the request has finished this does
            # nothing.
            handle.cancel()
        result = handle.result()
    except Exception as e:
        logger.exception("inference run %s failed", run.public_id)
        return services.run_finish(run_id=run.pk, error=f"the engine failed: {type(e).__name__}: {e}",
                                   expected_worker=worker)  # fmt: skip
    try:
        publish_state()
    except Exception:  # the state is for a status page; never fail a run over it
        logger.exception("cannot publish the engine state")
    if result.error:
        error = result.error
        if run.version is not None and "adapter" in error:
            error = f"model version {run.version.pk} cannot be served: {error}"
        elif run.composition and "adapter" in error:
            error = f"the composite {run.model_name} cannot be served: {error}"
        return services.run_finish(
            run_id=run.pk, error=error, prompt_tokens=result.prompt_tokens or None, expected_worker=worker
        )
    return services.run_finish(
        run_id=run.pk,
        answer=result.text,
        finish_reason=result.finish_reason,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        latency_ms=_ms(result.latency_s),
        first_token_ms=_ms(result.time_to_first_token_s),
        seed=result.seed,
        expected_worker=worker,
    )
