"""Two real inference workers (Celery processes, thread pools, the bundled model, real Redis): runs are spread over
both by the routing ring, /healthz lists both workers' engines, and killing one mid-stream (SIGKILL, its whole
process group) leaves every run answered exactly once by the other: finished once, its stream coherent (the tokens
add up to the answer, nothing sent twice) and ending in one final event."""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.test import Client

from inference import routing, services, streams
from inference.models import InferenceRun
from modelfactory.tests.factories import UserFactory, default_base
from openledger_web.testing import celery_worker_process

from .runs_support import clear_rate_limits

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

STORY = [{"role": "user", "content": "Tell me a very long story about a brave knight, a dragon and a lost city."}]
WORKER = {"pool": "threads", "concurrency": 8, "timeout": 120, "queues": "inference"}
WORKER_ENV = {"INFERENCE_HEARTBEAT_SECONDS": "1", "INFERENCE_TORCH_THREADS": "1", "INFERENCE_BATCH_WAIT_MS": "50"}


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    clear_rate_limits()


def wait_for(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


def streamed(run: InferenceRun) -> tuple[str, list[str]]:
    """The text a client reading the run's whole stream got, and the types of its final events (Redis entries)."""
    entries = streams._client().xrange(streams._key(run.public_id))
    text = "".join(f[b"text"].decode() for _, f in entries if f[b"type"] == streams.TOKEN.encode())
    finals = [f[b"type"].decode() for _, f in entries if f[b"type"] != streams.TOKEN.encode()]
    return text, finals


def test_killing_one_of_two_inference_workers_mid_stream_answers_every_run_exactly_once(
    settings, client: Client
) -> None:
    settings.WORKER_HEARTBEAT_SECONDS = 1  # as the workers beat (service_env): live means seen within 3 s
    owner, base = UserFactory(), default_base()
    with (
        celery_worker_process(name="failover-a", **WORKER, **WORKER_ENV) as worker_a,
        celery_worker_process(name="failover-b", **WORKER, **WORKER_ENV) as worker_b,
    ):
        nodes = wait_for(lambda: routing.live_workers() if len(routing.live_workers()) == 2 else None, 30, "2 live")
        runs = [
            services.run_submit(user=owner, version=None, base_model=base, messages=STORY, options={"max_tokens": 160})
            for _ in range(6)
        ]
        by_node = {node: [run for run in runs if run.routed_to == node] for node in nodes}
        assert all(by_node.values()), by_node  # the bounded-load ring spread one key's six runs over both
        # both engines load and stream; /healthz lists each worker's engine
        for node in nodes:
            wait_for(lambda n=node: streamed(by_node[n][0])[0], 240, f"a token from {node}")
        engines = wait_for(
            lambda: (
                (e := client.get("/healthz").json()["components"]["engines"]["engines"])
                and {x["node"] for x in e} == set(nodes)
                and e
            ),
            30,
            "both engines on /healthz",
        )
        assert all(e["base_model"] and e["device"] for e in engines)

        # the worker whose runs are still furthest from done dies
        victim_node = min(nodes, key=lambda n: sum(len(streamed(r)[0]) for r in by_node[n]) / len(by_node[n]))
        victim = worker_a if victim_node.startswith("failover-a") else worker_b
        cut = {run.pk: streamed(run)[0] for run in by_node[victim_node]}
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(10)
        interrupted = [
            run
            for run in by_node[victim_node]
            if InferenceRun.objects.get(pk=run.pk).status in (InferenceRun.Status.RUNNING, InferenceRun.Status.QUEUED)
        ]
        assert interrupted, "the victim finished its runs before it could be killed"
        assert any(cut[run.pk] for run in interrupted), "no interrupted run had streamed yet"

        # the reaper (beat's task, called here) sends the lost runs to the live worker once it sees the loss
        settings.INFERENCE_STALE_SECONDS = 4
        wait_for(lambda: routing.live_workers() == [n for n in nodes if n != victim_node], 10, "the victim seen dead")
        time.sleep(4.5)  # its runs' heartbeats go stale
        assert services.runs_reap_stale() == len(interrupted)
        assert services.runs_reap_stale() == 0  # once

        def all_finished() -> bool:
            return (
                not InferenceRun.objects.filter(pk__in=[r.pk for r in runs])
                .exclude(status__in=InferenceRun.FINISHED)
                .exists()
            )

        wait_for(all_finished, 300, "every run finished")

    for run in runs:
        run.refresh_from_db()
        assert run.status == InferenceRun.Status.SUCCEEDED, run.error
        assert run.answer and run.run_hash and run.completion_tokens > 0
        text, finals = streamed(run)
        assert text == run.answer, f"run {run.pk}: the stream is not the answer"
        assert finals == [streams.DONE], f"run {run.pk}: final events {finals}"
        events = list(streams.run_events(run_id=run.public_id, timeout_s=10))
        assert "".join(e.text for e in events if e.type == streams.TOKEN) == run.answer
        assert events[-1].type == streams.DONE
    for run in interrupted:
        assert run.routed_to != victim_node
        if cut[run.pk]:  # it had started on the victim: claimed a second time, its stream continued, not repeated
            assert run.attempts == 2 and run.answer.startswith(cut[run.pk])
