"""Layers (issue 14): an app never imports an app above it, not even inside a function; the apps above subscribe to
the lower apps' hooks instead (``modelfactory.hooks``, ``inference.hooks``, ``attribution.hooks``)."""

from __future__ import annotations

from openledger_web.tests.test_project import ROOT, _imports

ABOVE = {
    "modelfactory": {"inference", "attribution", "rewards"},
    "inference": {"attribution", "rewards"},
    "attribution": {"rewards"},
}


def test_modelfactory_inference_and_attribution_never_import_the_apps_above_them() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for app, above in ABOVE.items()
        for path in (ROOT / app).rglob("*.py")
        if "/tests/" not in path.as_posix()
        for name in _imports(path) & above
    ]
    assert offenders == []
