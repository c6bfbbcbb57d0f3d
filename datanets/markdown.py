"""Datanet descriptions: Markdown in, safe HTML out (no raw HTML, no scripts, no javascript: links)."""

from __future__ import annotations

import nh3
from markdown_it import MarkdownIt

_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def render_markdown(source: str) -> str:
    """HTML for ``source``: raw HTML in it is shown as text, and the output is sanitised again by nh3 (an allow-list
    of tags and attributes, ``rel="noopener noreferrer"`` on links, only http/https/mailto URLs)."""
    html = _MARKDOWN.render(source or "")
    return nh3.clean(html, url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer nofollow")
