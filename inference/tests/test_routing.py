"""Routing runs over several inference workers without a worker process: the rendezvous ring's stability, bounded
load, the choice of a live worker from the heartbeats, the reaper sending a lost worker's runs elsewhere once, and
/healthz listing every worker's engines."""

from __future__ import annotations

import sys
import threading
import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from inference import engine_host, routing, selectors, services
from inference.models import InferenceRun
from modelfactory.tests.factories import UserFactory, default_base
from openledger_web.models import WorkerHeartbeat
from openledger_web.testing import ROOT
from outbox.models import OutboxMessage

from .runs_support import clear_rate_limits, served_version

pytestmark = pytest.mark.django_db

KEYS = [f"{i:064x}" for i in range(2000)]


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    clear_rate_limits()


def homes(nodes: list[str]) -> dict[str, str]:
    return {key: routing.ranked(key, nodes)[0] for key in KEYS}


def test_adding_a_worker_moves_only_about_one_key_in_n_and_only_to_it() -> None:
    four = [f"inference-{i}@host" for i in range(1, 5)]
    before, after = homes(four), homes([*four, "inference-5@host"])

    moved = [key for key in KEYS if before[key] != after[key]]
    assert 0.14 < len(moved) / len(KEYS) < 0.26  # ~1/5
    assert {after[key] for key in moved} == {"inference-5@host"}
    # and the keys spread over the workers: none is home to more than a third
    assert max(list(after.values()).count(node) for node in set(after.values())) < len(KEYS) / 3


def test_losing_a_worker_moves_only_its_own_keys() -> None:
    four = [f"inference-{i}@host" for i in range(1, 5)]
    before, after = homes(four), homes([n for n in four if n != "inference-2@host"])

    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved == {key for key in KEYS if before[key] == "inference-2@host"}
    assert 0.19 < len(moved) / len(KEYS) < 0.31  # ~1/4


def test_a_hot_key_stays_home_until_its_worker_holds_more_than_its_share() -> None:
    nodes = ["a@h", "b@h"]
    home, other = routing.ranked("hot", nodes)

    assert routing.pick("hot", {home: 0, other: 0}, load_factor=1.25) == home
    assert routing.pick("hot", {home: 1, other: 1}, load_factor=1.25) == home
    # 3 runs in flight, 4 with this one: the home may hold ceil(1.25 * 4 / 2) = 3
    assert routing.pick("hot", {home: 3, other: 0}, load_factor=1.25) == other
    # a huge factor is pure affinity
    assert routing.pick("hot", {home: 50, other: 0}, load_factor=1000) == home
    assert routing.pick("hot", {}, load_factor=1.25) is None


def test_a_full_batch_passes_a_run_to_the_next_worker_with_a_free_row_within_the_bound() -> None:
    nodes = ["a@h", "b@h", "c@h"]
    home, second, third = routing.ranked("hot", nodes)

    # home's batch (4 rows) is full: the run starts at once on the next worker in the key's ranking instead of
    # waiting in home's queue, although home is within the bound (ceil(2 * 9 / 3) = 6)
    assert routing.pick("hot", {home: 4, second: 2, third: 2}, load_factor=2, slots=4) == second
    assert routing.pick("hot", {home: 4, second: 4, third: 0}, load_factor=2, slots=4) == third
    # without slots, or with a free row at home, affinity as before
    assert routing.pick("hot", {home: 4, second: 2, third: 2}, load_factor=2) == home
    assert routing.pick("hot", {home: 3, second: 1, third: 1}, load_factor=2, slots=4) == home
    # every batch full: the bounded load alone decides (the key's home while within the bound)
    assert routing.pick("hot", {home: 4, second: 4, third: 4}, load_factor=2, slots=4) == home


def test_a_node_name_too_long_for_an_outbox_row_gets_a_hashed_queue() -> None:
    node = "inference@" + "h" * 200
    queue = routing.own_queue(node)
    assert len(queue) <= routing.QUEUE_NAME_MAX and queue == routing.own_queue(node) and queue.startswith("inference.")
    assert routing.own_queue("inference@host") == "inference.inference@host"


def beat(hostname: str, *, queues: list[str] | None = None, age: float = 0) -> None:
    WorkerHeartbeat.objects.update_or_create(
        hostname=hostname,
        defaults={
            "queues": queues if queues is not None else ["inference", routing.own_queue(hostname)],
            "pid": 1,
            "last_seen": timezone.now() - timedelta(seconds=age),
        },
    )


def sent_queue(run: InferenceRun) -> str:
    message = OutboxMessage.objects.filter(task="inference.tasks.run_generate_task", args=[run.pk]).latest("pk")
    return message.queue


def test_a_run_goes_to_a_live_inference_workers_own_queue(settings) -> None:
    settings.WORKER_HEARTBEAT_SECONDS = 10
    owner, base = UserFactory(), default_base()
    beat("inference@live")
    beat("inference@dead", age=31)  # three heartbeats missed
    beat("inference@old", queues=["inference"])  # a worker that consumes no queue of its own
    beat("default@host", queues=["default"])
    assert routing.live_workers() == ["inference@live"]

    run = services.run_submit(user=owner, version=None, base_model=base, prompt="hello")

    assert run.routed_to == "inference@live"
    assert sent_queue(run) == "inference.inference@live"


def test_with_no_live_inference_worker_a_run_goes_to_the_shared_queue() -> None:
    owner, base = UserFactory(), default_base()
    run = services.run_submit(user=owner, version=None, base_model=base, prompt="hello")
    assert run.routed_to == ""
    assert sent_queue(run) == "inference"


def test_one_adapters_runs_go_to_one_worker_and_two_adapters_spread(settings) -> None:
    settings.INFERENCE_ROUTE_LOAD_FACTOR = 1000.0  # pure affinity: no spill however many are in flight
    owner, base = UserFactory(), default_base()
    for node in ("inference-1@h", "inference-2@h", "inference-3@h"):
        beat(node)
    versions = [
        served_version(owner=owner, base_model=base, adapter=None, adapter_sha256=f"{i:02x}" * 32, name=f"v{i}")
        for i in range(12)
    ]
    routed = {
        version.adapter_sha256: {
            services.run_submit(user=owner, version=version, prompt=f"q{i}").routed_to for i in range(3)
        }
        for version in versions
    }
    assert all(len(nodes) == 1 for nodes in routed.values())  # each adapter stays on one worker
    assert {node for nodes in routed.values() for node in nodes} == {"inference-1@h", "inference-2@h", "inference-3@h"}
    for sha, nodes in routed.items():
        assert nodes == {routing.ranked(sha, ["inference-1@h", "inference-2@h", "inference-3@h"])[0]}


def test_runs_of_one_key_fill_its_home_workers_batch_then_go_to_the_next(settings) -> None:
    settings.INFERENCE_ROUTE_LOAD_FACTOR = 1000.0  # the bound never binds: only the batch size moves a run
    settings.INFERENCE_MAX_BATCH_SIZE = 2
    owner, base = UserFactory(), default_base()
    nodes = ["inference-1@h", "inference-2@h"]
    for node in nodes:
        beat(node)
    home, second = routing.ranked(routing.route_key(adapter_sha256=None, base_model_path=base.path), nodes)

    routed = [
        services.run_submit(user=owner, version=None, base_model=base, prompt=f"q{i}").routed_to for i in range(5)
    ]

    assert routed == [home, home, second, second, home]  # both batches full: the key's home (pure affinity)


def test_the_reaper_sends_a_dead_workers_runs_to_a_live_one_once(settings) -> None:
    settings.WORKER_HEARTBEAT_SECONDS = 10
    settings.INFERENCE_STALE_SECONDS = 30
    owner, base = UserFactory(), default_base()
    beat("inference@a")
    beat("inference@b")
    runs = [services.run_submit(user=owner, version=None, base_model=base, prompt=f"q{i}") for i in range(4)]
    on_a = [run for run in runs if run.routed_to == "inference@a"]
    on_b = [run for run in runs if run.routed_to == "inference@b"]
    assert on_a and on_b  # bounded load spreads one key's four runs over both
    started, waiting = on_a[0], on_a[1:]
    services.run_claim(run_id=started.pk, worker="host-a:11")
    for run in on_b:
        services.run_claim(run_id=run.pk, worker="host-b:22")
    # a dies: its heartbeat row and its run's heartbeat go stale
    beat("inference@a", age=31)
    InferenceRun.objects.filter(pk=started.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=31))

    assert services.runs_reap_stale() == len(on_a)

    for run in on_a:
        run.refresh_from_db()
        assert (run.status, run.routed_to, run.claimed_by) == (InferenceRun.Status.QUEUED, "inference@b", "")
        assert sent_queue(run) == "inference.inference@b"
    assert all(InferenceRun.objects.get(pk=r.pk).status == InferenceRun.Status.RUNNING for r in on_b)
    # requeued once: the next sweep finds nothing lost
    assert services.runs_reap_stale() == 0
    # b takes it, a's message (should a come back) finds it claimed, and only b's finish counts
    assert services.run_claim(run_id=started.pk, worker="host-b:22").attempts == 2
    assert services.run_claim(run_id=started.pk, worker="host-a:11") is None
    assert services.run_finish(run_id=started.pk, answer="from a", expected_worker="host-a:11") is None
    done = services.run_finish(run_id=started.pk, answer="from b", expected_worker="host-b:22")
    assert done is not None and done.answer == "from b"
    assert waiting == [] or all(services.run_claim(run_id=r.pk, worker="host-b:22").attempts == 1 for r in waiting)


def test_a_run_lost_too_often_or_with_no_other_live_worker_is_failed(settings) -> None:
    settings.WORKER_HEARTBEAT_SECONDS = 10
    settings.INFERENCE_STALE_SECONDS = 30
    settings.INFERENCE_MAX_ATTEMPTS = 2
    owner, base = UserFactory(), default_base()
    beat("inference@a")
    beat("inference@b")
    tired, alone = (services.run_submit(user=owner, version=None, base_model=base, prompt=f"q{i}") for i in range(2))
    InferenceRun.objects.filter(pk=tired.pk).update(attempts=1)
    for run in (tired, alone):
        services.run_claim(run_id=run.pk, worker="host:1")
    InferenceRun.objects.filter(pk=alone.pk).update(routed_to="inference@a")
    InferenceRun.objects.filter(pk__in=[tired.pk, alone.pk]).update(heartbeat_at=timezone.now() - timedelta(seconds=31))
    beat("inference@b", age=31)  # only a is alive, and alone's own worker was a

    assert services.runs_reap_stale() == 2

    tired.refresh_from_db()
    alone.refresh_from_db()
    assert (tired.status, tired.attempts, tired.error) == (InferenceRun.Status.FAILED, 2, services.WORKER_LOST)
    assert (alone.status, alone.error) == (InferenceRun.Status.FAILED, services.WORKER_LOST)


def test_engine_states_list_every_workers_engines_and_healthz_shows_them(client: Client) -> None:
    cache.clear()
    for worker, node in (("host:1", "inference@a"), ("host:2", "inference-2@a")):
        cache.set(
            selectors.ENGINE_STATE_CACHE_KEY.format(worker=worker),
            [{"base_model": "/m", "device": "cpu", "adapters": [{"adapter_id": "ab" * 32}], "adapter_count": 1,
              "worker": worker, "node": node, "published_at": time.time(), "memory": {"rss_bytes": 5}}],
        )  # fmt: skip
    cache.set(selectors.ENGINE_WORKERS_CACHE_KEY, ["host:1", "host:2", "host:3"])  # host:3's state expired

    assert [state["node"] for state in selectors.engine_states()] == ["inference@a", "inference-2@a"]
    engines = client.get("/healthz").json()["components"]["engines"]
    assert engines["ok"] is True and engines["count"] == 2
    assert {(e["node"], e["worker"], e["adapters"][0]) for e in engines["engines"]} == {
        ("inference@a", "host:1", "ab" * 32),
        ("inference-2@a", "host:2", "ab" * 32),
    }


def run_module():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import run
    finally:
        sys.path.pop(0)
    return run


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "65", "2; rm -rf /"])
def test_make_run_refuses_a_bad_inference_workers_count(monkeypatch, value: str) -> None:
    monkeypatch.setenv("INFERENCE_WORKERS", value)
    with pytest.raises(SystemExit, match="INFERENCE_WORKERS must be a whole number"):
        run_module().celery_argvs(ROOT / "var")


def test_make_run_starts_the_configured_inference_workers_each_with_its_own_node(monkeypatch) -> None:
    run = run_module()
    monkeypatch.setenv("INFERENCE_WORKERS", "3")
    argvs = run.celery_argvs(ROOT / "var")
    inference = {name: argv for name, argv in argvs.items() if name.startswith("worker-inference")}
    assert list(inference) == ["worker-inference", "worker-inference-2", "worker-inference-3"]
    nodes = [argv[argv.index("-n") + 1] for argv in inference.values()]
    assert nodes == ["inference@%h", "inference-2@%h", "inference-3@%h"]
    assert all(argv[argv.index("-Q") + 1] == "inference" for argv in inference.values())
    monkeypatch.delenv("INFERENCE_WORKERS")
    assert 1 <= run.inference_workers() <= 4
    monkeypatch.setenv("INFERENCE_TORCH_THREADS", "many")
    with pytest.raises(SystemExit, match="INFERENCE_TORCH_THREADS must be a whole number"):
        run.inference_torch_threads(2)
    monkeypatch.delenv("INFERENCE_TORCH_THREADS")
    assert run.inference_torch_threads(2) == max(1, (run.os.cpu_count() or 1) // 2)


def test_a_worker_that_lost_its_claim_is_told_to_stop_streaming_the_run(settings) -> None:
    owner, base = UserFactory(), default_base()
    kept, taken = (services.run_submit(user=owner, version=None, base_model=base, prompt=f"q{i}") for i in range(2))
    for run in (kept, taken):
        services.run_claim(run_id=run.pk, worker="here:1")
    events = {kept.pk: threading.Event(), taken.pk: threading.Event()}
    engine_host._active.update(events)
    try:
        # the reaper gave ``taken`` to another worker while this one could not beat; that one claimed it
        InferenceRun.objects.filter(pk=taken.pk).update(status=InferenceRun.Status.QUEUED, claimed_by="")
        services.run_claim(run_id=taken.pk, worker="there:2")

        assert engine_host.fence_lost_runs(worker="here:1") == [taken.pk]
        assert events[taken.pk].is_set() and not events[kept.pk].is_set()
    finally:
        for run_id in events:
            engine_host._active.pop(run_id, None)
