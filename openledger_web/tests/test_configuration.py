from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READERS = re.compile(r"""(?:os\.getenv|os\.environ\.get|env(?:bool|int|list))\(\s*["']([A-Z][A-Z0-9_]+)["']""")


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", (ROOT / "docs" / "configuration.md").read_text(), re.M))
    sources = [
        p for p in ROOT.glob("*/**/*.py") if not any(part in p.parts for part in (".venv", "node_modules", "tests"))
    ]
    read = {name for path in sources for name in READERS.findall(path.read_text(encoding="utf-8"))}
    assert read, "the pattern found no variables: it no longer matches how settings read the environment"
    assert read - documented == set()
