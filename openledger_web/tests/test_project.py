"""Project-wide guarantees: production settings pass Django's deploy checks, heavy libraries stay in their homes,
vendored assets are the pinned packages' files, and the API schema is served without any CDN."""

from __future__ import annotations

import ast
import importlib
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = (
    "openledger_web",
    "common",
    "ledger",
    "accounts",
    "datanets",
    "modelfactory",
    "inference",
    "attribution",
    "rewards",
)

# Where each heavy library may be imported (DESIGN.md): everything else stays importable by the web process.
HEAVY_HOMES = {
    "web3": {"ledger/chain.py"},
    "torch": {
        "modelfactory/training.py",
        "modelfactory/weights.py",
        "modelfactory/tiny.py",  # tiny random-weight models for the family tests and bench/families.py only
        "modelfactory/distributed.py",  # the data-parallel launcher and its processes; only a training worker
        "inference/engine.py",
        "inference/composition.py",  # request-time composition's tensor math, imported by the engine only
        "inference/testing.py",
        "attribution/",
    },
    "transformers": {
        "modelfactory/training.py",
        "modelfactory/weights.py",
        "modelfactory/tiny.py",  # tiny random-weight models for the family tests and bench/families.py only
        "inference/engine.py",
        "inference/testing.py",
        "attribution/",
    },
    "peft": {
        "modelfactory/training.py",
        "inference/engine.py",
        "inference/composition.py",
        "inference/testing.py",
        "attribution/",
    },
}


def test_production_settings_pass_the_deploy_checks() -> None:
    env = dict(
        os.environ,
        DEBUG="False",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="ledger.example.org",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_refuse_to_start_without_a_secret_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    env.update(DEBUG="False", ALLOWED_HOSTS="ledger.example.org")
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_heavy_libraries_are_imported_only_in_their_homes() -> None:
    offenders = []
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            relative = path.relative_to(ROOT).as_posix()
            if "/tests/" in relative or "/migrations/" in relative:
                continue
            for library in _imports(path) & HEAVY_HOMES.keys():
                if not any(relative == home or relative.startswith(home) for home in HEAVY_HOMES[library]):
                    offenders.append(f"{relative} imports {library}")
    assert offenders == [], "\n".join(offenders)


def test_ledger_imports_no_other_app() -> None:
    others = set(APPS) - {"ledger", "openledger_web", "common"}  # common is the layer below ledger
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (ROOT / "ledger").rglob("*.py")
        if "/tests/" not in path.as_posix()
        for name in _imports(path) & others
    ]
    assert offenders == [], "\n".join(offenders)


def test_vendored_assets_are_the_pinned_packages_files() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from vendor_static import VENDORED, vendored_bytes
    finally:
        sys.path.pop(0)
    for name, source in VENDORED.items():
        vendored = (ROOT / "static" / "vendor" / name).read_bytes()
        assert vendored == vendored_bytes(source), f"run `make vendor` ({name})"
        assert b"sourceMappingURL" not in vendored, f"{name} points at a source map we do not ship"


@pytest.mark.django_db
def test_api_schema_and_docs_are_served_without_a_cdn(client) -> None:
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/health/" in schema.content
    for url in ("/api/docs/", "/api/redoc/"):
        page = client.get(url)
        assert page.status_code == 200
        html = page.content.decode()
        assert "cdn." not in html and "unpkg" not in html, url


def test_ci_script_runs_make_test_and_nothing_else() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[-1] == "exec make test"
    assert all(line.startswith(("set ", "cd ", "exec make test")) for line in lines)


# What only `make setup-dev` installs (requirements-dev.in), by import name, and the test packages and helpers of
# our apps: a benchmark runs after `make setup` alone, so it imports none of them, not even inside a function.
DEV_ONLY_MODULES = {"pytest", "pytest_django", "factory", "hypothesis", "schemathesis", "playwright", "pandas",
                    "datasets", "openai", "ruff", "importlinter"}  # fmt: skip


def _test_only(module: str) -> bool:
    parts = module.split(".")
    return parts[0] in DEV_ONLY_MODULES or "tests" in parts or parts[0] == "conftest"


def _modules_imported(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    return imported + [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]


@pytest.mark.parametrize("bench", sorted((ROOT / "bench").glob("*.py")), ids=lambda p: p.name)
def test_a_benchmark_imports_nothing_that_only_the_tests_install(bench: Path) -> None:
    imported = _modules_imported(bench)
    # an app's `testing` module a bench uses is a test helper too: it may import only what `make setup` installs
    for module in [m for m in imported if m.split(".")[-1] == "testing"]:
        imported += _modules_imported(ROOT / (module.replace(".", "/") + ".py"))
    assert [m for m in imported if _test_only(m)] == [], f"{bench.name} imports test-only modules"


# Our packages (the root packages of .importlinter): importing one of them inside a function dodges a cycle or is a
# habit, except under `if TYPE_CHECKING:`, in an `AppConfig.ready()` (app wiring), or for a module that itself loads
# a heavy library on import (kept out of the web process on purpose, as the library is).
PROJECT_PACKAGES = (*APPS, "governance", "outbox")


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports_by_level(tree: ast.Module, wiring: bool) -> tuple[list[ast.stmt], list[ast.stmt]]:
    """The module's imports that run on import, and those inside a function or class body, leaving out the
    `if TYPE_CHECKING:` ones and, where ``wiring``, those in a ``ready()``."""
    top: list[ast.stmt] = []
    nested: list[ast.stmt] = []

    def visit(node: ast.AST, inside: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                for other in child.orelse:
                    visit_one(other, inside)
                continue
            visit_one(child, inside)

    def visit_one(child: ast.AST, inside: bool) -> None:
        if isinstance(child, ast.Import | ast.ImportFrom):
            (nested if inside else top).append(child)
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            if not (wiring and isinstance(child, ast.FunctionDef) and child.name == "ready"):
                visit(child, True)
        else:
            visit(child, inside)

    visit(tree, False)
    return top, nested


def _project_sources() -> dict[str, Path]:
    sources = {}
    for package in PROJECT_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT).as_posix()
            if "/tests/" in relative or "/migrations/" in relative:
                continue
            parts = relative.removesuffix(".py").split("/")
            sources[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return sources


def _imported_names(node: ast.stmt, module: str, path: Path) -> list[str]:
    """The dotted names an import statement loads, relative imports resolved against ``module``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert isinstance(node, ast.ImportFrom)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = ".".join(package[: len(package) - node.level + 1] if node.level else [])
    stem = ".".join(part for part in (base, node.module or "") if part)
    return [stem] + [f"{stem}.{alias.name}" for alias in node.names]


def test_no_function_level_import_of_a_project_module() -> None:
    sources = _project_sources()
    levels = {
        module: _imports_by_level(ast.parse(path.read_text(encoding="utf-8")), path.name == "apps.py")
        for module, path in sources.items()
    }
    # a project module is heavy when, on import, it loads a heavy library or another heavy project module
    heavy: set[str] = set()
    changed = True
    while changed:
        changed = False
        for module, (top, _) in levels.items():
            names = {name for node in top for name in _imported_names(node, module, sources[module])}
            if module not in heavy and any(name.split(".")[0] in HEAVY_HOMES or name in heavy for name in names):
                heavy.add(module)
                changed = True
    offenders = []
    for module, (_, nested) in levels.items():
        for node in nested:
            names = [n for n in _imported_names(node, module, sources[module]) if n.split(".")[0] in PROJECT_PACKAGES]
            if names and not any(name in heavy for name in names):
                offenders.append(f"{sources[module].relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == [], "\n".join(offenders)


def test_every_task_queued_by_name_is_a_registered_task() -> None:
    # services queue their own app's tasks by registered name (their tasks module imports them): a renamed task
    # must not leave a name behind that no worker knows
    pattern = re.compile(rf"^({'|'.join(PROJECT_PACKAGES)})\.tasks\.(\w+)$")
    named = {
        (node.value, path.relative_to(ROOT).as_posix())
        for path in _project_sources().values()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and pattern.match(node.value)
    }
    assert len(named) >= 5
    unknown = []
    for name, where in sorted(named):
        module, function = name.rsplit(".", 1)
        task = getattr(importlib.import_module(module), function, None)
        if getattr(task, "name", None) != name:
            unknown.append(f"{where}: {name}")
    assert unknown == []
