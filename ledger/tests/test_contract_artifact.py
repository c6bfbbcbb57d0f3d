"""The committed ABI and bytecode are exactly what the pinned compiler makes of the committed source."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT / "ledger" / "contracts" / "build" / "LineageRegistry.json"


def test_the_artifact_matches_a_fresh_compile_of_the_source() -> None:
    fresh = subprocess.run(
        ["node", "ledger/contracts/compile.js", "--stdout"], cwd=ROOT, capture_output=True, check=True, timeout=120
    ).stdout

    assert fresh == ARTIFACT.read_bytes(), "the artifact is stale: run `make contracts` and commit the result"


def test_the_artifact_records_the_pinned_compiler_and_every_source_hash() -> None:
    artifact = json.loads(ARTIFACT.read_text())
    package = json.loads((ROOT / "package.json").read_text())

    assert artifact["compiler"]["version"].startswith(package["dependencies"]["solc"] + "+")
    assert artifact["settings"]["evmVersion"] == "cancun"
    assert artifact["settings"]["optimizer"]["enabled"] is True
    for name, source in artifact["sources"].items():
        path = ROOT / "node_modules" / name if name.startswith("@") else ROOT / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == source["sha256"], name
