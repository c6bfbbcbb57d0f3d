"""In headless chromium: sign up, log out, log in, and link a wallet through an injected EIP-1193 provider."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from playwright.sync_api import Page, expect
from pytest_django.fixtures import Settings

from accounts import siwe
from accounts.models import User, Wallet
from openledger_web.browser import install_wallet, screenshot

pytestmark = pytest.mark.browser

PASSWORD = "correct-horse-battery-staple"
KEY = Account.from_key("0x" + "99" * 32)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_sign_up_log_out_log_in_and_link_a_browser_wallet(page: Page) -> None:
    signed = install_wallet(page, KEY)

    # given a new visitor who signs up
    page.goto("/accounts/signup/")
    page.get_by_label("Username").fill("carol")
    page.get_by_label("Email").fill("carol@example.org")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password confirmation").fill(PASSWORD)
    screenshot(page, "signup")
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(re.compile(r"/accounts/profile/$"))
    expect(page.locator("#account")).to_contain_text("carol@example.org")

    # who logs out and back in
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("link", name="Log in")).to_be_visible()
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("carol")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("Please enter a correct username and password")
    page.get_by_label("Password").fill(PASSWORD)
    screenshot(page, "login")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/accounts/profile/$"))

    # when they link the wallet their browser offers
    page.get_by_role("button", name="Use my browser wallet").click()
    sign_button = page.get_by_role("button", name="Sign with browser wallet")
    expect(sign_button).to_be_visible()
    expect(page.locator("textarea[name=message]")).to_contain_text(KEY.address)
    screenshot(page, "profile-wallet-challenge")
    sign_button.click()

    # then the profile lists it, and the wallet signed exactly the issued EIP-4361 message
    expect(page.locator("[data-wallet-address]")).to_have_text(KEY.address)
    expect(page.get_by_role("status").filter(has_text="Linked")).to_be_visible()
    screenshot(page, "profile-wallet-linked")
    wallet = Wallet.objects.get()
    assert wallet.user == User.objects.get(username="carol")
    assert signed == [wallet.message]
    message = siwe.SiweMessage.parse(wallet.message)
    assert message.domain == page.url.split("/")[2]
    assert siwe.recover_signer(wallet.message, wallet.signature) == KEY.address


def test_link_a_wallet_by_pasting_a_signature_made_elsewhere(
    page: Page, login_as: Callable[[Page, User], None]
) -> None:
    user = User.objects.create_user("dave", "dave@example.org")
    login_as(page, user)
    page.goto("/accounts/profile/")
    expect(page.get_by_role("button", name="Use my browser wallet")).to_be_hidden()

    page.get_by_label("Link a wallet").fill(KEY.address.lower())
    page.get_by_role("button", name="Get message to sign").click()
    message = page.locator("textarea[name=message]")
    expect(message).to_contain_text("Nonce: ")
    text = message.input_value()

    # A forged signature is refused in place and the challenge stays on screen.
    other = Account.from_key("0x" + "aa" * 32)
    page.get_by_label("Signature").fill("0x" + other.sign_message(encode_defunct(text=text)).signature.hex())
    page.get_by_role("button", name="Verify and link").click()
    expect(page.get_by_role("alert")).to_contain_text(f"made by {other.address}")
    screenshot(page, "profile-wallet-error")

    page.get_by_label("Signature").fill("0x" + KEY.sign_message(encode_defunct(text=text)).signature.hex())
    page.get_by_role("button", name="Verify and link").click()
    expect(page.locator("[data-wallet-address]")).to_have_text(KEY.address)
    assert Wallet.objects.get().user == user

    page.get_by_label("Expires").select_option("30")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("[data-token]")).to_have_text(re.compile(r"^olt_[A-Za-z0-9_-]{43}$"))
    expect(page.locator("[data-token-info]")).to_contain_text("expires")
    screenshot(page, "profile-token")
