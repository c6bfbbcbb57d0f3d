"""Browser-test fixtures: headless Debian chromium, driven by Playwright, against pytest-django's ``live_server``.

Registered as a pytest plugin in the root conftest. A browser test asks for ``page`` (a fresh browser context per
test whose relative URLs resolve against the live server), marks itself ``@pytest.mark.browser``, and may call
``screenshot(page, "name")`` to write docs/screenshots/name.png, ``login_as(page, user)`` to skip the login form,
or ``install_wallet(page, account)`` to give the page an EIP-1193 wallet backed by a test key. A JavaScript error, a
console error or a Content-Security-Policy violation on any of the test's pages fails it (``PageProblems``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.conf import settings
from django.test import Client

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from playwright.sync_api import Browser, Page

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS_DIR = ROOT / "docs" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Nothing in a test may reach the network: these keep chromium from phoning home and from waiting on it.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def playwright_browser() -> Iterator[Browser]:
    """One chromium per test module; each test gets its own context, so no cookies leak between tests.

    Module scope, not session: while Playwright's sync API is started, its event loop runs in this thread and
    Django refuses ORM calls as "async unsafe" unless DJANGO_ALLOW_ASYNC_UNSAFE is set. The test code is plain
    synchronous code, so the check does not apply to it, but the variable must not outlive the browser tests:
    later tests start subprocesses (``manage.py check --deploy``, Celery workers) that would inherit it.
    """
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright  # every test session loads this plugin: only browser tests pay

    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


# Reports each Content-Security-Policy violation as a console error that names it, whatever the browser logs itself.
_CSP_WATCH_SCRIPT = """
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${where}`);
});
"""


class PageProblems:
    """What went wrong in a browser context: uncaught JavaScript errors, console errors, CSP violations.

    An HTTP error status the page fetched ("Failed to load resource") is not counted: tests provoke refusals on
    purpose and check them themselves.
    """

    def __init__(self) -> None:
        self.js_errors: list[str] = []
        self.console_errors: list[str] = []

    def watch(self, context: Any) -> None:
        context.add_init_script(_CSP_WATCH_SCRIPT)
        context.on("weberror", lambda error: self.js_errors.append(str(error.error)))
        context.on("console", self._console)

    def _console(self, message: Any) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.console_errors.append(f"{message.text} ({message.location.get('url', '')})")

    @property
    def csp_violations(self) -> list[str]:
        return [e for e in self.console_errors if "CSP violation" in e or "Content Security Policy" in e]

    def all(self) -> list[str]:
        return self.js_errors + self.console_errors


@pytest.fixture
def page(playwright_browser: Browser, live_server: Any, transactional_db: None) -> Iterator[Page]:
    """A new page on the live server. The live server's thread reads through its own database connection, hence
    ``transactional_db``: data a test creates is committed. A JavaScript error, a console error or a
    Content-Security-Policy violation on any page of the test fails it."""
    context = playwright_browser.new_context(base_url=live_server.url, viewport=VIEWPORT)
    context.set_default_timeout(10_000)
    problems = PageProblems()
    problems.watch(context)
    new_page = context.new_page()
    yield new_page
    context.close()
    if problems.all():
        pytest.fail(f"errors on the page (JavaScript, console, CSP): {problems.all()}")


def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as docs/screenshots/NAME.png and return the path."""
    SCREENSHOTS_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def login_as(live_server: Any) -> Callable[[Page, Any], None]:
    """``login_as(page, user)``: give the page's browser context a session for ``user`` without the login form."""

    def _login(page: Page, user: Any) -> None:
        client = Client()
        client.force_login(user)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME]
        page.context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": live_server.url}])

    return _login


_WALLET_SCRIPT = """
(() => {
  const address = %(address)s;
  const chainId = %(chain_id)s;
  window.ethereum = {
    isOpenLedgerTestWallet: true,
    async request({ method, params }) {
      if (method === "eth_requestAccounts" || method === "eth_accounts") return [address];
      if (method === "eth_chainId") return chainId;
      if (method === "personal_sign") return await window.__openledgerTestWalletSign(params[0], params[1]);
      if (method === "eth_signTypedData_v4") return await window.__openledgerTestWalletSignTyped(params[0], params[1]);
      throw Object.assign(new Error("unsupported method " + method), { code: 4200 });
    },
    on() {},
    removeListener() {},
  };
})();
"""


def install_wallet(page: Page, account: LocalAccount, *, chain_id: int = 31337) -> list[str]:
    """Inject an EIP-1193 ``window.ethereum`` whose ``personal_sign`` and ``eth_signTypedData_v4`` (EIP-712, the
    typed data as JSON text) are answered here, with ``account``'s key.

    Call before the first navigation. Returns the list of messages signed so far (it grows as the page signs; a
    typed message is listed as its JSON text). The key stays in this process, as it would stay in a real wallet.
    """
    from eth_account import Account  # 1.3 s on import: only the wallet tests pay it
    from eth_account.messages import encode_defunct, encode_typed_data

    signed: list[str] = []

    def sign(hex_message: str, address: str) -> str:
        if address.lower() != account.address.lower():
            raise ValueError(f"the test wallet holds {account.address}, not {address}")
        text = bytes.fromhex(hex_message.removeprefix("0x")).decode("utf-8")
        signed.append(text)
        return "0x" + Account.sign_message(encode_defunct(text=text), account.key).signature.hex()

    def sign_typed(address: str, typed_json: str) -> str:
        if address.lower() != account.address.lower():
            raise ValueError(f"the test wallet holds {account.address}, not {address}")
        signed.append(typed_json)
        typed = encode_typed_data(full_message=json.loads(typed_json))
        return "0x" + Account.sign_message(typed, account.key).signature.hex().removeprefix("0x")

    page.expose_function("__openledgerTestWalletSign", sign)
    page.expose_function("__openledgerTestWalletSignTyped", sign_typed)
    page.add_init_script(
        _WALLET_SCRIPT % {"address": json.dumps(account.address), "chain_id": json.dumps(hex(chain_id))}
    )
    return signed
