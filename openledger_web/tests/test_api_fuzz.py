"""Every operation of the OpenAPI schema that drf-spectacular generates (the DRF APIs and the OpenAI-compatible /v1),
fuzzed by schemathesis through the real WSGI application against the real test database, authenticated with a
real API token of a test user who owns real things to point at: no request may answer 5xx (issue #11, item 9).

Each operation gets a bounded number of examples (``EXAMPLES``): schema-valid ones aimed at the user's own Datanet,
contribution, snapshot, record, job, version, wallet and run, schema-valid ones with made-up path values, and
schema-invalid ones. Each operation runs in a savepoint that is rolled back, so every operation meets the same
world. The examples are derandomized: a run is repeatable, and a failure lists the requests that failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections, transaction
from django.test import Client
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from accounts.models import Wallet
from accounts.services import api_token_create
from accounts.tests.factories import UserFactory
from datanets import services as datanet_services
from datanets.models import Record
from inference.models import InferenceRun
from modelfactory.tests.factories import default_base, frozen_snapshot, stand_in_version

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db,
    # web3, imported by the on-chain proof check, raises the recursion limit on import (see common/jsonguard.py)
    pytest.mark.filterwarnings("ignore:The recursion limit will not be reset"),
]

EXAMPLES = 20
V1_EXAMPLES = 50
# 5xx answers that are an operation's documented contract, not a failure: (method, path, status).
DOCUMENTED_5XX = {
    # /api/health/ is 503 whenever a component (a worker, the chain) is down, and none runs here
    ("GET", "/api/health/", 503),
}


class _Rollback(Exception):
    pass


@pytest.fixture
def world(settings: Any, deployed_chain: Any) -> dict[str, Any]:
    """A user with an API token who owns a Datanet with a pending contribution and a frozen snapshot, a model
    version, a linked wallet and an inference run; the path values that point at them."""
    settings.INFERENCE_WAIT_SECONDS = 0.2  # no inference worker here: a valid /v1 request would wait for its run
    settings.INFERENCE_RATE_LIMIT = "100000/minute"
    user = UserFactory()
    snapshot = frozen_snapshot(owner=user)
    datanet = snapshot.datanet
    pending = datanet_services.contribution_submit_pasted(
        datanet=datanet, contributor=user, text='{"prompt": "Why?", "response": "Because."}\n', licence=datanet.licence
    )
    version = stand_in_version(owner=user, base_model=default_base(), name="fuzzed")
    version.published = True
    version.save(update_fields=["published"])
    wallet = Wallet.objects.create(user=user, address="0x" + "ab" * 20, chain_id=31337)
    run = InferenceRun.objects.create(
        user=user, version=version, base_model=version.base_model, kind="completion", prompt="hi", options={}
    )
    record = Record.objects.filter(contribution__datanet=datanet).order_by("pk").first()
    return {
        "token": api_token_create(user=user).key,
        "models": [f"mv-{version.pk}", f"base-{version.base_model_id}"],
        "path": {
            "slug": datanet.slug,
            "number": snapshot.number,
            "record_id": record.pk,
            "contribution_id": pending.pk,
            "job_id": version.job_id,
            "version_id": version.pk,
            "filename": "adapter_config.json",
            "wallet_id": wallet.pk,
            "public_id": str(run.public_id),
        },
    }


@pytest.fixture
def schema(db: None) -> Iterator[Any]:
    # as Django's test client does: a finished request must not close the connection that holds the test's
    # transaction
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/schema/", WSGIHandler())
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def _operations(schema: Any) -> Iterator[Any]:
    for result in schema.get_all_operations():
        yield result.ok()


def _fuzz(operation: Any, strategy: Any, headers: dict[str, str], failures: list[str]) -> None:
    """Send ``EXAMPLES`` cases of ``operation``; note each undocumented 5xx in ``failures``."""
    method = operation.method.upper()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        status = case.call(headers=headers).status_code
        if status >= 500 and (method, operation.path, status) not in DOCUMENTED_5XX:
            failures.append(f"{status} {method} {operation.path}: {case.as_curl_command()}")

    fuzz()


def test_no_operation_answers_5xx(schema: Any, world: dict[str, Any]) -> None:
    headers = {"Authorization": f"Token {world['token']}"}
    failures: list[str] = []
    for operation in _operations(schema):
        ours = {k: v for k, v in world["path"].items() if k in {p.name for p in operation.path_parameters}}
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE, path_parameters=ours),
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=ours),
        )
        try:
            with transaction.atomic():
                _fuzz(operation, strategy, headers, failures)
                raise _Rollback  # every operation meets the same world
        except _Rollback:
            pass

    assert not failures, "\n".join(failures)


# /v1 bodies aimed at a real model: the schema's examples rarely name one, so these reach the run services.

_JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(allow_nan=False,
    allow_infinity=False), st.text(max_size=40)
)  # fmt: skip
_JSON = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant"]), "content": st.text(min_size=1, max_size=80)}
)
# Mostly values the API takes, so that most examples reach the run services; some of any JSON shape.
_OPTIONS = {
    "max_tokens": st.integers(1, 600) | st.integers(-5, 10**6) | _JSON,
    "max_completion_tokens": st.integers(1, 600),
    "temperature": st.floats(0, 2) | st.floats(-1e300, 1e300) | _JSON,
    "top_p": st.floats(0, 1) | st.floats(-2, 2),
    "stop": st.lists(st.text(max_size=5), max_size=4) | st.text(max_size=5) | _JSON,
    "seed": st.integers(-(2**63), 2**63 - 1) | _JSON,
    "stream": st.booleans(),
    "n": st.just(1),
    "user": st.text(max_size=10),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
}


def _v1_body(models: list[str], prompt_key: str) -> Any:
    if prompt_key == "messages":
        prompt = st.lists(_MESSAGE, min_size=1, max_size=4) | st.lists(_MESSAGE, min_size=1) | _JSON
    else:
        prompt = st.text(min_size=1, max_size=200) | st.text(max_size=2000) | _JSON
    return st.fixed_dictionaries({"model": st.sampled_from(models), prompt_key: prompt}, optional=_OPTIONS)


@pytest.mark.parametrize(("path", "prompt_key"), [("/v1/chat/completions", "messages"), ("/v1/completions", "prompt")])
def test_v1_bodies_aimed_at_a_real_model_never_answer_5xx(world: dict[str, Any], path: str, prompt_key: str) -> None:
    client = Client(HTTP_AUTHORIZATION=f"Bearer {world['token']}")
    failures: list[str] = []

    @settings(max_examples=V1_EXAMPLES, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(body=_v1_body(world["models"], prompt_key))
    def fuzz(body: dict[str, Any]) -> None:
        response = client.post(path, json.dumps(body), content_type="application/json")
        content = b"".join(response.streaming_content) if response.streaming else response.content
        # 504 "timeout" is the documented answer to a valid request whose run is still queued (no worker here)
        queued = response.status_code == 504 and json.loads(content)["error"]["code"] == "timeout"
        if response.status_code >= 500 and not queued:
            failures.append(f"{response.status_code} {path} {json.dumps(body)}: {content[:300]!r}")

    fuzz()
    assert not failures, "\n".join(failures)
