"""Composites through a real inference worker and the unmodified ``openai`` client: a composite model id, or
``model="mix"`` with the ``composition`` extra body field, answers exactly as the version whose adapter is the offline
merge (``merge_adapters``) of the same components with the same weights; and in one batch with plain versions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from django.db import transaction

from accounts.services import api_token_create
from inference import composites, services
from inference.models import InferenceRun
from modelfactory.tests.factories import UserFactory, default_base
from modelfactory.training import merge_adapters
from openledger_web.testing import celery_worker_process

from .runs_support import BASE_MODEL_DIR, clear_rate_limits, make_adapters, served_version
from .test_worker_runs import wait_finished

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

QUESTION = [{"role": "user", "content": "Name three colours of the rainbow."}]


@pytest.fixture(scope="module")
def adapter_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("composite-adapters")
    first, second = make_adapters(root, count=2)
    return {"first": first, "second": second}


@pytest.fixture(scope="module")
def inference_worker(django_db_setup, django_db_blocker) -> Iterator[object]:
    with (
        django_db_blocker.unblock(),
        celery_worker_process(
            queues="inference", name="composite-inference", pool="threads", concurrency=4, timeout=120,
            INFERENCE_BATCH_WAIT_MS="300", INFERENCE_HEARTBEAT_SECONDS="1",
        ) as proc,
    ):  # fmt: skip
        yield proc


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    clear_rate_limits()


@pytest.fixture
def setup(adapter_folders, inference_worker, tmp_path):
    """Two versions, and a third whose adapter is their offline TIES merge (weights 0.6 and 0.4, density 0.5) in the
    composite's canonical order (by adapter hash)."""
    owner = UserFactory()
    base = default_base()
    first = served_version(owner=owner, base_model=base, adapter=adapter_folders["first"], name="first")
    second = served_version(owner=owner, base_model=base, adapter=adapter_folders["second"], name="second")
    weights = {first.pk: 0.6, second.pk: 0.4}
    ordered = sorted([first, second], key=lambda v: v.adapter_sha256)
    merged = merge_adapters(
        base_model_dir=BASE_MODEL_DIR,
        adapter_dirs=[adapter_folders["first" if v.pk == first.pk else "second"] for v in ordered],
        weights=[weights[v.pk] for v in ordered],
        output_dir=tmp_path / "merged",
        method="ties",
        density=0.5,
    )
    offline = served_version(owner=owner, base_model=base, adapter=Path(merged.output_dir), name="merged offline")
    return owner, first, second, offline


def test_the_openai_client_asks_a_composite_by_its_id_and_by_the_composition_field(setup, live_server) -> None:
    _, first, second, offline = setup
    client = openai.OpenAI(
        base_url=live_server.url + "/v1", api_key=api_token_create(user=UserFactory()).key, max_retries=0, timeout=240
    )
    by_id = client.chat.completions.create(
        model=f"mix:mv-{first.pk}=0.6,mv-{second.pk}=0.4;method=ties;density=0.5", messages=QUESTION, max_tokens=12
    )
    by_field = client.chat.completions.create(
        model="mix",
        messages=QUESTION,
        max_tokens=12,
        extra_body={
            "composition": {
                "components": [{"model": f"mv-{second.pk}", "weight": 0.4}, {"model": f"mv-{first.pk}", "weight": 0.6}],
                "method": "ties",
                "density": 0.5,
            }
        },
    )
    merged = client.chat.completions.create(model=f"mv-{offline.pk}", messages=QUESTION, max_tokens=12)

    canonical = f"mix:mv-{first.pk}=0.6,mv-{second.pk}=0.4;method=ties;density=0.5"
    assert by_id.model == by_field.model == canonical
    answer = merged.choices[0].message.content
    assert by_id.choices[0].message.content == by_field.choices[0].message.content == answer != ""
    run = InferenceRun.objects.get(public_id=by_id.model_extra["openledger"]["run_id"])
    assert run.status == InferenceRun.Status.SUCCEEDED and run.composition["method"] == "ties"

    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=f"mix:mv-{first.pk}=0.6,mv-{first.pk}=0.4", messages=QUESTION)
    assert refused.value.code == "invalid_composition"


def test_composites_and_plain_versions_share_a_batch(setup) -> None:
    owner, first, second, offline = setup
    clean = composites.composition_clean(
        user=owner, spec=composites.composition_spec(model=f"mix:mv-{first.pk}=0.6,mv-{second.pk}=0.4;method=ties")
    )
    greedy = {"max_tokens": 10, "temperature": 0}
    with transaction.atomic():  # queued together at the commit: the engine gathers them into one batch
        runs = [
            services.run_submit(user=owner, version=None, composition=clean, messages=QUESTION, options=greedy),
            services.run_submit(user=owner, version=offline, messages=QUESTION, options=greedy),
            services.run_submit(user=owner, version=first, messages=QUESTION, options=greedy),
        ]
    composite, merged, plain = wait_finished(*runs)
    assert all(r.status == InferenceRun.Status.SUCCEEDED for r in (composite, merged, plain)), [
        r.error for r in (composite, merged, plain)
    ]
    assert composite.answer == merged.answer != ""
    assert plain.answer != ""
