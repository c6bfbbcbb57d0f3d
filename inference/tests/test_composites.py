"""Composites asked at request time, on the web side: the composite model id and the ``composition`` body field of
``/v1``, the ask page's compose field, what a composite run records, its facts, its run API and its ancestry panel,
and a clear 4xx for every hostile composition (nothing is written for a refused one)."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from django.urls import reverse

from accounts.services import api_token_create
from inference import composites, ids, services
from inference.models import InferenceRun
from modelfactory.models import BaseModel
from modelfactory.tests.factories import UserFactory, default_base

from .runs_support import clear_rate_limits, served_version

pytestmark = pytest.mark.django_db

QUESTION = [{"role": "user", "content": "What is the code?"}]


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    clear_rate_limits()


@pytest.fixture
def base():
    return default_base()


@pytest.fixture
def owners():
    return UserFactory(username="ada"), UserFactory(username="bo")


@pytest.fixture
def versions(owners, base):
    """Three published versions of one base model, by two owners."""
    ada, bo = owners
    return [
        served_version(owner=ada, base_model=base, adapter=None, name="places", adapter_sha256="a1" * 32),
        served_version(owner=bo, base_model=base, adapter=None, name="rivers", adapter_sha256="b2" * 32),
        served_version(owner=bo, base_model=base, adapter=None, name="lanterns", adapter_sha256="c3" * 32),
    ]


@pytest.fixture
def asker():
    return UserFactory(username="asker")


@pytest.fixture
def token(asker) -> str:
    return api_token_create(user=asker).key


def post_v1(client, body, token: str):
    return client.post(
        "/v1/chat/completions", data=json.dumps(body), content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )  # fmt: skip


def assert_refused(response, status: int, *, code: str | None = None) -> str:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    assert not InferenceRun.objects.exists()
    return error["message"]


# -- what a composite run records ----------------------------------------------------------------------------------


def test_a_composite_model_id_queues_one_run_that_records_each_component_with_its_weight(asker, versions) -> None:
    first, second, _ = versions
    spec = composites.composition_spec(model=f"mix:mv-{second.pk}=0.3,mv-{first.pk}=0.7")
    clean = composites.composition_clean(user=asker, spec=spec)

    run = services.run_submit(user=asker, version=None, composition=clean, messages=QUESTION)

    assert run.version is None and run.base_model == first.base_model
    parts = run.composition["components"]
    assert [(p["version"], p["weight"], p["share"]) for p in parts] == [
        (first.pk, 0.7, "7/10"),
        (second.pk, 0.3, "3/10"),
    ]
    assert [p["adapter_sha256"] for p in parts] == [first.adapter_sha256, second.adapter_sha256]
    assert [p["manifest_hash"] for p in parts] == [first.manifest_hash, second.manifest_hash]
    assert run.composition["method"] == "linear" and run.composition["density"] is None
    # the canonical id: components in version order, whatever order they were asked in
    assert run.model_name == f"mix:mv-{first.pk}=0.7,mv-{second.pk}=0.3;method=linear"
    assert sum(share for _, share in composites.component_shares(run.composition)) == 1


def test_the_composition_field_and_the_composite_id_ask_the_same_composite(asker, versions) -> None:
    first, second, third = versions
    from_id = composites.composition_spec(
        model=f"mix:mv-{first.pk}=1,mv-{second.pk}=2,mv-{third.pk}=1;method=dare_ties;density=0.6;seed=42"
    )
    from_field = composites.composition_spec(
        model="mix",
        field={
            "components": [
                {"model": f"mv-{third.pk}", "weight": 1},
                {"model": f"mv-{second.pk}", "weight": 2},
                {"model": f"mv-{first.pk}", "weight": 1},
            ],
            "method": "dare_ties",
            "density": 0.6,
            "seed": 42,
        },
    )
    one = composites.composition_clean(user=asker, spec=from_id).document
    other = composites.composition_clean(user=asker, spec=from_field).document
    assert one == other
    assert [c["share"] for c in one["components"]] == ["1/4", "1/2", "1/4"]
    assert ids.composite_id(one).endswith(";method=dare_ties;density=0.6;seed=42")


def test_a_composite_runs_facts_name_every_component(asker, versions) -> None:
    first, second, _ = versions
    clean = composites.composition_clean(
        user=asker, spec=composites.composition_spec(model=f"mix:mv-{first.pk}=0.5,mv-{second.pk}=0.5;method=ties")
    )
    run = services.run_submit(user=asker, version=None, composition=clean, messages=QUESTION)
    finished = services.run_finish(run_id=run.pk, answer="7421", finish_reason="stop", completion_tokens=2)

    facts = json.loads(finished.facts)
    assert facts["model"]["version"] is None
    assert facts["composition"]["method"] == "ties" and facts["composition"]["density"] == 0.5
    assert [(c["version"], c["manifest_hash"], c["share"]) for c in facts["composition"]["components"]] == [
        (first.pk, first.manifest_hash, "1/2"),
        (second.pk, second.manifest_hash, "1/2"),
    ]


def test_the_run_api_and_the_ancestry_panel_list_each_component_with_its_weight(client, asker, versions) -> None:
    first, second, _ = versions
    clean = composites.composition_clean(
        user=asker, spec=composites.composition_spec(model=f"mix:mv-{first.pk}=0.75,mv-{second.pk}=0.25")
    )
    run = services.run_submit(user=asker, version=None, composition=clean, messages=QUESTION)
    services.run_finish(run_id=run.pk, answer="7421", finish_reason="stop", completion_tokens=2)

    data = client.get(reverse("inference-api:run_detail", args=[run.public_id])).json()
    assert data["model"] == run.model_name and data["version"] is None
    assert [(c["model"], c["name"], c["weight"], c["share"]) for c in data["composition"]["components"]] == [
        (f"mv-{first.pk}", "places", 0.75, "3/4"),
        (f"mv-{second.pk}", "rivers", 0.25, "1/4"),
    ]

    client.force_login(asker)
    page = client.get(reverse("inference:run_detail", args=[run.public_id])).content.decode()
    assert 'data-edge="composite"' in page
    assert f'data-component="{first.pk}"' in page and f'data-component="{second.pk}"' in page
    assert 'data-share="3/4"' in page and ">75%<" in page
    assert 'data-share="1/4"' in page and ">25%<" in page
    assert "<span data-weight>0.75</span>" in page and "<span data-weight>0.25</span>" in page
    # both lineages are on the path, each marked as one that answered
    assert page.count('class="current" aria-current="true"') == 2
    assert f"<code data-composite>{run.model_name}</code>" in page and "base model alone" not in page
    history = client.get(reverse("inference:history")).content.decode()
    assert f"<code>{run.model_name}</code>" in history


def test_the_ask_page_asks_a_composite(client, asker, versions) -> None:
    first, second, _ = versions
    client.force_login(asker)
    response = client.post(
        reverse("inference:submit"),
        {
            "compose": f"mix:mv-{first.pk}=0.5,mv-{second.pk}=0.5;method=ties;density=0.4",
            "mode": "chat",
            "message_role": ["user"],
            "message_content": ["What is the code?"],
            "temperature": 0,
            "top_p": 1,
            "max_new_tokens": 8,
        },
    )
    assert response.status_code == 302
    run = InferenceRun.objects.get()
    assert run.composition["method"] == "ties" and run.composition["density"] == 0.4
    assert [c["version"] for c in run.composition["components"]] == [first.pk, second.pk]


def test_the_ask_page_says_why_a_composite_is_refused(client, asker, versions) -> None:
    first, _, _ = versions
    client.force_login(asker)
    response = client.post(
        reverse("inference:submit"),
        {
            "compose": f"mix:mv-{first.pk}=0.5,mv-{first.pk}=0.5",
            "mode": "chat",
            "message_role": ["user"],
            "message_content": ["What is the code?"],
            "temperature": 0,
            "top_p": 1,
            "max_new_tokens": 8,
        },
    )
    assert response.status_code == 400
    assert "named twice" in response.content.decode()
    assert not InferenceRun.objects.exists()


# -- hostile compositions ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "code", "words"),
    [
        ("mix:mv-{a}", "invalid_composition", "malformed"),
        ("mix:mv-{a}=0.5;mv-{b}=0.5", "invalid_composition", "malformed"),
        ("mix:mv-{a}=0.5,mv-{b}=0.5;method", "invalid_composition", "malformed"),
        ("mix:mv-{a}=0.5,mv-{b}=0.5;method=linear;method=ties", "invalid_composition", "each once"),
        ("mix:mv-{a}=nan,mv-{b}=0.5", "invalid_composition", "malformed"),
        ("mix:mv-{a}=inf,mv-{b}=0.5", "invalid_composition", "malformed"),
        ("mix:mv-{a}=1e999,mv-{b}=0.5", "invalid_composition", "malformed"),
        ("mix:mv-{a}=0.5,mv-{b}=-0.5", "invalid_composition", "above 0"),
        ("mix:mv-{a}=0,mv-{b}=0", "invalid_composition", "above 0"),
        ("mix:mv-{a}=1000,mv-{b}=1", "invalid_composition", "at most"),
        ("mix:mv-{a}=1", "invalid_composition", "2 to 4 components"),
        ("mix:mv-{a}=1,mv-{b}=1,mv-{c}=1,mv-{a}0=1,mv-{b}0=1", "invalid_composition", "2 to 4 components"),
        ("mix:mv-{a}=0.5,mv-{a}=0.5", "invalid_composition", "named twice"),
        ("mix:mv-{a}=0.5,base-{base}=0.5", "invalid_composition", "mv-<id>"),
        ("mix:mv-{a}=0.5,mv-{b}=0.5;method=svd", "invalid_composition", "unknown composition method"),
        ("mix:mv-{a}=0.5,mv-{b}=0.5;density=0.5", "invalid_composition", "not to linear"),
        ("mix:mv-{a}=0.5,mv-{b}=0.5;method=ties;density=0", "invalid_composition", "above 0 and at most 1"),
        ("mix:mv-{a}=0.5,mv-{b}=0.5;method=ties;density=1.5", "invalid_composition", "above 0 and at most 1"),
        ("mix:mv-{a}=0.5,mv-{b}=0.5;method=ties;seed=3", "invalid_composition", "DARE"),
        ("mix:mv-{a}=0.5,mv-{b}=0.5;method=dare_linear;seed=x", "invalid_composition", "whole number"),
        ("mix:mv-{a}=0.5,mv-999999=0.5", "model_not_found", "does not exist or is not published"),
        ("mix", "invalid_composition", "composition field"),
    ],
)
def test_a_hostile_composite_model_id_gets_a_clear_4xx(client, token, versions, base, model, code, words) -> None:
    first, second, third = versions
    model = model.format(a=first.pk, b=second.pk, c=third.pk, base=base.pk)
    status = 404 if code == "model_not_found" else 400
    message = assert_refused(post_v1(client, {"model": model, "messages": QUESTION}, token), status, code=code)
    assert words in message


def test_an_unpublished_version_of_someone_else_is_not_a_component(client, token, owners, base, versions) -> None:
    private = served_version(owner=owners[0], base_model=base, adapter=None, name="private", published=False)
    model = f"mix:mv-{versions[0].pk}=0.5,mv-{private.pk}=0.5"
    message = assert_refused(
        post_v1(client, {"model": model, "messages": QUESTION}, token), 404, code="model_not_found"
    )
    assert f"model version {private.pk}" in message


def test_components_of_different_base_models_are_refused(client, token, owners, base, versions) -> None:
    other_base = BaseModel.objects.create(
        name="other-base",
        path=base.path,
        source=base.source,
        weights_sha256="ff" * 32,
        architecture=base.architecture,
        parameters=base.parameters,
        context_length=base.context_length,
    )
    other = served_version(owner=owners[0], base_model=other_base, adapter=None, name="elsewhere")
    model = f"mix:mv-{versions[0].pk}=0.5,mv-{other.pk}=0.5"
    message = assert_refused(
        post_v1(client, {"model": model, "messages": QUESTION}, token), 400, code="different_base_models"
    )
    assert "one base model" in message


@pytest.mark.parametrize(
    ("field", "words"),
    [
        ("not an object", "must be an object"),
        ({"components": "mv-1"}, "list of {model, weight}"),
        ({"components": [{"model": "mv-{a}", "weight": 1}, {"model": "mv-{b}", "weight": "1"}]}, "must be a number"),
        ({"components": [{"model": "mv-{a}", "weight": 1}, {"model": "mv-{b}", "weight": True}]}, "must be a number"),
        ({"components": [{"model": "mv-{a}", "weight": 1}, {"model": "mv-{b}", "weight": -1}]}, "above 0"),
        ({"components": [{"model": "mv-{a}", "weight": 1}, {"model": "mv-{b}", "weight": 1, "x": 1}]}, "other than"),
        ({"components": [{"model": "mv-{a}", "weight": 1}, {"model": "mv-{b}", "weight": 1}], "extra": 1}, "unknown"),
        ({"components": [{"model": "mv-{a}", "weight": 1}, {"model": "mv-{b}", "weight": 1}], "seed": 1}, "DARE"),
    ],
)
def test_a_hostile_composition_field_gets_a_clear_400(client, token, versions, field, words) -> None:
    first, second, _ = versions
    text = json.dumps(field).replace("{a}", str(first.pk)).replace("{b}", str(second.pk))
    body = {"model": "mix", "messages": QUESTION, "composition": json.loads(text)}
    message = assert_refused(post_v1(client, body, token), 400, code="invalid_composition")
    assert words in message


def test_a_non_finite_weight_in_the_body_is_refused_before_it_is_read(client, token, versions) -> None:
    first, second = versions[:2]
    body = (
        '{"model": "mix", "messages": [{"role": "user", "content": "Hi"}], "composition": {"components": '
        f'[{{"model": "mv-{first.pk}", "weight": NaN}}, {{"model": "mv-{second.pk}", "weight": 1}}]}}}}'
    )
    response = client.post(
        "/v1/chat/completions", data=body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert_refused(response, 400)


def test_a_composition_field_with_another_model_is_refused(client, token, versions) -> None:
    first, second = versions[:2]
    body = {
        "model": f"mv-{first.pk}",
        "messages": QUESTION,
        "composition": {
            "components": [{"model": f"mv-{first.pk}", "weight": 1}, {"model": f"mv-{second.pk}", "weight": 1}]
        },
    }
    assert "set model to" in assert_refused(post_v1(client, body, token), 400, code="invalid_composition")


def test_a_composite_share_is_exact_for_any_decimal_weights(asker, versions) -> None:
    first, second, third = versions
    spec = composites.composition_spec(model=f"mix:mv-{first.pk}=0.1,mv-{second.pk}=0.2,mv-{third.pk}=0.3")
    document = composites.composition_clean(user=asker, spec=spec).document
    assert [Fraction(c["share"]) for c in document["components"]] == [Fraction(1, 6), Fraction(1, 3), Fraction(1, 2)]
