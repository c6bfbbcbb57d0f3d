"""In headless chromium, a family other than the bundled Llama end to end: a staff member registers a tiny
random-weight Mistral folder (built offline, ``modelfactory.tiny``) as a base model through the page, launches a
LoRA fine-tune on it through the form with a Datanet another user contributed to, a real Celery worker trains it
(index included), the version page shows its lineage, then a real inference worker loads the Mistral base with the
adapter, answers a question on the ask page, and the ancestry panel names the snapshot and the Datanet with its one
contributor (named on the Datanet's page it links to); the answer's page shows the attribution computed on the
Mistral index. Real PostgreSQL, Redis, anvil."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from playwright.sync_api import Page, expect

from datanets import services as datanet_services
from datanets.tests.factories import DatanetFactory, accepted, jsonl
from inference.models import InferenceRun
from modelfactory.models import BaseModel, FineTuneJob, ModelVersion
from modelfactory.tests.factories import UserFactory
from modelfactory.tiny import build_tiny_model
from openledger_web.browser import screenshot
from openledger_web.testing import celery_worker_process

from .test_browser_modelfactory import TRAIN_TIMEOUT_MS, confirm_anchor

pytestmark = [pytest.mark.browser, pytest.mark.chain, pytest.mark.slow]

FACTS = [
    {"prompt": f"What does the mistral wind bring to valley {i}?", "response": f"Cold dry air and {i + 2} clear days."}
    for i in range(6)
]
QUESTION = "What does the mistral wind bring?"


@pytest.fixture
def tiny_mistral(tmp_path: Path) -> Path:
    """A two-layer random-weight MistralForCausalLM folder with the bundled tokenizer (nothing downloaded)."""
    return build_tiny_model("mistral", tmp_path / "tiny-mistral", tokenizer_dir=django_settings.DEFAULT_BASE_MODEL_DIR)


def test_register_a_tiny_mistral_train_on_it_ask_the_version_and_read_its_ancestry(
    page: Page,
    login_as: Callable[[Page, Any], None],
    deployed_chain: Any,
    anvil: Any,
    settings: Any,
    tmp_path: Path,
    tiny_mistral: Path,
) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"  # both workers get the same folder below
    builder = UserFactory(username="marin", is_staff=True)  # only staff may register a base model
    curator, contributor = UserFactory(username="nora-curator"), UserFactory(username="cora-contributor")
    datanet = DatanetFactory(owner=curator, name="Mistral winds", slug="mistral-winds", record_type="instruction")
    accepted(datanet, contributor, jsonl(*FACTS))
    snapshot = datanet_services.snapshot_freeze(datanet=datanet, user=curator)
    worker_env = {"MEDIA_ROOT": str(settings.MEDIA_ROOT), "EVM_RPC_URL": anvil.rpc_url}

    # register the folder through the page
    login_as(page, builder)
    page.goto("/models/bases/")
    register = page.locator("form[data-register]")
    register.get_by_label("Name").fill("Tiny Mistral")
    register.get_by_label("Licence").fill("Apache-2.0")
    register.get_by_label("Folder path").fill(str(tiny_mistral))
    register.get_by_role("button", name="Register").click()
    expect(page.locator(".messages")).to_contain_text("Tiny Mistral is registered: MistralForCausalLM")
    base = BaseModel.objects.get(name="Tiny Mistral")
    assert (base.model_type, base.architecture, base.path) == ("mistral", "MistralForCausalLM", str(tiny_mistral))
    row = page.locator(f'[data-base="{base.pk}"]')
    expect(row).to_contain_text("MistralForCausalLM")
    expect(row).to_contain_text("by marin")
    screenshot(page, "modelfactory-tiny-mistral-registered")

    with celery_worker_process(name="families-training", queues="training,default,chain", timeout=90, **worker_env):
        # launch a fine-tune on it through the form: a few steps of rank-4 LoRA
        page.goto("/models/jobs/new/")
        page.get_by_label("Name", exact=True).fill("Mistral winds expert")
        page.locator('[data-preset="quick-test"]').click()
        page.get_by_label("Start from").select_option(f"base-{base.pk}")
        page.get_by_label(f"Mistral winds snapshot #{snapshot.number}").check()
        expect(page.locator("[data-records]")).to_have_text(str(len(FACTS)))
        page.get_by_label("Max steps").fill("3")
        expect(page.locator("[data-estimate-steps]")).to_have_text("3")
        page.get_by_label("Learning rate").fill("0.003")
        page.get_by_role("button", name="Launch fine-tune").click()

        expect(page.locator("hgroup h1")).to_have_text("Mistral winds expert")
        job = FineTuneJob.objects.get(name="Mistral winds expert")
        assert job.base_model_id == base.pk and job.config["max_steps"] == 3
        expect(page.locator("[data-job-status]")).to_have_text("succeeded", timeout=TRAIN_TIMEOUT_MS)
        job.refresh_from_db()
        assert job.status == "succeeded", job.error

        # the version: its lineage starts from the Mistral base and the snapshot; its index was built on Mistral
        page.locator("[data-version-link]").click()
        version = ModelVersion.objects.get(job=job)
        assert version.base_model_id == base.pk
        expect(page.locator("hgroup h1")).to_contain_text("Mistral winds expert")
        expect(page.locator(f'[data-lineage] [data-node="s{snapshot.pk}"]')).to_be_visible()
        expect(page.locator("body")).to_contain_text("Tiny Mistral")
        # the quick-test preset holds one record of six out for evaluation: the five trained on are indexed
        expect(page.locator("[data-attribution-index]")).to_contain_text(
            re.compile(rf"Records indexed\s*{len(FACTS) - 1} \(every")
        )
        confirm_anchor(version)
        page.reload()
        expect(page.locator("#anchor [data-anchor-status]")).to_have_text("on chain")
        page.get_by_role("button", name="Publish").click()
        expect(page.locator("[data-published]")).to_have_text("published")
        screenshot(page, "modelfactory-tiny-mistral-version")

    with celery_worker_process(
        name="families-inference",
        queues="inference,attribution,default,chain",
        pool="threads",
        concurrency=4,
        timeout=120,
        INFERENCE_BATCH_WAIT_MS="50",
        **worker_env,
    ):
        # ask the version on the inference page; the worker loads the Mistral base and the adapter
        page.goto(f"/ask/?version={version.pk}")
        expect(page.locator("[data-picked-name]")).to_have_text("Mistral winds expert")
        page.get_by_role("textbox", name="Message").fill(QUESTION)
        page.locator("details.options summary").click()
        page.get_by_label("Max new tokens").fill("12")
        # random weights with tied embeddings repeat the prompt's last token (a newline) when greedy: sample, seeded
        page.get_by_label("Temperature").fill("1")
        page.get_by_label("Seed").fill("7")
        page.get_by_role("button", name="Ask", exact=True).click()
        card = page.locator('#answer [data-run][data-status="succeeded"]')
        expect(card).to_be_visible(timeout=180_000)
        run = InferenceRun.objects.get()
        assert (run.version_id, run.status) == (version.pk, "succeeded"), run.error
        assert run.completion_tokens >= 1 and run.answer.strip()

        # its ancestry: the Mistral base, the version on it, the snapshot of the Datanet and its one contributor
        panel = page.locator("#ancestry")
        expect(panel.locator("[data-base-model]")).to_contain_text("Tiny Mistral")
        expect(panel.locator("[data-base-model]")).to_contain_text("MistralForCausalLM")
        expect(panel.locator(f'[data-version="{version.pk}"]')).to_contain_text(
            f"trained on snapshot #{snapshot.number} of Mistral winds"
        )
        datanet_row = panel.locator(f'[data-datanet="{datanet.slug}"]')
        expect(datanet_row).to_contain_text("Mistral winds")
        expect(datanet_row.locator("[data-records]")).to_have_text(str(len(FACTS)))
        expect(datanet_row.locator("[data-contributors]")).to_have_text("1")
        panel.scroll_into_view_if_needed()
        screenshot(page, "inference-tiny-mistral-ancestry")

        # the answer's page: the attribution computed on the Mistral version's index
        page.get_by_role("link", name="Open this answer's page").click()
        attribution = page.locator(".attribution-panel")
        deadline = time.monotonic() + 120
        while attribution.get_attribute("data-attribution-state") == "pending":
            assert time.monotonic() < deadline, "the attribution stayed pending"
            page.wait_for_timeout(500)
        # computed on the Mistral index: twelve random-weight tokens repeat no record, so nobody is credited for them
        expect(attribution).to_have_attribute("data-attribution-state", "ok")
        expect(attribution.locator("[data-verdict]")).to_have_attribute("data-verdict", "unsupported")
        screenshot(page, "inference-tiny-mistral-run")

        # the ancestry's Datanet link: the contributor behind the snapshot
        page.locator(f'#ancestry [data-datanet="{datanet.slug}"] a').first.click()
        expect(page.locator("h1")).to_contain_text("Mistral winds")
        expect(page.get_by_role("row", name="cora-contributor")).to_contain_text(str(len(FACTS)))
