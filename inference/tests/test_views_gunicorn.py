"""The answer stream through gunicorn's gthread worker, as `make run` serves it: each token reaches the browser as it
is published, before the run ends (nothing in the stack buffers the response)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests
from django.conf import settings
from django.test import Client
from django.urls import reverse

from inference import services, streams
from inference.models import InferenceRun
from ledger.testing import free_port
from modelfactory.tests.factories import BaseModelFactory, UserFactory
from openledger_web.testing import ROOT, service_env

from .test_ancestry import lineage_version

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@contextmanager
def gunicorn() -> Iterator[str]:
    port = free_port()
    log = settings.DATA_DIR / "gunicorn-stream-test.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "openledger_web.wsgi", "-b", f"127.0.0.1:{port}",
             "--worker-class", "gthread", "--workers", "1", "--threads", "4", "--timeout", "30",
             "--no-control-socket"],  # the default socket path in $HOME is shared by every gunicorn here
            cwd=ROOT, env=service_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{url}/accounts/login/", timeout=5)
                break
            except (requests.ConnectionError, requests.Timeout):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not start; see {log}") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _next_event(lines: Iterator[str]) -> tuple[str, str]:
    event = ""
    for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event:
            return event, line.removeprefix("data: ")
    raise AssertionError("the stream ended without another event")


def test_tokens_reach_the_browser_before_the_run_ends(transactional_db: Any) -> None:
    # given: a running run of the user's, and the user's session
    owner = UserFactory(username="streamer")
    version = lineage_version(owner=owner, base_model=BaseModelFactory(), name="streamed")
    # created directly rather than submitted: no inference worker here, the test plays its part below
    run = InferenceRun.objects.create(
        user=owner, version=version, base_model=version.base_model, kind="chat",
        messages=[{"role": "user", "content": "hi"}], options={"max_tokens": 8},
    )  # fmt: skip
    services.run_claim(run_id=run.pk, worker="test-worker")
    client = Client()
    client.force_login(owner)
    cookies = {settings.SESSION_COOKIE_NAME: client.cookies[settings.SESSION_COOKIE_NAME].value}
    writer = streams.RunStreamWriter(run_id=run.pk, public_id=run.public_id)

    with gunicorn() as url:
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
