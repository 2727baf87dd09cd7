"""The README and the pages under docs/ link to files and headings that exist, and the
README links every page of docs/: a page moved, renamed or left out of the README's table
of contents fails here rather than at a reader."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# Every Markdown file of the project's documentation whose links are checked.
CHECKED = [
    README,
    ROOT / "deploy" / "README.md",
    *sorted(DOCS.glob("*.md")),
    *sorted((DOCS / "decisions").glob("*.md")),
]

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6}) +(.+?) *#*$")


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks (a `[x](y)` inside them is no link)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file: lower case, punctuation
    other than '-' and '_' dropped, spaces as '-', a repeated heading suffixed -1, -2..."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in _prose(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(2).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def broken_links(path: Path) -> list[str]:
    """Each relative link of `path` whose file, or heading in a Markdown file, is missing."""
    broken = []
    for line in _prose(path.read_text(encoding="utf-8")):
        for target in _LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            if not resolved.exists():
                broken.append(f"{target}: no such file")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{target}: no such heading in {resolved.name}")
    return broken


def _linked_files(path: Path) -> set[Path]:
    linked = set()
    for line in _prose(path.read_text(encoding="utf-8")):
        for target in _LINK.findall(line):
            file_part = target.partition("#")[0]
            if file_part and not re.match(r"[a-z][a-z0-9+.-]*:", file_part):
                linked.add((path.parent / file_part).resolve())
    return linked


@pytest.mark.parametrize("path", CHECKED, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_points_to_something_that_exists(path: Path) -> None:
    assert broken_links(path) == []


def test_the_readme_links_every_docs_page() -> None:
    pages = set(DOCS.glob("*.md"))
    assert pages, "docs/ has no pages"
    missing = sorted(str(page.relative_to(ROOT)) for page in pages - _linked_files(README))
    assert missing == [], f"pages of docs/ the README does not link: {missing}"


def test_the_checker_finds_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## A heading\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Its `own` heading\n\n"
        "[ok](other.md#a-heading) [ok](#its-own-heading) [ok](https://example.com/x)\n"
        "[gone](missing.md) [gone](other.md#no-heading) [gone](#nowhere)\n"
        "```\n[not a link](inside-a-fence.md)\n```\n",
        encoding="utf-8",
    )
    broken = broken_links(page)
    assert [entry.split(":")[0] for entry in broken] == [
        "missing.md",
        "other.md#no-heading",
        "#nowhere",
    ]
