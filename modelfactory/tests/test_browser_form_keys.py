"""In headless chromium, the ModelFactory keys and buttons people reach for without thinking: Enter in a field of the
fine-tune form (it must never apply a preset and reset the settings), and the version page's Compare button (it must
open a usable compare page, not a 400). No training: the versions are stand-ins."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from modelfactory.models import FineTuneJob, ModelVersion
from modelfactory.tests.factories import UserFactory, default_base, stand_in_version
from openledger_web.browser import screenshot

pytestmark = [pytest.mark.browser]


def test_enter_in_the_name_field_launches_the_form_and_never_applies_a_preset(
    page: Page, login_as: Callable[[Page, Any], None]
) -> None:
    builder = UserFactory(username="enid")
    default_base()
    login_as(page, builder)
    page.goto("/models/jobs/new/")
    page.get_by_label("LoRA rank").fill("7")
    page.get_by_label("Learning rate").fill("0.0007")
    name = page.get_by_label("Name", exact=True)
    name.fill("Pressed enter")
    name.press("Enter")
    # the form was submitted as a launch: refused (no snapshot chosen), with the settings as they were typed
    expect(page.locator("#id_snapshots_error")).to_be_visible()
    expect(page.get_by_label("LoRA rank")).to_have_value("7")
    expect(page.get_by_label("Learning rate")).to_have_value("0.0007")
    expect(page.get_by_label("Name", exact=True)).to_have_value("Pressed enter")
    expect(page.locator("[data-preset-error]")).to_have_count(0)
    assert page.locator('[data-preset][aria-pressed="true"]').count() == 0
    assert not FineTuneJob.objects.exists()


def test_the_version_pages_compare_button_opens_a_compare_page_that_warns_about_other_eval_sets(
    page: Page, login_as: Callable[[Page, Any], None]
) -> None:
    owner = UserFactory(username="cora")
    base = default_base()
    first = stand_in_version(owner=owner, base_model=base, name="first")
    second = stand_in_version(owner=owner, base_model=base, name="second")
    for version, seed in ((first, 1), (second, 2)):
        ModelVersion.objects.filter(pk=version.pk).update(
            metrics={"train_loss": 1.0, "eval_loss": 1.5 + seed / 10}, config={**version.config, "seed": seed}
        )
    login_as(page, owner)
    page.goto(f"/models/versions/{first.pk}/")
    page.get_by_role("button", name="Compare").click()
    expect(page.locator("[data-compare-choose]")).to_be_visible()
    expect(page.get_by_label("Version A")).to_have_value(str(first.pk))
    page.locator(f'[data-compare-with="{second.pk}"]').click()
    expect(page.locator("[data-compare-metrics]")).to_be_visible()
    expect(page.locator("[data-eval-sets-differ]")).to_contain_text("Different eval sets")
    screenshot(page, "modelfactory-compare-eval-sets")
