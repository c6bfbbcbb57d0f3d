"""The committed ABI and bytecode of every contract are exactly what the pinned compiler makes of the committed
sources."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "ledger" / "contracts" / "build"
CONTRACTS = [
    "LineageRegistry",
    "RewardToken",
    "RewardDistributor",
    "OpenLedgerTimelock",
    "OpenLedgerGovernor",
    "ProtocolParameters",
    "ModelRegistry",
]


@pytest.fixture(scope="module")
def fresh_compile() -> dict[str, bytes]:
    """Every contract compiled now, by one compiler process (loading solc once, not once a contract): name to the
    artifact's bytes, as `make contracts` would write them."""
    out = subprocess.run(
        ["node", "ledger/contracts/compile.js", "--stdout"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=300,
    ).stdout
    return {name: text.encode() for name, text in json.loads(out).items()}


@pytest.mark.parametrize("name", CONTRACTS)
def test_the_artifact_matches_a_fresh_compile_of_the_source(name: str, fresh_compile: dict[str, bytes]) -> None:
    fresh = fresh_compile[name]

    assert fresh == (BUILD / f"{name}.json").read_bytes(), "the artifact is stale: run `make contracts`, commit it"


@pytest.mark.parametrize("name", CONTRACTS)
def test_the_artifact_records_the_pinned_compiler_and_every_source_hash(name: str) -> None:
    artifact = json.loads((BUILD / f"{name}.json").read_text())
    package = json.loads((ROOT / "package.json").read_text())

    assert artifact["contractName"] == name
    assert artifact["sourceName"] == f"ledger/contracts/{name}.sol"
    assert artifact["compiler"]["version"].startswith(package["dependencies"]["solc"] + "+")
    assert artifact["settings"]["evmVersion"] == "cancun"
    assert artifact["settings"]["optimizer"]["enabled"] is True
    for source_name, source in artifact["sources"].items():
        path = ROOT / "node_modules" / source_name if source_name.startswith("@") else ROOT / source_name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == source["sha256"], source_name


def test_every_contract_source_has_a_committed_artifact() -> None:
    sources = sorted(p.stem for p in (ROOT / "ledger" / "contracts").glob("*.sol"))

    assert sources == sorted(CONTRACTS)
    assert sorted(p.stem for p in BUILD.glob("*.json")) == sorted(CONTRACTS)
