"""Every page usable on a 390 px phone (issue 15, item 7): the header folds behind a Menu button, and no page is
wider than the screen. Screenshots at phone and desktop size go to docs/screenshots/."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from governance.tests.support import a_proposal
from modelfactory.tests.factories import stand_in_version
from openledger_web.browser import SCREENSHOTS_DIR, VIEWPORT, screenshot
from openledger_web.tests.test_production_mode import every_page
from rewards.tests.support import _pasted, build_world, paid_run

pytestmark = [pytest.mark.browser, pytest.mark.chain, pytest.mark.slow]

PHONE = {"width": 390, "height": 844}
# The elements that stick out past the right edge, to name in a failure: the deepest ones, not their ancestors.
WIDER_THAN_THE_SCREEN = """() => {
  const width = window.innerWidth;
  const out = [...document.querySelectorAll("body *")].filter((e) => e.getBoundingClientRect().right > width + 0.5);
  const deepest = out.filter((e) => !out.some((o) => o !== e && e.contains(o)));
  return {
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: width,
    offenders: deepest.slice(0, 5).map((e) => `${e.tagName.toLowerCase()}.${[...e.classList].join(".")}`
      + ` right=${Math.round(e.getBoundingClientRect().right)}`),
  };
}"""


@pytest.fixture
def world_and_pages(deployed_chain: Any) -> tuple[Any, list[str]]:
    world = build_world()
    world.asker = world.owner
    run = paid_run(world)
    other = stand_in_version(owner=world.owner, base_model=world.version.base_model, name="lantern-v2")
    a_proposal()
    world.owner.is_staff = world.owner.is_superuser = True
    world.owner.save()
    # one contribution waiting, so the curation queue has an item (forms and all) and the header its count
    _pasted(world.datanet, world.bob, ["the lamp room has a brass door", "the keeper climbs at dusk"], accept_by=None)
    return world, every_page(world, run, other)


def test_every_page_is_no_wider_than_a_390_px_phone(
    page: Page, login_as: Callable[[Page, Any], None], world_and_pages: tuple[Any, list[str]]
) -> None:
    world, pages = world_and_pages
    login_as(page, world.owner)
    page.set_viewport_size(PHONE)

    too_wide: dict[str, Any] = {}
    for path in pages:
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        measured = page.evaluate(WIDER_THAN_THE_SCREEN)
        if measured["scrollWidth"] > measured["innerWidth"]:
            too_wide[path] = measured

    assert too_wide == {}, json.dumps(too_wide, indent=1)


def test_the_header_folds_behind_a_menu_button_on_a_phone_and_opens_with_it(
    page: Page, login_as: Callable[[Page, Any], None], world_and_pages: tuple[Any, list[str]]
) -> None:
    world, _ = world_and_pages
    login_as(page, world.owner)
    page.set_viewport_size(PHONE)
    page.goto(f"/datanets/{world.datanet.slug}/")

    menu = page.get_by_role("button", name="Menu")
    earnings = page.locator("header").get_by_role("link", name="Earnings")
    expect(menu).to_have_attribute("aria-expanded", "false")
    expect(earnings).to_be_hidden()
    screenshot(page, "mobile-datanet-detail")

    menu.click()
    expect(menu).to_have_attribute("aria-expanded", "true")
    expect(earnings).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS_DIR / "mobile-menu-open.png"))  # the screen, not the whole page
    page.keyboard.press("Escape")
    expect(earnings).to_be_hidden()

    # on a desktop the same header is one line, with no Menu button
    page.set_viewport_size(VIEWPORT)
    expect(menu).to_be_hidden()
    expect(earnings).to_be_visible()


def test_screenshots_of_the_main_pages_at_phone_and_desktop_size(
    page: Page, login_as: Callable[[Page, Any], None], world_and_pages: tuple[Any, list[str]]
) -> None:
    world, _ = world_and_pages
    login_as(page, world.owner)
    shots = {
        "home": "/",
        "contribution": f"/datanets/contributions/{world.alice_contribution.pk}/",
        "curation": "/datanets/curation/",
        "mine": "/datanets/mine/",
        "finetune-form": "/models/jobs/new/",
        "ask": "/ask/",
    }
    for size, viewport in (("mobile", PHONE), ("desktop", VIEWPORT)):
        page.set_viewport_size(viewport)
        for name, path in shots.items():
            page.goto(path)
            screenshot(page, f"{size}-{name}")
