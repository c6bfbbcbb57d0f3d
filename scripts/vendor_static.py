"""Copy the browser assets we serve from their pinned npm packages into static/vendor/ (no CDN at run time)."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# static/vendor/<name> <- node_modules/<path>; package.json pins each package's version.
VENDORED = {
    "htmx.min.js": "htmx.org/dist/htmx.min.js",
    "pico.min.css": "@picocss/pico/css/pico.min.css",
    "chart.umd.min.js": "chart.js/dist/chart.umd.min.js",
}


def main() -> None:
    target = ROOT / "static" / "vendor"
    target.mkdir(parents=True, exist_ok=True)
    for name, source in VENDORED.items():
        shutil.copyfile(ROOT / "node_modules" / source, target / name)
        print(f"static/vendor/{name} <- node_modules/{source}")


if __name__ == "__main__":
    main()
