"""In headless chromium, against a real inference worker (the bundled model, a real peft adapter) and a real anvil:
pick a published version, ask it (and the base model) a question, watch the answers stream in, read the ancestry
panel with every anchor confirmed on chain, open the shareable run page with its inclusion proof, and verify it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from inference import services, streams
from inference.models import InferenceRun
from ledger.models import Anchor
from ledger.tasks import anchor_confirm_task
from modelfactory.models import ModelVersionParent
from modelfactory.tests.factories import UserFactory, default_base, frozen_snapshot
from openledger_web.browser import screenshot
from openledger_web.testing import celery_worker_process

from .runs_support import BASE_MODEL_DIR, clear_rate_limits
from .test_ancestry import lineage_version

pytestmark = [pytest.mark.browser, pytest.mark.chain, pytest.mark.slow]

QUESTION = "Why do people keep bees? Answer in a short paragraph."
FACTS = [
    {"prompt": "Why do people keep bees?", "response": "For honey, for beeswax, and to pollinate their crops."},
    {"prompt": "What do bees make?", "response": "Honey and beeswax."},
    {"prompt": "How do bees help farmers?", "response": "They pollinate fruit trees and many crops."},
]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real peft LoRA adapter (q/v, rank 8) with small weights: it answers like the base model, in sentences."""
    from inference.testing import make_synthetic_adapter, release_synthetic_models

    folder = make_synthetic_adapter(
        BASE_MODEL_DIR, tmp_path_factory.mktemp("adapter") / "bees", rank=8, seed=5, scale=0.005
    )
    release_synthetic_models()
    return folder


def confirm_anchors(timeout: float = 60) -> list[Anchor]:
    """Ask the worker to confirm anchors until all are confirmed (the beat would do it every 5 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        anchors = list(Anchor.objects.all())
        if all(a.status == "confirmed" for a in anchors):
            return anchors
        assert not any(a.status == "failed" for a in anchors), [a.last_error for a in anchors]
        if any(a.status == "submitted" for a in anchors):
            anchor_confirm_task.delay()
        time.sleep(0.5)
    raise AssertionError(f"anchors not confirmed: {[(a.kind, a.status, a.last_error) for a in anchors]}")


def test_ask_watch_the_answer_stream_read_its_ancestry_and_verify_it(
    page: Page, login_as: Callable[[Page, Any], None], deployed_chain: Any, anvil: Any, adapter: Path
) -> None:
    clear_rate_limits()
    builder, asker = UserFactory(username="bea-builder"), UserFactory(username="ada")
    base = default_base()
    snapshot = frozen_snapshot(owner=builder, records=FACTS, name="Beekeeping notes")
    parent = lineage_version(owner=builder, base_model=base, name="bees-v1", snapshots=[snapshot])
    version = lineage_version(
        owner=builder,
        base_model=base,
        name="bees-v2",
        parents=[(parent, ModelVersionParent.Relation.CONTINUED_FROM, 1.0)],
        snapshots=[snapshot],
        adapter=adapter,
    )

    with celery_worker_process(
        queues="inference,default,chain",
        name="h4-browser",
        pool="threads",
        concurrency=4,
        timeout=120,
        EVM_RPC_URL=anvil.rpc_url,
        INFERENCE_BATCH_WAIT_MS="50",
    ):
        confirm_anchors()  # the snapshot's and both manifests'

        # pick the published version by searching for its Datanet, and write a question
        login_as(page, asker)
        page.goto("/")
        page.get_by_role("link", name="Ask", exact=True).first.click()
        expect(page.locator("h1")).to_have_text("Ask a model")
        page.get_by_label("Search", exact=True).fill("Beekeeping")
        option = page.locator(f'[data-pick-version="{version.pk}"]')
        expect(option).to_be_visible()
        expect(page.locator("[data-pick-version]")).to_have_count(2)  # both versions trained on it
        option.click()
        expect(page.locator("[data-picked-name]")).to_have_text("bees-v2")
        page.get_by_role("textbox", name="Message").fill(QUESTION)
        page.locator("details.options summary").click()
        page.get_by_label("Max new tokens").fill("80")
        page.get_by_label("Compare with the base model").check()

        # a bad option is refused next to its field, and the question typed so far is kept
        page.get_by_label("Temperature").fill("5")
        page.get_by_role("button", name="Ask", exact=True).click()
        expect(page.locator("#id_temperature_error")).to_contain_text("less than or equal to 2")
        expect(page.get_by_role("textbox", name="Message")).to_have_value(QUESTION)
        expect(page.locator("[data-picked-name]")).to_have_text("bees-v2")
        assert InferenceRun.objects.count() == 0
        expect(option).to_have_class("version-option selected")
        screenshot(page, "inference-ask")
        page.get_by_label("Temperature").fill("0")

        # ask, and see both answers grow token by token before they end
        page.get_by_role("button", name="Ask", exact=True).click()
        cards = page.locator("#answer [data-run]")
        expect(cards).to_have_count(2)
        page.wait_for_function(
            "() => [...document.querySelectorAll('#answer [data-run]')].some(c => Number(c.dataset.chunks || 0) >= 3)",
            timeout=180_000,
        )
        streaming = page.locator("#answer [data-run][data-chunks]").first
        partial = streaming.locator("[data-answer]").inner_text()
        run_id = streaming.get_attribute("data-run")
        assert partial.strip(), "tokens arrived but no text was shown"
        screenshot(page, "inference-streaming")
        finished = page.locator(f'#answer [data-run="{run_id}"][data-status="succeeded"]')
        expect(finished).to_be_visible(timeout=180_000)
        final = finished.locator("[data-answer]").inner_text()
        assert final.startswith(partial.strip()[: max(1, len(partial.strip()) // 2)])
        expect(page.locator('#answer [data-run][data-status="succeeded"]')).to_have_count(2, timeout=180_000)
        runs = list(InferenceRun.objects.order_by("id"))
        assert [(r.version_id, r.status) for r in runs] == [(version.pk, "succeeded"), (None, "succeeded")]
        assert runs[0].completion_tokens >= 3 and runs[0].answer.strip()

        # the ancestry panel: base -> bees-v1 -> bees-v2, the Datanet with its numbers, every anchor on chain
        panel = page.locator("#ancestry")
        expect(panel.locator("[data-base-model]")).to_contain_text(base.name)
        expect(panel.locator(f'[data-version="{parent.pk}"]')).to_contain_text("bees-v1")
        expect(panel.locator(f'[data-version="{version.pk}"]')).to_contain_text("continued training from bees-v1")
        expect(panel.locator("[data-datanet] [data-records]")).to_have_text("3")
        expect(panel.locator("[data-datanet] [data-contributors]")).to_have_text("1")
        expect(panel.locator('tr[data-anchor-kind] [data-anchor-status="confirmed"]')).to_have_count(3)
        panel.scroll_into_view_if_needed()
        screenshot(page, "inference-ancestry")

        # the answers are sealed into a batch, anchored; the shareable page shows the proof and its anchor
        assert len(services.runs_seal_batches(force=True)) == 1
        confirm_anchors()
        page.get_by_role("link", name="Open this answer's page").click()
        expect(page.locator("h1")).to_have_text("bees-v2 answers")
        expect(page.locator("[data-answer]")).to_have_text(runs[0].answer.strip())
        expect(page.locator("#inclusion [data-anchor-status]")).to_have_text("on chain")
        expect(page.locator('#ancestry [data-anchor-kind="inference_batch"] [data-anchor-status]')).to_have_text(
            "on chain"
        )
        screenshot(page, "inference-run")

        # verify: the manifest of the version that answered, then this answer's inclusion in its anchored batch
        page.locator(f'#ancestry a[href="/ask/versions/{version.pk}/verify/"]').click()
        expect(page.locator("[data-verified]")).to_have_attribute("data-verified", "true")
        page.go_back()
        page.locator('#inclusion [data-verify="run"]').click()
        expect(page.locator("[data-verified]")).to_have_attribute("data-verified", "true")
        batch_anchor = InferenceRun.objects.select_related("batch__anchor").get(pk=runs[0].pk).batch.anchor
        expect(page.locator("[data-chain-block]")).to_have_text(str(batch_anchor.block_number))
        screenshot(page, "inference-verify")


def test_a_chat_of_several_turns_and_a_reply_without_a_worker(
    page: Page, login_as: Callable[[Page, Any], None]
) -> None:
    """The form's own behaviour (no worker needed): turns added and removed, plain-prompt mode, Reply prefills."""
    clear_rate_limits()
    asker = UserFactory(username="chatty")
    version = lineage_version(owner=UserFactory(username="maker"), base_model=default_base(), name="chat-v1")
    login_as(page, asker)

    page.goto(f"/ask/?version={version.pk}")
    expect(page.locator("[data-picked-name]")).to_have_text("chat-v1")
    expect(page.locator(f'[data-pick-version="{version.pk}"]')).to_have_class("version-option selected")
    expect(page.locator("[data-mode-panel=prompt]")).to_be_hidden()
    page.get_by_label("Plain prompt").check()
    expect(page.locator("[data-mode-panel=chat]")).to_be_hidden()
    expect(page.get_by_role("textbox", name="Prompt")).to_be_visible()
    page.get_by_label("Chat", exact=True).check()

    turns = page.locator("[data-chat-turn]")
    turns.nth(0).get_by_role("textbox").fill("Hello!")
    page.get_by_role("button", name="Add a message").click()
    expect(turns.nth(1).get_by_role("combobox")).to_have_value("assistant")
    turns.nth(1).get_by_role("textbox").fill("Hi. What would you like to know?")
    page.get_by_role("button", name="Add a message").click()
    turns.nth(2).get_by_role("textbox").fill("a turn I take back")
    turns.nth(2).get_by_role("button", name="Remove this message").click()
    expect(turns).to_have_count(2)
    page.get_by_role("button", name="Add a message").click()
    expect(turns.nth(2).get_by_role("combobox")).to_have_value("user")
    turns.nth(2).get_by_role("textbox").fill("Tell me about bees.")
    page.get_by_role("button", name="Ask", exact=True).click()

    expect(page.locator("#answer [data-run]")).to_have_count(1)
    expect(page.locator("#answer [data-run-status]")).to_have_text("queued")
    run = InferenceRun.objects.get()
    assert [(m["role"], m["content"]) for m in run.messages] == [
        ("user", "Hello!"),
        ("assistant", "Hi. What would you like to know?"),
        ("user", "Tell me about bees."),
    ]

    # the answer comes (as the worker would write it); Reply carries the whole chat on
    services.run_claim(run_id=run.pk, worker="test-worker")
    services.run_finish(run_id=run.pk, answer="Bees make honey.", finish_reason="stop", completion_tokens=4)
    page.goto(f"/ask/runs/{run.public_id}/")
    page.locator("hgroup [data-reply]").click()
    expect(turns).to_have_count(5)
    expect(turns.nth(3).get_by_role("textbox")).to_have_value("Bees make honey.")
    expect(turns.nth(3).get_by_role("combobox")).to_have_value("assistant")
    expect(turns.nth(4).get_by_role("textbox")).to_have_value("")


def test_ctrl_enter_sends_the_answer_stays_in_view_and_the_code_matches_the_settings(
    page: Page, login_as: Callable[[Page, Any], None]
) -> None:
    """Ctrl+Enter sends; the page scrolls the answer into view and follows its end as it streams (tokens written as
    a worker writes them, no worker needed); "View code" is the same request through /v1, with these settings."""
    clear_rate_limits()
    asker = UserFactory(username="keys")
    version = lineage_version(owner=UserFactory(username="maker2"), base_model=default_base(), name="keys-v1")
    login_as(page, asker)
    page.set_viewport_size({"width": 1280, "height": 640})
    page.goto(f"/ask/?version={version.pk}")
    message = page.locator("[data-chat-turn] textarea").first
    message.fill("Tell me about bees: it's a 'quoted' question.")
    page.locator("details.options summary").click()
    page.get_by_label("Temperature").fill("0.4")
    page.get_by_label("Max new tokens").fill("64")
    page.get_by_label("Seed").fill("11")
    page.get_by_label("Stop sequences").fill("END")

    page.locator("[data-view-code] summary").click()
    body = json.loads(page.locator("[data-code-body]").text_content() or "")
    curl = page.locator("[data-code-curl]").inner_text()
    python = page.locator("[data-code-python]").inner_text()
    assert "/v1/chat/completions" in curl and "Authorization: Bearer $OPENLEDGER_TOKEN" in curl
    assert (
        f'model="mv-{version.pk}"' in python
        and "temperature=0.4," in python
        and "client.chat.completions.create" in python
    )
    assert "'\\''quoted'\\''" in curl  # the shell quoting of the question's apostrophes
    screenshot(page, "ask-view-code")

    message.press("Control+Enter")
    expect(page.locator("#answer [data-run]")).to_have_count(1)
    run = InferenceRun.objects.get()
    # the snippet asks exactly what the page asked
    assert body == {
        "model": f"mv-{version.pk}",
        "messages": [{"role": m["role"], "content": m["content"]} for m in run.messages],
        **{k: run.options[k] for k in ("temperature", "top_p", "max_tokens", "seed", "stop")},
    }, (body, run.options)
    assert page.evaluate("() => document.getElementById('answer').getBoundingClientRect().top") < 640

    # the answer streams: the page follows its end
    services.run_claim(run_id=run.pk, worker="test-worker")
    writer = streams.RunStreamWriter(run_id=run.pk, public_id=run.public_id)
    card = page.locator("#answer [data-run]")
    for i in range(40):
        writer.token(f"Line {i} of a long answer about bees and their honey.\n")
        writer.flush()
    expect(card.locator("[data-answer]")).to_contain_text("Line 39", timeout=15_000)
    bottom = page.evaluate("() => document.querySelector('#answer [data-run]').getBoundingClientRect().bottom")
    assert bottom <= 640 + 48, bottom
