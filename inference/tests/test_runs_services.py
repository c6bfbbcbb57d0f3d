"""Run services without a worker: submit checks, claim and finish, the reaper, event streams, batches and proofs."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from inference import ids, selectors, services, streams
from inference.models import InferenceRun, RunBatch
from ledger import chain, hashing, merkle
from ledger import services as ledger_services
from ledger.models import Anchor
from modelfactory.tests.factories import UserFactory, default_base

from .runs_support import clear_rate_limits, served_version

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    clear_rate_limits()


@pytest.fixture
def base():
    return default_base()


@pytest.fixture
def owner():
    return UserFactory()


@pytest.fixture
def version(owner, base):
    return served_version(owner=owner, base_model=base, adapter=None, name="Zorblat helper", published=True)


def finished_run(user, version, *, answer: str = "The code is 7421.") -> InferenceRun:
    run = services.run_submit(user=user, version=version, prompt="What is the code?", options={"max_tokens": 8})
    services.run_claim(run_id=run.pk, worker="test:1")
    return services.run_finish(
        run_id=run.pk, answer=answer, finish_reason="stop", prompt_tokens=5, completion_tokens=6, latency_ms=12
    )


def test_a_published_version_is_askable_by_anyone_and_an_unpublished_one_only_by_its_owner(owner, base) -> None:
    other = UserFactory()
    published = served_version(owner=owner, base_model=base, adapter=None, name="open", published=True)
    private = served_version(owner=owner, base_model=base, adapter=None, name="secret", published=False)

    assert set(selectors.versions_askable_by(user=other)) == {published}
    assert set(selectors.versions_askable_by(user=owner)) == {published, private}
    assert list(selectors.versions_askable_by(user=other, q="OPE")) == [published]
    assert list(selectors.versions_askable_by(user=other, base=base.name)) == [published]
    with pytest.raises(services.ModelNotFound, match="does not exist or is not published"):
        services.run_submit(user=other, version=private, prompt="hi")
    assert not InferenceRun.objects.exists()


def test_a_submitted_run_is_queued_with_clean_options_and_its_token_count(owner, version) -> None:
    run = services.run_submit(user=owner, version=version, prompt="What is the code of Zorblat?", source="api")

    assert run.status == InferenceRun.Status.QUEUED
    assert run.kind == InferenceRun.Kind.COMPLETION
    assert run.options == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 256, "stop": [], "seed": None}
    assert 5 <= run.prompt_tokens <= 12
    assert run.base_model == version.base_model
    assert ids.model_id_of(run.version, run.base_model) == f"mv-{version.pk}"


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"prompt": ""}, "the prompt is empty", "prompt"),
        ({"prompt": "a\x00b"}, "NUL", "prompt"),
        ({"prompt": 7}, "must be a string", "prompt"),
        ({"messages": []}, "non-empty list", "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "role must be one of", "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "only text", "messages[0].content"),
        ({"prompt": "x", "options": {"max_tokens": 0}}, "between 1 and", "max_tokens"),
        ({"prompt": "x", "options": {"max_tokens": 1_000_000}}, "between 1 and", "max_tokens"),
        ({"prompt": "x", "options": {"max_tokens": "9"}}, "integer", "max_tokens"),
        ({"prompt": "x", "options": {"temperature": -1}}, "between 0 and 2", "temperature"),
        ({"prompt": "x", "options": {"temperature": float("nan")}}, "must be a number", "temperature"),
        ({"prompt": "x", "options": {"top_p": 0}}, "greater than 0", "top_p"),
        ({"prompt": "x", "options": {"stop": ["a", "b", "c", "d", "e"]}}, "at most 4", "stop"),
        ({"prompt": "x", "options": {"stop": [""]}}, "non-empty", "stop"),
        ({"prompt": "x", "options": {"seed": -3}}, "seed", "seed"),
        ({"prompt": "x", "options": {"beam_width": 3}}, "unknown option", "beam_width"),
    ],
)
def test_bad_requests_are_refused_with_the_field_named_and_nothing_written(owner, version, kwargs, error, param):
    with pytest.raises(services.RunRejected, match=error) as refused:
        services.run_submit(user=owner, version=version, **kwargs)
    assert refused.value.param == param
    assert refused.value.status == 400
    assert not InferenceRun.objects.exists()


def test_a_prompt_over_the_token_limit_is_refused_as_context_length_exceeded(owner, version, settings) -> None:
    settings.INFERENCE_MAX_PROMPT_TOKENS = 50
    with pytest.raises(services.PromptTooLong, match="tokens long; the limit is 50") as refused:
        services.run_submit(user=owner, version=version, prompt="word " * 60)
    assert refused.value.code == "context_length_exceeded"
    settings.INFERENCE_MAX_PROMPT_CHARS = 100
    with pytest.raises(services.PromptTooLong, match="characters long"):
        services.run_submit(user=owner, version=version, messages=[{"role": "user", "content": "é" * 101}])
    assert not InferenceRun.objects.exists()


def test_the_rate_limit_refuses_the_request_past_the_window_allowance_with_retry_after(owner, version, settings):
    settings.INFERENCE_RATE_LIMIT = "2/hour"
    other = UserFactory()
    for _ in range(2):
        services.run_submit(user=owner, version=version, prompt="hi")
    with pytest.raises(services.RateLimited) as limited:
        services.run_submit(user=owner, version=version, prompt="hi")
    assert 1 <= limited.value.retry_after <= 3600
    assert limited.value.status == 429
    services.run_submit(user=other, version=version, prompt="hi")  # per user
    assert InferenceRun.objects.count() == 3


def test_claim_is_taken_once_and_a_redelivered_message_for_a_claimed_or_finished_run_does_nothing(owner, version):
    run = services.run_submit(user=owner, version=version, prompt="hi")

    assert services.run_claim(run_id=run.pk, worker="w:1") is not None
    assert services.run_claim(run_id=run.pk, worker="w:2") is None  # fresh claim: the first worker is on it
    later = timezone.now() + timedelta(minutes=5)
    taken = services.run_claim(run_id=run.pk, worker="w:2", now=later)  # stale claim: taken over
    assert taken is not None and taken.claimed_by == "w:2" and taken.attempts == 2
    assert services.run_finish(run_id=run.pk, answer="late", expected_worker="w:1") is None
    finished = services.run_finish(run_id=run.pk, answer="Hello!", finish_reason="stop", expected_worker="w:2")
    assert finished.status == InferenceRun.Status.SUCCEEDED
    assert services.run_claim(run_id=run.pk, worker="w:3", now=later + timedelta(hours=1)) is None
    assert services.run_finish(run_id=run.pk, error="again") is None


def test_a_finished_run_hashes_its_canonical_facts(owner, version) -> None:
    run = finished_run(owner, version)

    assert run.run_hash == "0x" + hashing.keccak256(run.facts.encode()).hex()
    assert f'"answer":"{run.answer}"' in run.facts
    assert f'"manifest_hash":"{version.manifest_hash}"' in run.facts
    assert run.facts == services.run_facts(InferenceRun.objects.get(pk=run.pk)).decode()


def test_the_reaper_fails_runs_whose_worker_was_lost_and_spares_live_ones(owner, version, settings) -> None:
    settings.INFERENCE_STALE_SECONDS = 30
    settings.INFERENCE_QUEUE_TIMEOUT_SECONDS = 600
    lost, alive, waiting = (services.run_submit(user=owner, version=version, prompt=f"q{i}") for i in range(3))
    services.run_claim(run_id=lost.pk, worker="gone:1")
    services.run_claim(run_id=alive.pk, worker="here:1")
    InferenceRun.objects.filter(pk=lost.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=31))

    assert services.runs_reap_stale() == 1
    lost.refresh_from_db()
    assert lost.status == InferenceRun.Status.FAILED
    assert lost.error == "the inference worker was lost; please retry"
    assert InferenceRun.objects.get(pk=alive.pk).status == InferenceRun.Status.RUNNING

    assert services.runs_reap_stale(now=timezone.now() + timedelta(seconds=601)) == 2
    assert InferenceRun.objects.get(pk=waiting.pk).error == services.WORKER_LOST


def _read(reader: str, **kwargs: Any) -> list[tuple[float, streams.RunEvent]]:
    """Each event of ``run_events``, or of ``arun_events`` (what the web server's streams use), with when it came."""
    if reader == "sync":
        return [(time.monotonic(), event) for event in streams.run_events(**kwargs)]

    async def collect() -> list[tuple[float, streams.RunEvent]]:
        return [(time.monotonic(), event) async for event in streams.arun_events(**kwargs)]

    return async_to_sync(collect)()


@pytest.mark.django_db(transaction=True)  # the reader thread reads through its own connection
@pytest.mark.parametrize("reader", ["sync", "async"])
@pytest.mark.parametrize("broker", ["redis", "database"])
def test_run_events_deliver_tokens_as_written_then_one_final_event(owner, version, settings, broker, reader) -> None:
    if broker == "database":
        settings.BROKER_KIND = "filesystem"
    elif not streams.uses_redis():
        pytest.skip("the broker is not Redis here")
    run = services.run_submit(user=owner, version=version, prompt="hi")
    services.run_claim(run_id=run.pk, worker="w:1")
    writer = streams.RunStreamWriter(run_id=run.pk, public_id=run.public_id)
    seen: list[tuple[float, streams.RunEvent]] = []

    def read() -> None:
        try:
            seen.extend(_read(reader, run_id=run.public_id, timeout_s=10))
        finally:
            connection.close()

    thread = threading.Thread(target=read)
    thread.start()
    for piece in ("The ", "code ", "is ", "7421."):
        writer.token(piece)
        time.sleep(0.25)
    writer.flush()
    finished_at = time.monotonic()
    services.run_finish(run_id=run.pk, answer=writer.answer, finish_reason="stop", completion_tokens=4)
    thread.join(15)

    tokens = [e for _, e in seen if e.type == streams.TOKEN]
    assert "".join(e.text for e in tokens) == "The code is 7421."
    assert len(tokens) >= 3  # delivered piece by piece, not at the end
    assert seen[0][0] < finished_at - 0.4
    assert seen[-1][1].type == streams.DONE and seen[-1][1].data["completion_tokens"] == 4
    # a reader that comes late, or resumes, still gets the rest and the end
    late = [e for _, e in _read(reader, run_id=run.public_id, last_id=tokens[1].id, timeout_s=5)]
    assert "".join(e.text for e in late if e.type == streams.TOKEN) == "is 7421."
    assert late[-1].type == streams.DONE
    if streams.uses_redis():  # once the stream expired, the row answers
        streams._client().delete(streams._key(run.public_id))
        expired = [e for _, e in _read(reader, run_id=run.pk, timeout_s=10)]
        assert [e.type for e in expired] == [streams.TOKEN, streams.DONE]
        assert expired[0].text == "The code is 7421."


def test_streams_without_redis_share_one_poll_of_the_database(owner, version, settings) -> None:
    # given: eight running runs, each with its own partial answer, and no Redis
    settings.BROKER_KIND = "filesystem"
    settings.INFERENCE_RATE_LIMIT = "100/minute"
    runs = []
    for i in range(8):
        run = services.run_submit(user=owner, version=version, prompt=f"question {i}")
        services.run_claim(run_id=run.pk, worker="w:1")
        InferenceRun.objects.filter(pk=run.pk).update(answer=f"answer {i}")
        runs.append(run)

    async def follow_all() -> list[list[streams.RunEvent]]:
        async def follow(run: InferenceRun) -> list[streams.RunEvent]:
            return [event async for event in streams.arun_events(run_id=run.public_id, timeout_s=1.0)]

        return await asyncio.gather(*(follow(run) for run in runs))

    # when: all eight streams follow their run for a second at once
    with CaptureQueriesContext(connection) as queries:
        seen = async_to_sync(follow_all)()

    # then: each stream got its own run's text, from about one query per poll interval for all of them (one each
    # would be about 8 x 10)
    assert [[e.text for e in events] for events in seen] == [[f"answer {i}"] for i in range(8)]
    polls = [q for q in queries.captured_queries if '"public_id" IN' in q["sql"]]
    assert len(polls) <= 2 * (1.0 / streams.DB_POLL_SECONDS) + 2


def test_a_batch_seals_when_full_or_old_and_each_run_proves_its_inclusion(owner, version, settings) -> None:
    settings.INFERENCE_BATCH_RUNS = 3
    settings.INFERENCE_BATCH_SECONDS = 60
    runs = [finished_run(owner, version, answer=f"answer {i}") for i in range(4)]
    failed = services.run_submit(user=owner, version=version, prompt="x")
    services.run_finish(run_id=failed.pk, error="broken")

    batches = services.runs_seal_batches()
    assert [b.size for b in batches] == [3]  # full; the fourth waits, too young
    assert services.runs_seal_batches() == []
    later = services.runs_seal_batches(now=timezone.now() + timedelta(seconds=61))
    assert [b.size for b in later] == [1]
    assert InferenceRun.objects.get(pk=failed.pk).batch is None  # only succeeded runs are anchored

    for run in runs:
        run.refresh_from_db()
        proof = selectors.run_proof(run)
        assert proof["leafEncoding"] == ["bytes32"] and proof["value"] == [run.run_hash]
        assert merkle.verify(proof["root"], ["bytes32"], proof["value"], proof["proof"])
        assert proof["root"] == run.batch.root == run.batch.anchor.root
        assert run.batch.anchor.kind == Anchor.Kind.INFERENCE_BATCH
    assert selectors.run_proof(failed) is None


@pytest.mark.chain
def test_a_sealed_batch_is_anchored_and_a_run_proof_verifies_on_chain(owner, version, deployed_chain) -> None:
    runs = [finished_run(owner, version, answer=f"answer {i}") for i in range(3)]
    (batch,) = services.runs_seal_batches(force=True)

    ledger_services.anchor_send(anchor_id=batch.anchor_id)
    ledger_services.anchors_confirm()
    batch = RunBatch.objects.select_related("anchor").get(pk=batch.pk)
    assert batch.anchor.status == Anchor.Status.CONFIRMED

    for run in runs:
        run.refresh_from_db()
        proof = selectors.run_proof(run)
        assert proof["anchor"]["status"] == "confirmed"
        assert chain.verify_on_chain(proof["root"], proof["leaf"], proof["proof"])
    tampered = merkle.leaf_hash(["bytes32"], ["0x" + "12" * 32])
    assert not chain.verify_on_chain(proof["root"], tampered, proof["proof"])


def test_the_beat_tasks_run_on_the_default_queue_and_generation_on_the_inference_queue(settings) -> None:
    import inference.tasks  # noqa: F401  (registers the tasks, as the worker's autodiscovery does)
    from openledger_web.celery import app

    def queue_of(name: str) -> str:
        return app.amqp.router.route({}, name)["queue"].name

    assert queue_of("inference.tasks.run_generate_task") == "inference"
    for entry in ("inference-reap-stale", "inference-seal-batch"):
        task = settings.CELERY_BEAT_SCHEDULE[entry]["task"]
        assert task in app.tasks
        assert queue_of(task) == "default"
