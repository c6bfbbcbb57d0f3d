"""The /v1 API refuses bad requests in OpenAI's error shape, with the right status, and writes no run; /v1/models and
/api/runs/<id>/ read back what is there."""

from __future__ import annotations

import json

import pytest

from accounts.authentication import api_key_hash
from accounts.models import ApiToken
from accounts.services import api_token_create
from inference import services
from inference.models import InferenceRun
from modelfactory.tests.factories import UserFactory, default_base

from .runs_support import clear_rate_limits, served_version

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    clear_rate_limits()


@pytest.fixture
def owner():
    return UserFactory()


@pytest.fixture
def base():
    return default_base()


@pytest.fixture
def version(owner, base):
    return served_version(owner=owner, base_model=base, adapter=None, name="Zorblat helper", published=True)


@pytest.fixture
def asker():
    return UserFactory()


@pytest.fixture
def token(asker) -> str:
    return api_token_create(user=asker).key


def post(client, path: str, body, token: str | None, content_type: str = "application/json", **headers):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    if token is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client.post(path, data=data, content_type=content_type, **headers)


def assert_openai_error(response, status: int, *, code: str | None = None, param: str | None = None) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    assert not InferenceRun.objects.exists()
    return error


def chat(version, **extra) -> dict:
    return {"model": f"mv-{version.pk}", "messages": [{"role": "user", "content": "What is the code?"}], **extra}


def test_it_refuses_a_request_without_a_token(client, version) -> None:
    response = post(client, "/v1/chat/completions", chat(version), None)
    error = assert_openai_error(response, 401, code="invalid_api_key")
    assert "Bearer" in error["message"]


def test_it_refuses_a_bad_token(client, version) -> None:
    assert_openai_error(post(client, "/v1/chat/completions", chat(version), "not-a-token"), 401, code="invalid_api_key")
    assert_openai_error(client.get("/v1/models", HTTP_AUTHORIZATION="Bearer nope"), 401)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_it_answers_404_model_not_found_for_an_unknown_or_unpublished_model(client, version, owner, base, token, path):
    private = served_version(owner=owner, base_model=base, adapter=None, name="private", published=False)
    body = chat(version) if "chat" in path else {"prompt": "Hello", "model": ""}
    for model in ("mv-999999", f"mv-{private.pk}", "gpt-4o", "base-999999"):
        body["model"] = model
        error = assert_openai_error(post(client, path, body, token), 404, code="model_not_found", param="model")
        assert model in error["message"]


def test_it_answers_400_context_length_exceeded_for_a_prompt_over_the_limit(client, version, token, settings) -> None:
    settings.INFERENCE_MAX_PROMPT_TOKENS = 40
    body = {"model": f"mv-{version.pk}", "prompt": "word " * 100}
    error = assert_openai_error(post(client, "/v1/completions", body, token), 400, code="context_length_exceeded")
    assert "limit is 40" in error["message"]
    long_chat = chat(version, messages=[{"role": "user", "content": "word " * 100}])
    assert_openai_error(post(client, "/v1/chat/completions", long_chat, token), 400, code="context_length_exceeded")


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 1_000_000}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"n": 2}, "n"),
        ({"stream": "yes"}, "stream"),
        ({"frobnicate": True}, "frobnicate"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"model": None}, "model"),
    ],
)
def test_it_answers_400_for_out_of_range_or_malformed_fields(client, version, token, extra, param) -> None:
    error = assert_openai_error(post(client, "/v1/chat/completions", chat(version, **extra), token), 400, param=param)
    assert error["type"] == "invalid_request_error"


def test_it_answers_400_for_malformed_json_a_bad_encoding_or_a_body_that_is_not_an_object(client, token) -> None:
    assert_openai_error(post(client, "/v1/chat/completions", '{"model": "mv-1", "messages": [', token), 400)
    assert_openai_error(post(client, "/v1/chat/completions", b'{"model": "\xff\xfe"}', token), 400)
    assert_openai_error(post(client, "/v1/chat/completions", "[1, 2]", token), 400)
    assert_openai_error(post(client, "/v1/completions", "", token), 400, param="model")


def test_it_answers_413_for_an_oversized_body_without_reading_it(client, version, token, settings) -> None:
    settings.JSON_MAX_BODY_BYTES = 1000
    body = chat(version, messages=[{"role": "user", "content": "x" * 2000}])
    assert_openai_error(post(client, "/v1/chat/completions", body, token), 413, code="request_too_large")


def test_it_answers_415_for_a_body_that_is_not_json(client, version, token) -> None:
    form = post(client, "/v1/chat/completions", "model=mv-1", token, content_type="application/x-www-form-urlencoded")
    assert_openai_error(form, 415, code="unsupported_media_type")
    text = post(client, "/v1/completions", json.dumps(chat(version)), token, content_type="text/plain")
    assert_openai_error(text, 415)


def test_it_answers_405_for_a_get_on_a_post_endpoint(client, token) -> None:
    assert_openai_error(client.get("/v1/chat/completions", HTTP_AUTHORIZATION=f"Bearer {token}"), 405)


def test_it_answers_429_with_retry_after_once_the_rate_limit_is_spent(client, version, token, settings) -> None:
    settings.INFERENCE_RATE_LIMIT = "1/minute"
    services.run_submit(user=ApiToken.objects.get(key_hash=api_key_hash(token)).user, version=version, prompt="first")
    InferenceRun.objects.all().delete()

    response = post(client, "/v1/chat/completions", chat(version), token)
    error = assert_openai_error(response, 429, code="rate_limit_exceeded")
    assert error["type"] == "rate_limit_error"
    assert 1 <= int(response["Retry-After"]) <= 60


def test_models_lists_published_versions_the_callers_own_and_the_base_models(client, owner, base, version) -> None:
    private = served_version(owner=owner, base_model=base, adapter=None, name="private", published=False)
    stranger = api_token_create(user=UserFactory()).key
    mine = api_token_create(user=owner).key

    seen = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {stranger}").json()
    assert seen["object"] == "list"
    ids = [m["id"] for m in seen["data"]]
    assert f"mv-{version.pk}" in ids and f"mv-{private.pk}" not in ids and f"base-{base.pk}" in ids
    own = [m["id"] for m in client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {mine}").json()["data"]]
    assert f"mv-{private.pk}" in own


def test_run_api_shows_a_finished_run_with_its_batch_proof_to_anyone_with_the_link(client, asker, version) -> None:
    run = services.run_submit(user=asker, version=version, prompt="What is the code?")
    services.run_claim(run_id=run.pk, worker="w:1")
    services.run_finish(run_id=run.pk, answer="7421", finish_reason="stop", completion_tokens=3, latency_ms=40)
    services.runs_seal_batches(force=True)

    response = client.get(f"/api/runs/{run.public_id}/")
    assert response.status_code == 200
    assert response["X-OpenLedger-Run"] == str(run.public_id)
    data = response.json()
    assert data["id"] == str(run.public_id) and data["answer"] == "7421" and data["status"] == "succeeded"
    assert data["model"] == f"mv-{version.pk}"
    assert data["version"]["manifest_hash"] == version.manifest_hash
    assert data["options"]["max_tokens"] == 256 and data["latency_ms"] == 40
    assert data["batch"]["value"] == [data["run_hash"]] and data["batch"]["anchor"]["status"] == "pending"
    assert data["attribution"]["state"] == "pending"
    assert client.get("/api/runs/00000000-0000-0000-0000-000000000000/").status_code == 404
    assert client.get("/api/runs/not-a-uuid/").status_code == 404
