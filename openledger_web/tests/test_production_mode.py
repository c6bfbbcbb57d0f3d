"""Production mode works: with DEBUG off, the static files collect, a real gunicorn serves every page to a user who
logged in through the form, and no page breaks its Content-Security-Policy or logs a console error."""

from __future__ import annotations

import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings
from playwright.sync_api import Browser, expect
from playwright.sync_api import Error as PlaywrightError

from governance.models import Proposal
from governance.tests.support import a_proposal
from ledger import services as ledger_services
from ledger.models import Anchor
from ledger.testing import free_port
from modelfactory.tests.factories import stand_in_version
from openledger_web.browser import VIEWPORT, PageProblems
from openledger_web.testing import ROOT, gunicorn_process, service_env
from rewards.tests.support import build_world, paid_run

pytestmark = [pytest.mark.slow, pytest.mark.chain]

PASSWORD = "a-long-production-password-42"


def production_env(data_dir: Path) -> dict[str, str]:
    """The production settings as an operator sets them, except that the test speaks plain HTTP to 127.0.0.1."""
    return service_env(
        DEBUG="False",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="False",
        SESSION_COOKIE_SECURE="False",
        CSRF_COOKIE_SECURE="False",
        DATA_DIR=str(data_dir),  # STATIC_ROOT lives there: this test's own collected files
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
    )


def every_page(world: Any, run: Any, other: Any) -> list[str]:
    """Every HTML page a signed-in staff curator can open, with the world's objects in their URLs."""
    datanet, snapshot, version = world.datanet, world.snapshot, world.version
    contribution = world.alice_contribution.pk
    d = f"/datanets/{datanet.slug}"
    return [
        "/",
        "/datanets/", "/datanets/new/", "/datanets/mine/", "/datanets/curation/", "/datanets/leaderboard/",
        f"{d}/", f"{d}/edit/", f"{d}/people/", f"{d}/contribute/", f"{d}/leaderboard/",
        f"{d}/snapshots/{snapshot.number}/",
        f"{d}/records/", f"{d}/records/?check=flagged&q=record",
        f"{d}/records/{world.alice_contribution.records.first().pk}/",
        f"{d}/records/takedown/?record={world.alice_contribution.records.first().pk}",
        f"{d}/statistics/", f"{d}/statistics/?snapshot={snapshot.number}",
        f"/datanets/contributions/{contribution}/",
        "/models/", "/models/compare/", f"/models/compare/?a={version.pk}",
        f"/models/compare/?a={version.pk}&b={other.pk}",
        f"/models/versions/{version.pk}/",
        "/models/bases/", "/models/bases/register/", "/models/jobs/", "/models/jobs/new/",
        f"/models/jobs/{version.job_id}/", f"/models/merge/?versions={version.pk}",
        "/ask/", "/ask/history/", "/ask/engines/", f"/ask/runs/{run.public_id}/",
        f"/ask/versions/{version.pk}/verify/", f"/ask/snapshots/{snapshot.pk}/verify/",
        f"/attribution/runs/{run.public_id}/panel/", "/attribution/earnings/",
        f"/attribution/contributions/{contribution}/impact/",
        f"/attribution/lineage/contributions/{contribution}/",
        f"/attribution/lineage/records/{world.alice_contribution.records.first().pk}/",
        f"/attribution/lineage/contributors/{world.alice.username}/",
        "/accounts/profile/",
        "/governance/", "/governance/?state=active", "/governance/new/", "/governance/delegate/",
        "/governance/parameters/",
        *[f"/governance/proposals/{p.proposal_id}/" for p in Proposal.objects.all()[:1]],
        "/api/docs/", "/api/redoc/",
        "/admin/", "/admin/accounts/user/", f"/admin/accounts/user/{world.owner.pk}/change/",
        "/admin/datanets/datanet/", f"/admin/datanets/datanet/{datanet.pk}/change/", "/admin/datanets/revocation/",
    ]  # fmt: skip


@pytest.mark.browser
def test_debug_off_collects_static_serves_every_page_under_its_csp_without_console_errors(
    transactional_db: None, deployed_chain: Any, playwright_browser: Browser, settings: Any, tmp_path: Path
) -> None:
    # given: a world of data, and its owner, a staff curator with a password gunicorn's hasher knows
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    world = build_world()
    world.asker = world.owner
    run = paid_run(world)
    other = stand_in_version(owner=world.owner, base_model=world.version.base_model, name="lantern-v2")
    a_proposal()
    for anchor in Anchor.objects.filter(status="pending"):  # so the verify pages have a transaction to check
        ledger_services.anchor_send(anchor_id=anchor.pk)
    ledger_services.anchors_confirm()
    owner = world.owner
    owner.is_staff = owner.is_superuser = True
    owner.set_password(PASSWORD)
    owner.save()
    env = production_env(tmp_path)

    # when: the production settings collect the static files (a missing source map used to fail them here)
    collected = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert (tmp_path / "static" / "staticfiles.json").exists()

    with gunicorn_process(log=tmp_path / "gunicorn.log", env=env, ready_path="/accounts/login/") as url:
        context = playwright_browser.new_context(base_url=url, viewport=VIEWPORT)
        context.set_default_timeout(20_000)
        problems = PageProblems()
        problems.watch(context)
        page = context.new_page()
        try:
            # and the owner logs in through the form
            page.goto("/accounts/login/")
            page.get_by_label("Username").fill(owner.username)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page).to_have_url(re.compile(r"/accounts/profile/$"))

            # then: every page answers 200 under the CSP, with nothing in the console
            failures: dict[str, object] = {}
            for path in every_page(world, run, other):
                try:
                    response = page.goto(path, wait_until="networkidle")
                except PlaywrightError as e:  # chromium refuses to show some error statuses at all
                    failures[path] = str(e).splitlines()[0]
                    continue
                assert response is not None
                if response.status != 200:
                    failures[path] = response.status
                elif "content-security-policy" not in response.headers:
                    failures[path] = "no Content-Security-Policy header"
            assert failures == {}
            assert problems.csp_violations == []
            assert problems.all() == []
        finally:
            context.close()
    log = (tmp_path / "gunicorn.log").read_text()
    assert "Traceback" not in log, log


def test_make_run_with_debug_off_prepares_collects_seeds_on_request_and_serves(
    transactional_db: None, deployed_chain: Any, tmp_path: Path
) -> None:
    # given: `DEBUG=False scripts/run.py --seed-demo`, web server only, on the test database and chain
    port = free_port()
    env = production_env(tmp_path)
    # the default control socket in $HOME is shared by every gunicorn on this machine
    env.update(RUN_ONLY="web", PORT=str(port), GUNICORN_CMD_ARGS="--no-control-socket")
    log = tmp_path / "run.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "scripts/run.py", "--seed-demo"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        # when it is up
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 180
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                login = requests.get(f"{url}/accounts/login/", timeout=5)
                break
            except (requests.ConnectionError, requests.Timeout):
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)

        # then: the page and its collected, hashed static files are served, and the demo users exist
        assert login.status_code == 200
        stylesheet = re.search(r'href="(/static/css/app\.[0-9a-f]{12}\.css)"', login.text)
        assert stylesheet, login.text
        assert requests.get(url + stylesheet.group(1), timeout=5).status_code == 200
        session = requests.Session()
        session.get(f"{url}/accounts/login/", timeout=5)
        answer = session.post(
            f"{url}/accounts/login/",
            data={"username": "alice", "password": "demo-password-123"},
            headers={"X-CSRFToken": session.cookies["csrftoken"], "Referer": f"{url}/accounts/login/"},
            timeout=30,
        )
        assert answer.url.endswith("/accounts/profile/"), answer.status_code
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
