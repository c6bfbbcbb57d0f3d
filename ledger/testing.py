"""pytest plugin (listed in the root conftest): a real anvil for the session, and a chain with LineageRegistry on it.

``anvil`` can be stopped and started again, with its saved state (the same chain, as after a restart) or without it
(a reset chain), so that tests can take the chain away from the code under test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from . import deployments
from .devchain import ANVIL_CHAIN_ID, ROOT, Anvil, anvil_binary, free_port, stop_process

__all__ = ["ANVIL_CHAIN_ID", "ROOT", "Anvil", "anvil_binary", "free_port", "stop_process"]


@pytest.fixture(scope="session")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    """A real anvil for the whole session; a test that stops it need not restart it (``deployed_chain`` does).

    It saves its state only when stopped (SIGTERM), which is all a restart with its state needs: the session's chain
    grows with every test (governance/ alone leaves 10.8 MB of blocks and transactions), and writing it out every
    second took a growing share of this 2-core machine's CPU (0.8 s every 10 s at 60 MB)."""
    folder = tmp_path_factory.mktemp("anvil")
    node = Anvil(port=free_port(), state_file=folder / "state.json", log_file=folder / "anvil.log", state_interval=None)
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def chain_settings(anvil: Anvil, settings: Any) -> Anvil:
    """Settings pointed at the session's anvil (running), without deploying anything."""
    anvil.start()
    settings.EVM_RPC_URL = anvil.rpc_url
    settings.EVM_CHAIN_ID = ANVIL_CHAIN_ID
    settings.EVM_SIGNER_KEY = ""
    settings.EVM_KEYSTORE_FILE = ""
    return anvil


@pytest.fixture
def deployed_chain(chain_settings: Anvil, db: None) -> Any:
    """The active ChainDeployment of LineageRegistry on the session's anvil (deployed now if the database has none)."""
    return deployments.ensure_deployed()
