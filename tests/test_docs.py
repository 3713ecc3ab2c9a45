"""The repository is self-contained: its README and docs link only to files inside it, and
every such link resolves (a user who clones it has nothing else)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")
BARE_URL = re.compile(r"\b(?:https?|ftp)://(?!localhost|127\.0\.0\.1|HOST)[^\s)`'\"]+")


def test_docs_link_only_to_files_inside_the_repository():
    problems = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for url in BARE_URL.findall(text):
            problems.append(f"{doc.relative_to(ROOT)}: link outside the repository: {url}")
        for target in MARKDOWN_LINK.findall(text):
            path = target.split("#", 1)[0]
            if not path:
                continue  # an anchor in the same document
            resolved = (doc.parent / path).resolve()
            if ROOT not in resolved.parents and resolved != ROOT:
                problems.append(f"{doc.relative_to(ROOT)}: link outside the repository: {target}")
            elif not resolved.exists():
                problems.append(f"{doc.relative_to(ROOT)}: broken link: {target}")
    assert DOCS and not problems, "\n".join(problems)
