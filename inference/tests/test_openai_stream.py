"""A /v1 answer streamed in OpenAI's chunks, the same under Django's WSGI handler (runserver, the tests' live server)
and its ASGI handler (what `make run` serves, where the stream is an async iterator that waits without a thread)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client

from accounts.services import api_token_create
from inference import services, streams
from inference.models import InferenceRun
from modelfactory.tests.factories import UserFactory, default_base

from .runs_support import clear_rate_limits, served_version
from .test_views import stream_body

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    clear_rate_limits()


@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_a_streamed_chat_answer_arrives_in_openai_chunks_then_usage_then_done(
    server: str, django_capture_on_commit_callbacks: Any
) -> None:
    # given: a published version and an API token
    version = served_version(owner=UserFactory(), base_model=default_base(), adapter=None, name="streamer")
    token = api_token_create(user=UserFactory()).key
    body = {"model": f"mv-{version.pk}", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    post = (Client() if server == "wsgi" else AsyncClient()).post
    if server == "asgi":
        post = async_to_sync(post)

    # when: the question is asked, and the "worker" answers it in two pieces
    response = post("/v1/chat/completions", data=json.dumps(body), content_type="application/json",
                    headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    run = InferenceRun.objects.get(public_id=response["X-OpenLedger-Run"])
    services.run_claim(run_id=run.pk, worker="w")
    writer = streams.RunStreamWriter(run_id=run.pk, public_id=run.public_id)
    writer.token("Hel")
    writer.token("lo")
    writer.flush()
    with django_capture_on_commit_callbacks(execute=True):
        services.run_finish(run_id=run.pk, answer="Hello", finish_reason="stop", completion_tokens=2, prompt_tokens=5)
    lines = [line.removeprefix("data: ") for line in stream_body(response).splitlines() if line.startswith("data: ")]

    # then
    assert response.status_code == 200 and response.is_async == (server == "asgi")
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    assert all(c["id"] == f"chatcmpl-{run.public_id}" and c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "Hello"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
    }  # fmt: skip
