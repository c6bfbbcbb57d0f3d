"""The answer stream through the web server `make run` starts (gunicorn's uvicorn worker serving the ASGI app): each
token reaches the browser as it is published, before the run ends (nothing in the stack buffers the response), and
many open streams held by slow readers leave `/healthz` and the pages answering (issue #11: 16 streams once took
every gunicorn thread and `/healthz` waited 42 s). Both with Redis streams and with the embedded broker's polling."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import requests
from django.conf import settings
from django.templatetags.static import static
from django.test import Client
from django.urls import reverse

from inference import services, streams
from inference.models import InferenceRun
from modelfactory.tests.factories import BaseModelFactory, UserFactory
from openledger_web.testing import gunicorn_process, service_env

from .test_ancestry import lineage_version

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(params=["redis", "embedded"])
def broker(request: pytest.FixtureRequest, settings: Any) -> str:
    """The broker both this test and its server use: Redis (streams) or the embedded one (the database is polled)."""
    if request.param == "redis":
        if not streams.uses_redis():
            pytest.skip("the broker is not Redis here")
        return settings.CELERY_BROKER_URL
    settings.BROKER_KIND = "filesystem"
    for sub in ("queue", "control"):
        (settings.BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    return "filesystem://"


def web_server(broker_url: str) -> Any:
    """The ASGI app under gunicorn's uvicorn worker, as `make run` starts it (one process here)."""
    return gunicorn_process(
        log=settings.DATA_DIR / "gunicorn-stream-test.log",
        env=service_env(CELERY_BROKER_URL=broker_url),
        ready_path="/accounts/login/",
    )


def _next_event(lines: Iterator[str]) -> tuple[str, str]:
    event = ""
    for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event:
            return event, line.removeprefix("data: ")
    raise AssertionError("the stream ended without another event")


def _running_run(owner: Any, version: Any) -> InferenceRun:
    # created directly rather than submitted: no inference worker here, the test plays its part
    run = InferenceRun.objects.create(
        user=owner, version=version, base_model=version.base_model, kind="chat",
        messages=[{"role": "user", "content": "hi"}], options={"max_tokens": 8},
    )  # fmt: skip
    services.run_claim(run_id=run.pk, worker="test-worker")
    return run


def _session_cookies(user: Any) -> dict[str, str]:
    client = Client()
    client.force_login(user)
    return {settings.SESSION_COOKIE_NAME: client.cookies[settings.SESSION_COOKIE_NAME].value}


def test_tokens_reach_the_browser_before_the_run_ends(transactional_db: Any, broker: str) -> None:
    # given: a running run of the user's, and the user's session
    owner = UserFactory(username="streamer")
    version = lineage_version(owner=owner, base_model=BaseModelFactory(), name="streamed")
    run = _running_run(owner, version)
    cookies = _session_cookies(owner)
    writer = streams.RunStreamWriter(run_id=run.pk, public_id=run.public_id)

    with web_server(broker) as url:
        path = reverse("inference:stream", args=[run.public_id])
        with requests.get(url + path, cookies=cookies, stream=True, timeout=20) as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            lines = response.iter_lines(decode_unicode=True)

            # when: the worker writes the first token, the browser sees it while the run still runs
            writer.token("Hello")
            writer.flush()
            assert _next_event(lines) == ("token", '{"text": "Hello"}')
            assert InferenceRun.objects.get(pk=run.pk).status == "running"

            # then the rest, and the end
            writer.token(" world")
            writer.flush()
            assert _next_event(lines) == ("token", '{"text": " world"}')
            services.run_finish(run_id=run.pk, answer="Hello world", finish_reason="stop", completion_tokens=2)
            event, data = _next_event(lines)
            assert event == "done" and '"completion_tokens": 2' in data


OPEN_STREAMS = 32  # twice the threads of the gthread server that starved (2 workers x 8 threads)


def test_open_streams_held_by_slow_readers_leave_healthz_and_pages_answering(
    transactional_db: Any, broker: str
) -> None:
    # given: many runs that are still running, each followed by a reader that reads nothing
    owner = UserFactory(username="many-streams")
    version = lineage_version(owner=owner, base_model=BaseModelFactory(), name="many")
    runs = [_running_run(owner, version) for _ in range(OPEN_STREAMS)]
    cookies = _session_cookies(owner)

    held_streams: list[requests.Response] = []
    with web_server(broker) as url, ExitStack() as held:
        for run in runs:
            path = reverse("inference:stream", args=[run.public_id])
            response = held.enter_context(requests.get(url + path, cookies=cookies, stream=True, timeout=30))
            assert response.status_code == 200
            held_streams.append(response)

        # when: the site is asked something else while every stream is open (generous timeouts: no latency claim)
        health = requests.get(f"{url}/healthz", timeout=30)
        page = requests.get(url + reverse("inference:history"), cookies=cookies, timeout=30)
        script = requests.get(url + static("vendor/htmx.min.js"), timeout=30)

        # then it answers; and the streams were live all along: a finished run's stream ends with its answer
        assert health.status_code in (200, 503) and health.json()["components"]["database"]["ok"]
        assert page.status_code == 200
        assert script.content == (settings.BASE_DIR / "static" / "vendor" / "htmx.min.js").read_bytes()
        services.run_finish(run_id=runs[0].pk, answer="ok", finish_reason="stop", completion_tokens=1)
        lines = held_streams[0].iter_lines(decode_unicode=True)
        assert _next_event(lines)[0] in ("token", "done")
