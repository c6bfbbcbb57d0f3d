"""A body nested 200,000 deep through a real gunicorn worker, as `make run` serves it, after a wallet link has loaded
eth_account (which raises the interpreter's recursion limit to 100,000): a 400 each time, and the same worker lives
on. Before the JSON guard the C decoder overflowed the C stack and the worker died of SIGSEGV (issue #11, seen 1)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings
from eth_account import Account
from eth_account.messages import encode_defunct

from accounts.services import api_token_create
from accounts.tests.factories import UserFactory
from openledger_web.testing import ASGI_SERVER, WSGI_GTHREAD_SERVER, gunicorn_process

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DEEP = 200_000


# the gthread server is where the crash was seen; the uvicorn worker is what `make run` serves now
@pytest.mark.parametrize("server", [WSGI_GTHREAD_SERVER, ASGI_SERVER], ids=["wsgi-gthread", "asgi"])
def test_deep_bodies_are_refused_and_the_worker_lives_on(transactional_db: Any, server: list[str]) -> None:
    key = api_token_create(user=UserFactory()).key
    log = Path(settings.DATA_DIR) / "gunicorn-jsonguard-test.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    logged_before = log.stat().st_size if log.exists() else 0
    with gunicorn_process(log=log, server=server) as url, requests.Session() as http:
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
    # a worker that died says so ("was sent SIGSEGV", "exited with code"); the SIGTERM that stops the server does not
    died = re.search(r"SIGSEGV|Worker \(pid:?\s*\d+\) (was sent SIG(?!TERM)|exited with code)", logged)
    assert not died, logged[-2000:]
