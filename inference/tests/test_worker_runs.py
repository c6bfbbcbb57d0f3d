"""Runs through a real inference worker (thread pool, one shared engine, the real bundled model, real peft adapters):
mixed-adapter batches answer as each adapter alone, tokens stream before the end, a broken adapter fails alone, and
the unmodified ``openai`` client gets answers, streamed and not."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import psutil
import pytest
from django.db import connection, transaction

from accounts.services import api_token_create
from inference import selectors, services, streams
from inference.models import InferenceRun
from modelfactory.tests.factories import UserFactory, default_base
from openledger_web.testing import celery_worker_process

from .runs_support import clear_rate_limits, make_adapters, served_version

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

QUESTION = [{"role": "user", "content": "Name three colours of the rainbow."}]
GREEDY = {"max_tokens": 10, "temperature": 0}


@pytest.fixture(scope="module")
def adapter_folders(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_adapters(tmp_path_factory.mktemp("adapters"), count=3)


@pytest.fixture(scope="module")
def inference_worker(django_db_setup, django_db_blocker) -> Iterator[object]:
    """One inference worker for the module: a thread pool sharing one engine, which waits 300 ms to gather a batch
    and keeps at most two adapters loaded."""
    with (
        django_db_blocker.unblock(),
        celery_worker_process(
            queues="inference",
            name="h3-inference",
            pool="threads",
            concurrency=4,
            timeout=120,
            INFERENCE_BATCH_WAIT_MS="300",
            INFERENCE_CACHE_ADAPTERS="2",
            INFERENCE_HEARTBEAT_SECONDS="1",
        ) as proc,
    ):
        yield proc


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    clear_rate_limits()


@pytest.fixture
def setup(adapter_folders, inference_worker):
    owner = UserFactory()
    base = default_base()
    versions = [
        served_version(owner=owner, base_model=base, adapter=folder, name=f"adapter {i}")
        for i, folder in enumerate(adapter_folders[:2])
    ]
    return owner, base, versions


def wait_finished(*runs: InferenceRun, timeout: float = 240) -> list[InferenceRun]:
    deadline = time.monotonic() + timeout
    pending = {run.pk for run in runs}
    while pending and time.monotonic() < deadline:
        pending = set(
            InferenceRun.objects.filter(pk__in=pending)
            .exclude(status__in=InferenceRun.FINISHED)
            .values_list("pk", flat=True)
        )
        time.sleep(0.2)
    assert not pending, f"runs still unfinished after {timeout} s"
    return [InferenceRun.objects.get(pk=run.pk) for run in runs]


def engine_state() -> dict:
    """The state published last, after this module's last run (earlier modules' workers may have left theirs)."""
    return max(selectors.engine_states(), key=lambda state: state["published_at"])


def batches_served() -> int:
    return engine_state()["batches"]


def test_two_adapters_answering_in_one_batch_give_the_tokens_each_gives_alone(setup) -> None:
    owner, _, (first, second) = setup
    alone = []
    for version in (first, second):
        run = services.run_submit(user=owner, version=version, messages=QUESTION, options=GREEDY)
        alone.append(wait_finished(run)[0])
    assert all(run.status == InferenceRun.Status.SUCCEEDED for run in alone), [r.error for r in alone]
    assert alone[0].answer != alone[1].answer  # the adapters really differ
    before = batches_served()

    with transaction.atomic():  # both tasks are queued at the commit, and the engine gathers them into one batch
        together = [
            services.run_submit(user=owner, version=version, messages=QUESTION, options=GREEDY)
            for version in (first, second)
        ]
    together = wait_finished(*together)

    assert [run.answer for run in together] == [run.answer for run in alone]
    assert [run.completion_tokens for run in together] == [run.completion_tokens for run in alone]
    assert batches_served() == before + 1, "the two runs did not share one batch"
    assert all(run.run_hash and run.latency_ms is not None for run in together)


def test_tokens_stream_before_the_answer_ends(setup) -> None:
    owner, _, _ = setup
    run = services.run_submit(
        user=owner,
        version=None,
        messages=[{"role": "user", "content": "Tell me a long story about a brave knight and a dragon."}],
        options={"max_tokens": 40},
    )
    events = [(time.monotonic(), event) for event in streams.run_events(run_id=run.public_id, timeout_s=240)]

    tokens = [(at, e) for at, e in events if e.type == streams.TOKEN]
    done_at, done = events[-1]
    assert done.type == streams.DONE, done.data
    assert len(tokens) >= 5
    assert tokens[0][0] < done_at - 0.2  # the first piece arrived well before the end
    (run,) = wait_finished(run)
    assert "".join(e.text for _, e in tokens) == run.answer
    assert run.first_token_ms < run.latency_ms
    assert done.data["completion_tokens"] == run.completion_tokens


def postgres_connections(proc: object) -> int:
    """The PostgreSQL connections the worker process holds now (task threads, heartbeats, its main thread)."""
    port = int(connection.settings_dict.get("PORT") or 5432)
    sockets = psutil.Process(proc.pid).net_connections(kind="tcp")
    return sum(1 for s in sockets if s.raddr and s.raddr.port == port)


def test_runs_streaming_their_answers_hold_no_database_connection(setup, inference_worker) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("counts the worker's PostgreSQL connections")
    owner, base, _ = setup
    story = [{"role": "user", "content": "Tell me a long story about a brave knight and a dragon."}]
    with transaction.atomic():  # the four tasks are queued together: one on each of the worker's four threads
        runs = [
            services.run_submit(user=owner, version=None, base_model=base, messages=story,
                                options={"max_tokens": 64, "temperature": 0})
            for _ in range(4)
        ]  # fmt: skip
    for run in runs:  # each is past its claim and its prefill: its first token is out
        first = next(streams.run_events(run_id=run.public_id, timeout_s=180), None)
        assert first is not None and first.type == streams.TOKEN, first

    held = postgres_connections(inference_worker)
    still_running = InferenceRun.objects.filter(pk__in=[r.pk for r in runs], status=InferenceRun.Status.RUNNING)

    assert still_running.count() == 4, "a run ended before the count: it measured nothing"
    # the heartbeat thread's and the main thread's at most; a thread per streaming run would make it 4 more
    assert held <= 2, f"the worker holds {held} PostgreSQL connections while 4 runs stream"
    finished = wait_finished(*runs)
    assert all(run.status == InferenceRun.Status.SUCCEEDED for run in finished), [r.error for r in finished]


def test_a_run_whose_adapter_cannot_load_fails_alone_not_its_batch(setup) -> None:
    owner, base, (good, _) = setup
    broken = served_version(owner=owner, base_model=base, adapter=None, name="broken", adapter_sha256="ab" * 32)

    with transaction.atomic():
        bad_run = services.run_submit(user=owner, version=broken, messages=QUESTION, options=GREEDY)
        good_run = services.run_submit(user=owner, version=good, messages=QUESTION, options=GREEDY)
    bad_run, good_run = wait_finished(bad_run, good_run)

    assert bad_run.status == InferenceRun.Status.FAILED
    assert f"model version {broken.pk} cannot be served" in bad_run.error
    assert "adapter_config.json" in bad_run.error
    assert good_run.status == InferenceRun.Status.SUCCEEDED and good_run.answer
    final = list(streams.run_events(run_id=bad_run.public_id, timeout_s=10))[-1]
    assert final.type == streams.ERROR and final.data["message"] == bad_run.error


def test_the_workers_engine_evicts_the_least_recently_used_adapter_at_its_bound(setup, adapter_folders) -> None:
    owner, base, (first, second) = setup
    third = served_version(owner=owner, base_model=base, adapter=adapter_folders[2], name="adapter 2")

    def ask(version) -> None:
        run = services.run_submit(user=owner, version=version, messages=QUESTION, options={"max_tokens": 2})
        assert wait_finished(run)[0].status == InferenceRun.Status.SUCCEEDED

    for version in (first, second, first):  # the second is now the least recently used
        ask(version)
    before = engine_state()
    assert {a["adapter_id"] for a in before["adapters"]} == {first.adapter_sha256, second.adapter_sha256}

    ask(third)

    after = engine_state()
    assert {a["adapter_id"] for a in after["adapters"]} == {first.adapter_sha256, third.adapter_sha256}
    assert after["evictions"] == before["evictions"] + 1 and after["adapter_count"] == after["max_adapters"] == 2


@pytest.fixture
def client_for(setup, live_server):
    _, _, versions = setup
    token = api_token_create(user=UserFactory()).key
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key=token, max_retries=0, timeout=240), versions


def test_the_openai_client_gets_a_chat_answer_that_names_its_run(client_for) -> None:
    client, (version, _) = client_for

    raw = client.chat.completions.with_raw_response.create(model=f"mv-{version.pk}", messages=QUESTION, max_tokens=10)
    completion = raw.parse()

    run = InferenceRun.objects.get(public_id=raw.headers["X-OpenLedger-Run"])
    assert completion.id == f"chatcmpl-{run.public_id}"
    assert completion.model == f"mv-{version.pk}"
    assert completion.choices[0].message.content == run.answer != ""
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens == run.completion_tokens
    assert completion.model_extra["openledger"]["run_id"] == str(run.public_id)
    assert run.source == InferenceRun.Source.API


def test_the_openai_client_streams_a_chat_answer_and_a_completion(client_for) -> None:
    client, (_, version) = client_for

    chunks = list(
        client.chat.completions.create(
            model=f"mv-{version.pk}",
            messages=QUESTION,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    run = InferenceRun.objects.get(public_id=chunks[0].id.removeprefix("chatcmpl-"))
    assert text == run.answer != ""
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage.completion_tokens == run.completion_tokens

    pieces = list(client.completions.create(model=f"mv-{version.pk}", prompt="The sky is", max_tokens=6, stream=True))
    run = InferenceRun.objects.get(public_id=pieces[0].id.removeprefix("cmpl-"))
    assert "".join(p.choices[0].text for p in pieces) == run.answer
    assert run.kind == InferenceRun.Kind.COMPLETION

    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="mv-987654321", prompt="hi", max_tokens=2)
    assert missing.value.code == "model_not_found"
