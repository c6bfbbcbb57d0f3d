"""The inference pages: who may do what, the ask form's refusals, the answer stream, run pages and history."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client
from django.urls import reverse

from inference import services, streams
from inference.models import InferenceRun
from modelfactory.models import BaseModel, ModelVersion, ModelVersionParent
from modelfactory.tests.factories import BaseModelFactory, UserFactory, frozen_snapshot, instructions

from .runs_support import clear_rate_limits
from .test_ancestry import lineage_version

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    clear_rate_limits()


@pytest.fixture
def owner() -> Any:
    return UserFactory(username="asker")


@pytest.fixture
def other() -> Any:
    return UserFactory(username="stranger")


@pytest.fixture
def staff() -> Any:
    return UserFactory(username="staffer", is_staff=True)


@pytest.fixture
def base() -> BaseModel:
    return BaseModelFactory(name="Tiny-Base")


@pytest.fixture
def builder() -> Any:
    return UserFactory(username="builder")


@pytest.fixture
def version(builder: Any, base: BaseModel) -> ModelVersion:
    snapshot = frozen_snapshot(owner=builder, records=instructions(2), name="Zorblat facts")
    parent = lineage_version(owner=builder, base_model=base, name="zorblat-v1", snapshots=[snapshot])
    return lineage_version(
        owner=builder,
        base_model=base,
        name="zorblat-v2",
        parents=[(parent, ModelVersionParent.Relation.CONTINUED_FROM, 1.0)],
        snapshots=[snapshot],
    )


@pytest.fixture
def unpublished(builder: Any, base: BaseModel) -> ModelVersion:
    return lineage_version(owner=builder, base_model=base, name="secret-draft", published=False)


def client_for(user: Any) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def htmx(client: Client) -> Client:
    client.defaults["HTTP_HX_REQUEST"] = "true"
    return client


def ask_data(chosen: ModelVersion | int | str, /, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "version": chosen.pk if isinstance(chosen, ModelVersion) else chosen,
        "mode": "chat",
        "message_role": ["user"],
        "message_content": ["What is the secret code of Zorblat?"],
        "temperature": "0",
        "top_p": "1",
        "max_new_tokens": "32",
        "stop": "",
        "seed": "",
    }
    data.update(overrides)
    return data


def finished_run(user: Any, version: ModelVersion | None, *, answer: str = "The code is 7421.", **kw: Any) -> Any:
    """A run through the real services: submitted, claimed, finished (as the worker would)."""
    run = services.run_submit(
        user=user, version=version, base_model=None if version else BaseModelFactory(), messages=[
            {"role": "user", "content": "What is the secret code of Zorblat?"}
        ], **kw
    )  # fmt: skip
    services.run_claim(run_id=run.pk, worker="test-worker")
    return services.run_finish(
        run_id=run.pk, answer=answer, finish_reason="stop", completion_tokens=7, latency_ms=120, first_token_ms=30
    )


# -- ask page -----------------------------------------------------------------------------------------------------


def test_anonymous_people_are_sent_to_log_in(version: ModelVersion) -> None:
    client = Client()
    for url in (reverse("inference:ask"), reverse("inference:history")):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    response = client.post(reverse("inference:submit"), ask_data(version))
    assert response.status_code == 302 and InferenceRun.objects.count() == 0


def test_the_ask_page_lists_published_versions_and_the_users_own_only(
    owner: Any, version: ModelVersion, unpublished: ModelVersion, base: BaseModel
) -> None:
    mine = lineage_version(owner=owner, base_model=base, name="my-own-draft", published=False)

    page = client_for(owner).get(reverse("inference:ask")).content.decode()

    assert "zorblat-v2" in page and "my-own-draft" in page
    assert "secret-draft" not in page
    assert f'data-pick-version="{mine.pk}"' in page
    assert reverse("inference:ask") in page  # the navigation's Ask entry


def test_the_version_search_answers_a_fragment_filtered_by_name_datanet_and_base(
    owner: Any, version: ModelVersion, builder: Any
) -> None:
    other_base = BaseModelFactory(name="Other-Base")
    lineage_version(owner=builder, base_model=other_base, name="unrelated")
    client = htmx(client_for(owner))
    headers = {"HTTP_HX_TARGET": "version-results"}

    by_name = client.get(reverse("inference:ask"), {"q": "zorblat-v2"}, **headers).content.decode()
    by_datanet = client.get(reverse("inference:ask"), {"q": "Zorblat facts"}, **headers).content.decode()
    by_base = client.get(reverse("inference:ask"), {"base": other_base.pk}, **headers).content.decode()
    nothing = client.get(reverse("inference:ask"), {"q": "no such thing"}, **headers).content.decode()

    assert "<html" not in by_name and "zorblat-v2" in by_name and "unrelated" not in by_name
    assert "zorblat-v2" in by_datanet and "zorblat-v1" in by_datanet and "unrelated" not in by_datanet
    assert "unrelated" in by_base and "zorblat" not in by_base
    assert "No published model version matches" in nothing


def test_a_version_in_the_address_is_picked(owner: Any, version: ModelVersion) -> None:
    page = client_for(owner).get(reverse("inference:ask"), {"version": version.pk}).content.decode()

    assert f'value="{version.pk}"' in page and "Asking <strong data-picked-name>zorblat-v2</strong>" in page


def test_junk_query_parameters_are_ignored(owner: Any, version: ModelVersion) -> None:
    client = client_for(owner)
    for params in (
        {"version": "-1"},
        {"version": "1e9"},
        {"datanet": "x' OR 1=1 --", "base": "../../etc"},
        {"q": "z" * 10_000},
        {"reply": str(uuid.uuid4())},
        {"reply": "%00"},
    ):
        assert client.get(reverse("inference:ask"), params).status_code == 200


# -- submitting ---------------------------------------------------------------------------------------------------


def test_a_question_is_queued_and_the_answer_area_follows_its_stream(owner: Any, version: ModelVersion) -> None:
    response = htmx(client_for(owner)).post(reverse("inference:submit"), ask_data(version, seed="7", stop="END\n###"))

    assert response.status_code == 200
    run = InferenceRun.objects.get()
    assert (run.user, run.version, run.kind, run.status) == (owner, version, "chat", "queued")
    assert run.messages == [{"role": "user", "content": "What is the secret code of Zorblat?"}]
    assert run.options == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 32, "stop": ["END", "###"], "seed": 7}
    page = response.content.decode()
    assert f'data-stream-url="{reverse("inference:stream", args=[run.public_id])}"' in page
    assert 'id="ancestry"' in page and "zorblat-v1" in page and "Zorblat facts" in page
    assert reverse("inference:run_detail", args=[run.public_id]) in page
    # the form comes back out of band, without errors, with what was typed
    assert 'id="ask-form"' in page and 'hx-swap-oob="true"' in page
    assert "What is the secret code of Zorblat?</textarea>" in page and "errorlist" not in page


def test_a_plain_prompt_without_javascript_goes_to_the_run_page(owner: Any, version: ModelVersion) -> None:
    data = ask_data(version, mode="prompt", prompt="Once upon a time", message_content=[""])

    response = client_for(owner).post(reverse("inference:submit"), data)

    run = InferenceRun.objects.get()
    assert (run.kind, run.prompt, run.messages) == ("completion", "Once upon a time", None)
    assert response.status_code == 302 and response["Location"] == reverse("inference:run_detail", args=[run.public_id])


def test_comparing_asks_the_versions_base_model_alone_too(owner: Any, version: ModelVersion) -> None:
    response = htmx(client_for(owner)).post(reverse("inference:submit"), ask_data(version, compare="on"))

    assert response.status_code == 200
    runs = list(InferenceRun.objects.order_by("id"))
    assert [(r.version, r.base_model) for r in runs] == [(version, version.base_model), (None, version.base_model)]
    assert runs[0].messages == runs[1].messages and runs[0].options == runs[1].options
    page = response.content.decode()
    assert 'class="answers compare"' in page and page.count("data-stream-url=") == 2


def test_a_chat_of_several_turns_is_sent_as_typed(owner: Any, version: ModelVersion) -> None:
    data = ask_data(
        version,
        message_role=["system", "user", "assistant", "user"],
        message_content=["Be brief.", "Hello", "Hi! Ask away.", "Secret code?"],
    )

    assert client_for(owner).post(reverse("inference:submit"), data).status_code == 302
    assert [m["role"] for m in InferenceRun.objects.get().messages] == ["system", "user", "assistant", "user"]


def test_a_post_without_the_csrf_token_is_refused(owner: Any, version: ModelVersion) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)

    response = client.post(reverse("inference:submit"), ask_data(version))

    assert response.status_code == 403 and InferenceRun.objects.count() == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"temperature": "-1"}, "greater than or equal to 0"),
        ({"temperature": "5"}, "less than or equal to 2"),
        ({"temperature": "warm"}, "Enter a number"),
        ({"temperature": "nan"}, "Enter a number"),
        ({"top_p": "0"}, "greater than or equal to 0.01"),
        ({"max_new_tokens": "0"}, "greater than or equal to 1"),
        ({"max_new_tokens": "1000000"}, "less than or equal to"),
        ({"seed": "-3"}, "greater than or equal to 0"),
        ({"seed": str(2**64)}, "less than or equal to"),
        ({"stop": "a\nb\nc\nd\ne"}, "At most 4 stop sequences"),
        ({"stop": "x" * 65}, "at most 64 characters"),
        ({"message_role": ["robot"]}, "Unknown chat role"),
        ({"message_role": ["user", "assistant"], "message_content": ["hi", "there"]}, "must be yours"),
        ({"message_role": ["user", "user"]}, "needs a role and a text"),
        ({"message_content": ["   "]}, "Write a message"),
        ({"mode": "prompt", "prompt": ""}, "Write a prompt"),
        ({"mode": "poem"}, "Select a valid choice"),
        ({"version": ""}, "Pick a model version"),
        ({"version": "not-a-number"}, "does not exist or is not published"),
        ({"version": "987654321"}, "does not exist or is not published"),
    ],
)
def test_bad_input_is_refused_next_to_the_form_and_writes_nothing(
    owner: Any, version: ModelVersion, overrides: dict[str, Any], message: str
) -> None:
    response = htmx(client_for(owner)).post(reverse("inference:submit"), ask_data(version, **overrides))

    assert response.status_code == 400
    assert message in response.content.decode()
    assert response["HX-Retarget"] == "#ask-form" and 'id="ask-form"' in response.content.decode()
    assert InferenceRun.objects.count() == 0


def test_someone_elses_unpublished_version_cannot_be_asked(
    owner: Any, staff: Any, unpublished: ModelVersion, builder: Any
) -> None:
    for user in (owner, staff):
        response = client_for(user).post(reverse("inference:submit"), ask_data(unpublished))
        assert response.status_code == 400 and "does not exist or is not published" in response.content.decode()
    assert client_for(builder).post(reverse("inference:submit"), ask_data(unpublished)).status_code == 302
    assert InferenceRun.objects.get().user == builder


def test_a_huge_prompt_is_refused_with_the_limit(owner: Any, version: ModelVersion, settings: Any) -> None:
    settings.INFERENCE_MAX_PROMPT_CHARS = 1000
    huge = "word " * 400

    as_chat = client_for(owner).post(reverse("inference:submit"), ask_data(version, message_content=[huge]))
    as_prompt = client_for(owner).post(
        reverse("inference:submit"), ask_data(version, mode="prompt", prompt=huge, message_content=[""])
    )

    assert as_chat.status_code == 400 and "the limit is 1,000" in as_chat.content.decode()
    assert as_prompt.status_code == 400 and "at most 1000 characters" in as_prompt.content.decode()
    assert InferenceRun.objects.count() == 0


def test_a_prompt_over_the_token_limit_is_refused_by_the_service(
    owner: Any, version: ModelVersion, settings: Any
) -> None:
    settings.INFERENCE_MAX_PROMPT_TOKENS = 10

    response = client_for(owner).post(reverse("inference:submit"), ask_data(version, message_content=["a b " * 30]))

    assert response.status_code == 400 and "tokens long; the limit is 10" in response.content.decode()
    assert InferenceRun.objects.count() == 0


def test_a_nul_character_is_refused(owner: Any, version: ModelVersion) -> None:
    response = client_for(owner).post(reverse("inference:submit"), ask_data(version, message_content=["hi\x00"]))

    assert response.status_code == 400 and InferenceRun.objects.count() == 0


def test_the_rate_limit_answers_429_with_retry_after(owner: Any, version: ModelVersion, settings: Any) -> None:
    settings.INFERENCE_RATE_LIMIT = "2/hour"
    client = htmx(client_for(owner))

    assert client.post(reverse("inference:submit"), ask_data(version)).status_code == 200
    # a comparison needs two places: the second is refused, and neither run of the pair is kept
    refused = client.post(reverse("inference:submit"), ask_data(version, compare="on"))

    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert "Rate limit of 2/hour reached" in refused.content.decode()
    assert InferenceRun.objects.count() == 1


# -- run page, proof, history -------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["anonymous", "owner", "other", "staff"])
def test_a_run_page_is_shared_by_its_link(who: str, owner: Any, other: Any, staff: Any, version: ModelVersion) -> None:
    run = finished_run(owner, version)
    user = {"anonymous": None, "owner": owner, "other": other, "staff": staff}[who]

    response = client_for(user).get(reverse("inference:run_detail", args=[run.public_id]))

    page = response.content.decode()
    assert response.status_code == 200
    assert "The code is 7421." in page and "What is the secret code of Zorblat?" in page
    assert 'id="ancestry"' in page and "zorblat-v1" in page
    assert "data-stream-url" not in page  # finished: nothing to follow
    assert ("data-reply" in page) == (who == "owner")


def test_a_base_model_answer_has_a_page_without_lineage(owner: Any) -> None:
    run = finished_run(owner, None)

    page = client_for(owner).get(reverse("inference:run_detail", args=[run.public_id])).content.decode()

    assert "No adapter: the base model answered alone." in page and "base model alone" in page
    assert "data-reply" not in page  # nothing to pick again: replies go to a version


def test_unknown_and_malformed_run_ids_are_not_found(owner: Any) -> None:
    client = client_for(owner)
    assert client.get(reverse("inference:run_detail", args=[uuid.uuid4()])).status_code == 404
    for bad in ("/ask/runs/123/", "/ask/runs/not-a-uuid/", "/ask/runs/../../etc/passwd/", "/ask/runs/%00/"):
        assert client.get(bad).status_code == 404
    assert client.get(f"/ask/runs/{uuid.uuid4()}/proof.json").status_code == 404
    assert client.get(f"/ask/runs/{uuid.uuid4()}/stream/").status_code == 404


def test_the_owner_follows_an_unfinished_run_and_others_poll_it(owner: Any, other: Any, version: ModelVersion) -> None:
    run = services.run_submit(user=owner, version=version, messages=[{"role": "user", "content": "hello"}])
    url = reverse("inference:run_detail", args=[run.public_id])

    mine = client_for(owner).get(url).content.decode()
    theirs = client_for(other).get(url).content.decode()
    fragment = htmx(client_for(other)).get(url)

    assert "data-stream-url" in mine and 'hx-trigger="every 2s"' not in mine
    assert "data-stream-url" not in theirs and 'hx-trigger="every 2s"' in theirs
    assert fragment.status_code == 200 and "<html" not in fragment.content.decode()
    run.status = "failed"
    run.save(update_fields=["status"])
    assert htmx(client_for(other)).get(url).status_code == 286  # finished: htmx stops polling


def test_the_inclusion_proof_appears_once_the_batch_is_sealed(owner: Any, version: ModelVersion) -> None:
    run = finished_run(owner, version)
    finished_run(owner, version, answer="another answer")
    client = client_for(None)
    assert client.get(reverse("inference:run_proof", args=[run.public_id])).status_code == 404
    assert "data-proof-pending" in client.get(reverse("inference:run_detail", args=[run.public_id])).content.decode()

    services.runs_seal_batches(force=True)

    download = client.get(reverse("inference:run_proof", args=[run.public_id]))
    proof = json.loads(download.content)
    assert download["Content-Disposition"].startswith("attachment;")
    run.refresh_from_db()
    assert proof["value"] == [run.run_hash] and proof["leafEncoding"] == ["bytes32"] and len(proof["proof"]) == 1
    from ledger import merkle

    assert merkle.verify(proof["root"], proof["leafEncoding"], proof["value"], proof["proof"])
    page = client.get(reverse("inference:run_detail", args=[run.public_id])).content.decode()
    assert run.run_hash in page and reverse("inference:verify_run", args=[run.public_id]) in page
    assert 'data-anchor-kind="inference_batch"' in page


def test_the_attribution_panel_is_included_when_the_attribution_app_serves_it(
    owner: Any, version: ModelVersion
) -> None:
    run = finished_run(owner, version)

    page = client_for(owner).get(reverse("inference:run_detail", args=[run.public_id])).content.decode()

    assert f'hx-get="{reverse("attribution:run_panel", args=[run.public_id])}"' in page


def test_history_lists_the_users_own_runs_newest_first_in_pages(owner: Any, other: Any, version: ModelVersion) -> None:
    runs = [finished_run(owner, version, answer=f"answer {i}") for i in range(21)]
    theirs = finished_run(other, version)
    client = client_for(owner)

    first = client.get(reverse("inference:history")).content.decode()
    second = client.get(reverse("inference:history"), {"page": 2}).content.decode()
    junk = client.get(reverse("inference:history"), {"page": "x' OR 1=1"})

    assert first.index(str(runs[-1].public_id)) < first.index(str(runs[-2].public_id))
    assert str(runs[0].public_id) not in first and str(runs[0].public_id) in second
    assert str(theirs.public_id) not in first + second
    assert junk.status_code == 200


@pytest.mark.parametrize("who", ["other", "staff"])
def test_history_is_private_to_its_owner_even_for_staff(
    who: str, owner: Any, other: Any, staff: Any, version: ModelVersion
) -> None:
    run = finished_run(owner, version)
    user = {"other": other, "staff": staff}[who]

    page = client_for(user).get(reverse("inference:history")).content.decode()

    assert str(run.public_id) not in page and "You have not asked anything yet" in page


def test_staff_may_verify_an_unpublished_version(staff: Any, unpublished: ModelVersion, settings: Any) -> None:
    settings.EVM_RPC_URL = "http://127.0.0.1:9"

    response = client_for(staff).get(reverse("inference:verify_version", args=[unpublished.pk]))

    assert response.status_code == 503  # found and checked; the chain is simply not there


def test_reply_prefills_the_chat_with_the_answer(owner: Any, other: Any, version: ModelVersion) -> None:
    run = finished_run(owner, version)

    mine = client_for(owner).get(reverse("inference:ask"), {"reply": str(run.public_id)}).content.decode()
    theirs = client_for(other).get(reverse("inference:ask"), {"reply": str(run.public_id)}).content.decode()
    junk = client_for(owner).get(reverse("inference:ask"), {"reply": "nonsense"})

    assert "The code is 7421.</textarea>" in mine and "The code is 7421." not in theirs
    assert junk.status_code == 200


# -- the answer stream --------------------------------------------------------------------------------------------


async def _body(content: AsyncIterator[bytes]) -> bytes:
    return b"".join([part async for part in content])


def stream_body(response: Any) -> str:
    """The whole body of a streaming response, async (as the ASGI server is given it) or not (WSGI)."""
    if response.is_async:
        return async_to_sync(_body)(response.streaming_content).decode()
    return b"".join(response.streaming_content).decode()


def get_as(user: Any, url: str, *, server: str, headers: dict[str, str] | None = None) -> Any:
    """GET through Django's WSGI handler (the test client) or its ASGI handler (what `make run` serves)."""
    if server == "wsgi":
        return client_for(user).get(url, headers=headers)
    client = AsyncClient()
    client.force_login(user)
    return async_to_sync(client.get)(url, headers=headers)


def _events(response: Any) -> list[tuple[str, str, Any]]:
    body = stream_body(response)
    events = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            events.append((fields["id"], fields["event"], json.loads(fields["data"])))
    return events


@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_the_stream_relays_tokens_then_done_and_resumes_after_the_last_id(
    owner: Any, version: ModelVersion, django_capture_on_commit_callbacks: Any, server: str
) -> None:
    # given: a run the "worker" answers in two pieces
    run = services.run_submit(user=owner, version=version, messages=[{"role": "user", "content": "hello"}])
    services.run_claim(run_id=run.pk, worker="w")
    writer = streams.RunStreamWriter(run_id=run.pk, public_id=run.public_id)
    writer.token("Hel")
    writer.token("lo")
    writer.flush()
    with django_capture_on_commit_callbacks(execute=True):
        services.run_finish(run_id=run.pk, answer="Hello", finish_reason="stop", completion_tokens=2, latency_ms=5)
    url = reverse("inference:stream", args=[run.public_id])

    # when
    response = get_as(owner, url, server=server)
    events = _events(response)

    # then: under ASGI the stream is an async iterator, which waits without a thread
    assert response.is_async == (server == "asgi")
    assert response["Content-Type"] == "text/event-stream" and response["Cache-Control"] == "no-cache"
    assert "".join(data["text"] for _, kind, data in events if kind == "token") == "Hello"
    assert events[-1][1] == "done" and events[-1][2]["completion_tokens"] == 2
    resumed = _events(get_as(owner, url, server=server, headers={"Last-Event-ID": events[0][0]}))
    assert "".join(d["text"] for _, k, d in resumed if k == "token") == "Hello"[len(events[0][2]["text"]) :]


@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_a_failed_run_streams_its_error(
    owner: Any, version: ModelVersion, django_capture_on_commit_callbacks: Any, server: str
) -> None:
    run = services.run_submit(user=owner, version=version, messages=[{"role": "user", "content": "hello"}])
    with django_capture_on_commit_callbacks(execute=True):
        services.run_finish(run_id=run.pk, error="the adapter could not be loaded")

    events = _events(get_as(owner, reverse("inference:stream", args=[run.public_id]), server=server))

    assert events[-1][1:] == ("error", {"message": "the adapter could not be loaded"})


@pytest.mark.parametrize("who", ["anonymous", "other", "staff"])
def test_only_the_owner_may_follow_the_stream(
    who: str, owner: Any, other: Any, staff: Any, version: ModelVersion
) -> None:
    run = finished_run(owner, version)
    user = {"anonymous": None, "other": other, "staff": staff}[who]

    response = client_for(user).get(reverse("inference:stream", args=[run.public_id]))

    assert response.status_code == (302 if user is None else 404)


# -- verify pages: permissions (the on-chain answers are in test_views_chain.py) ---------------------------------


@pytest.mark.parametrize("who", ["anonymous", "signed in"])
def test_verify_pages_answer_whoever_may_see_the_subject(
    who: str, owner: Any, version: ModelVersion, unpublished: ModelVersion, builder: Any, settings: Any
) -> None:
    settings.EVM_RPC_URL = "http://127.0.0.1:9"  # nothing listens: a visible subject gets as far as asking the chain
    private = frozen_snapshot(owner=builder, records=instructions(2), name="Private", visibility="private")
    public = frozen_snapshot(owner=builder, records=instructions(2), name="Open")
    client = client_for(None if who == "anonymous" else owner)
    assert client.get(reverse("inference:verify_version", args=[version.pk])).status_code == 503
    assert client.get(reverse("inference:verify_snapshot", args=[public.pk])).status_code == 503
    assert client.get(reverse("inference:verify_version", args=[unpublished.pk])).status_code == 404
    assert client.get(reverse("inference:verify_version", args=[987654321])).status_code == 404
    assert client.get(reverse("inference:verify_snapshot", args=[private.pk])).status_code == 404
    assert client.get(reverse("inference:verify_run", args=[uuid.uuid4()])).status_code == 404
    run = finished_run(owner, version)
    assert client.get(reverse("inference:verify_run", args=[run.public_id])).status_code == 404  # no batch yet
    assert client.post(reverse("inference:verify_version", args=[version.pk])).status_code == 405


def test_a_verify_page_says_when_the_chain_cannot_be_asked(owner: Any, version: ModelVersion, settings: Any) -> None:
    settings.EVM_RPC_URL = "http://127.0.0.1:9"  # nothing listens on the discard port

    response = client_for(owner).get(reverse("inference:verify_version", args=[version.pk]))

    assert response.status_code == 503 and "The chain could not be asked" in response.content.decode()
    assert 'data-verified="error"' in response.content.decode()
