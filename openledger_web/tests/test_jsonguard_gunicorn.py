"""A body nested 200,000 deep through a real gunicorn worker, as `make run` serves it, after a wallet link has loaded
eth_account (which raises the interpreter's recursion limit to 100,000): a 400 each time, and the same worker lives
on. Before the JSON guard the C decoder overflowed the C stack and the worker died of SIGSEGV (issue #11, seen 1)."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from django.conf import settings
from eth_account import Account
from eth_account.messages import encode_defunct
from rest_framework.authtoken.models import Token

from inference.tests.test_views_gunicorn import gunicorn
from openledger_web.tests.factories import UserFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DEEP = 200_000


def test_deep_bodies_are_refused_and_the_worker_lives_on(transactional_db: Any) -> None:
    key = Token.objects.create(user=UserFactory()).key
    log = settings.DATA_DIR / "gunicorn-stream-test.log"
    logged_before = log.stat().st_size if log.exists() else 0
    with gunicorn() as url, requests.Session() as http:
        # given: a wallet link attempt, which loads eth_account (and its recursion limit) into the worker
        token = {"Authorization": f"Token {key}"}
        stranger = Account.create()
        challenge = http.post(f"{url}/api/wallets/challenge/", json={"address": stranger.address}, headers=token)
        assert challenge.status_code == 201, challenge.text
        forged = Account.create().sign_message(encode_defunct(text=challenge.json()["message"])).signature.hex()
        link = {"nonce": challenge.json()["nonce"], "message": challenge.json()["message"], "signature": "0x" + forged}
        assert http.post(f"{url}/api/wallets/", json=link, headers=token).status_code == 400

        # when: bodies nested 200,000 deep go to the wallet API and to /v1 (the worker's threads: one each)
        nested = b"[" * DEEP + b"]" * DEEP
        json_type = {"Content-Type": "application/json"}
        wallet = http.post(
            f"{url}/api/wallets/challenge/", data=b'{"address": ' + nested + b"}", headers={**token, **json_type}
        )
        chat = http.post(
            f"{url}/v1/chat/completions",
            data=b'{"model": "mv-1", "messages": ' + nested + b"}",
            headers={"Authorization": f"Bearer {key}", **json_type},
        )

        # then: each is a 400 saying why, in its API's shape, and the worker still answers
        assert wallet.status_code == 400 and wallet.json()["code"] == "too_deep", wallet.text
        assert chat.status_code == 400 and chat.json()["error"]["code"] == "too_deep", chat.text
        assert http.get(f"{url}/api/me/", headers=token).status_code == 200
    logged = log.read_bytes()[logged_before:].decode(errors="replace")
    assert "SIGSEGV" not in logged and "Worker (pid" not in logged, logged[-2000:]
