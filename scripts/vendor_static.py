"""Copy the browser assets we serve from their pinned npm packages into static/vendor/ (no CDN at run time)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# static/vendor/<name> <- node_modules/<path>; package.json pins each package's version.
VENDORED = {
    "htmx.min.js": "htmx.org/dist/htmx.min.js",
    "pico.min.css": "@picocss/pico/css/pico.min.css",
    "chart.umd.min.js": "chart.js/dist/chart.umd.min.js",
}
# We ship no source maps: whitenoise's manifest storage (collectstatic with DEBUG off) fails on a reference to a
# missing one, so the reference goes too.
SOURCE_MAP_COMMENT = re.compile(rb"\n?(?://# sourceMappingURL=[^\n]*|/\*# sourceMappingURL=[^\n]*?\*/)\s*\Z")


def vendored_bytes(source: str) -> bytes:
    """The bytes static/vendor holds for a node_modules path: the package's file without its source-map comment."""
    return SOURCE_MAP_COMMENT.sub(b"\n", (ROOT / "node_modules" / source).read_bytes())


def main() -> None:
    target = ROOT / "static" / "vendor"
    target.mkdir(parents=True, exist_ok=True)
    for name, source in VENDORED.items():
        (target / name).write_bytes(vendored_bytes(source))
        print(f"static/vendor/{name} <- node_modules/{source}")


if __name__ == "__main__":
    main()
