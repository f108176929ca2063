"""README.md and docs/*.md stay navigable: every relative link resolves to an existing file and, where it names
one, to an existing heading anchor; every docs page is reachable from README.md; the README stays short; each
topic guide opens with an example before its first section.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

# Guides that are linked before they land: a link to one of them is not checked while the file does not exist
# (once it does, it is checked like any other). Remove a name when its page lands.
EXPECTED_PAGES: tuple[str, ...] = ()
# The topic guides: each starts with a short runnable example (a fenced block before its first "## " section).
GUIDES = ("data.md", "configs.md", "evaluation.md", "compression.md", "scaling.md", "reliability.md")
README_MAX_LINES = 220  # "at most about 200 lines": what a newcomer reads first; the rest lives in docs/

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code spans removed."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, INLINE_CODE.sub("", line)))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (backticks included), spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps its text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, duplicates numbered as GitHub numbers them (-1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fenced or not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    out.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", path.read_text(encoding="utf-8")))
    return out


def relative_links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link in a Markdown file that is not a URL or a mail address."""
    links = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
                continue
            links.append((number, target))
    return links


def broken_links(path: Path, repo: Path = REPO, expected: tuple[str, ...] = EXPECTED_PAGES) -> list[str]:
    """One message per relative link of ``path`` whose file or anchor does not exist."""
    problems = []
    for number, target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path.resolve()
        where = f"{path.relative_to(repo)}:{number}: {target}"
        try:
            name = resolved.relative_to(repo.resolve()).as_posix()
        except ValueError:
            problems.append(f"{where}: points outside the repository")
            continue
        if not resolved.exists():
            if name not in expected:
                problems.append(f"{where}: no file {name}")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{where}: no heading with anchor #{anchor} in {name}")
    return problems


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(path: Path) -> None:
    assert broken_links(path) == []


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = set()
    readme = REPO / "README.md"
    for _, target in relative_links(readme):
        file_part = target.partition("#")[0]
        if file_part:
            linked.add((readme.parent / file_part).resolve())
    missing = [p.name for p in sorted((REPO / "docs").glob("*.md")) if p.resolve() not in linked]
    assert missing == [], f"docs pages not reachable from README.md: {missing}"
    for name in EXPECTED_PAGES:
        assert (REPO / name).resolve() in linked, f"README.md should already link the coming page {name}"


def test_readme_is_short() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move details into a docs/ guide"


@pytest.mark.parametrize("name", GUIDES)
def test_guide_opens_with_an_example(name: str) -> None:
    text = (REPO / "docs" / name).read_text(encoding="utf-8")
    first_section = text.find("\n## ")
    first_block = text.find("\n```bash")
    assert first_block != -1 and (first_section == -1 or first_block < first_section), (
        f"docs/{name} should start with a short runnable example before its first section"
    )


def test_the_checker_reports_broken_files_and_anchors(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page: `with` code\n\n## Second, part\n", encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(
        "[ok](docs/page.md#a-page-with-code) [ok](docs/page.md#second-part) [ok](#top) [web](https://x.org/a)\n"
        "[bad](docs/nope.md) [bad](docs/page.md#missing) [later](docs/coming.md)\n"
        "```\n[in code](docs/ignored.md)\n```\n# Top\n",
        encoding="utf-8",
    )
    problems = broken_links(readme, repo=tmp_path, expected=("docs/coming.md",))
    assert problems == [
        "README.md:2: docs/nope.md: no file docs/nope.md",
        "README.md:2: docs/page.md#missing: no heading with anchor #missing in docs/page.md",
    ]
