"""`npm run verify` as a command: bad usage and unreachable services exit 2 with a message, never a stack trace or
a hang, and are told apart from a mismatch (exit 1)."""

from __future__ import annotations

import subprocess

import pytest

from ledger.testing import ROOT, Anvil, free_port


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["npm", "run", "--silent", "verify", "--", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "--rpc is required"),
        (("--rpc", "http://127.0.0.1:1"), "give --site or at least one artifact URL"),
        (("--rpc", "http://127.0.0.1:1", "http://127.0.0.1:2/elsewhere/"), "not an artifact URL this verifier knows"),
        (("--rpc", "http://127.0.0.1:1", "--site", "not a url"), "not a URL"),
        (("--rpc", "http://127.0.0.1:1", "--site", "http://127.0.0.1:2", "--bogus"), "Unknown option"),
    ],
)
def test_bad_usage_exits_2_with_the_usage(args: tuple[str, ...], message: str) -> None:
    done = verify(*args)

    assert done.returncode == 2
    assert message in done.stderr and "usage: npm run verify" in done.stderr
    assert done.stdout == ""


def test_an_unreachable_rpc_exits_2() -> None:
    done = verify("--rpc", f"http://127.0.0.1:{free_port()}", "--site", "http://127.0.0.1:1")

    assert done.returncode == 2
    assert done.stderr.startswith("error: eth_chainId at http://127.0.0.1:")
    assert "    at " not in done.stderr  # a message, not a stack trace


@pytest.mark.chain
def test_an_unreachable_site_exits_2(anvil: Anvil) -> None:
    anvil.start()
    site = f"http://127.0.0.1:{free_port()}"

    done = verify("--rpc", anvil.rpc_url, "--site", site)

    assert done.returncode == 2
    assert done.stderr.startswith(f"error: GET {site}/api/chain/:")
