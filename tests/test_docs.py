"""The rules the code relies on live in the repository's own docs/, and citations of them stay true.

(a) Nothing cites the domain notes kept outside the repository (the shared reference, security and
performance notes, or a path into the shared folder): they are not versioned with the code.
(b) Every `docs/<file>.md` cited in code, tests, migrations, benchmarks and docs exists, and every cited
section (`docs/<file>.md#<anchor>`, also `... and #<anchor>` after it) is a heading of that file.
Relative links between the docs files are checked the same way.
(c) Every docs file but the index and architecture.md has a Sources section with at least one link."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SCANNED = ("src", "tests", "migrations", "bench", "docs")
SCANNED_FILES = ("README.md", "Makefile", "pyproject.toml")
TEXT_SUFFIXES = {".py", ".md", ".txt", ".toml", ".ini", ".cfg", ".mako", ".html", ".js", ".css", ".json", ""}
WITHOUT_SOURCES = {"README.md", "architecture.md"}

# Spelt in pieces so that this file does not match itself.
OUTSIDE_NOTES = re.compile(
    r"REFERENCE\.md|SECURITY_RELIABILIT[Y]|PERFORMANCE_CEILING[S]|BROWSER_AND_MEDI[A]"
    r"|\.\./shar[e]d\b|/work/shar[e]d\b"
)
# docs/<file>.md, optionally #anchor, optionally followed by "and #anchor" / ", #anchor" (same file).
CITATION = re.compile(r"(?<![\w/.-])docs/([A-Za-z0-9_-]+\.md)((?:#[\w-]+)(?:(?:,| and) #[\w-]+)*)?")
ANCHOR = re.compile(r"#([\w-]+)")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def slug(heading: str) -> str:
    """The anchor GitHub renders for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(markdown: str) -> list[str]:
    out: list[str] = []
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            out.append(match.group(2))
    return out


def anchors(markdown: str) -> set[str]:
    """All anchors of a document, with GitHub's -1, -2 ... suffixes for repeated headings."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for heading in headings(markdown):
        base = slug(heading)
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def _anchors_of(name: str, docs: Path) -> set[str] | None:
    path = docs / name
    return anchors(path.read_text(encoding="utf-8")) if path.is_file() else None


def citation_problems(text: str, where: str, docs: Path = DOCS) -> list[str]:
    """What is wrong with the `docs/...` citations in `text`: a missing file or a missing section."""
    problems = []
    for match in CITATION.finditer(text):
        name, tail = match.group(1), match.group(2) or ""
        known = _anchors_of(name, docs)
        if known is None:
            problems.append(f"{where}: cites docs/{name}, which does not exist")
            continue
        for anchor in ANCHOR.findall(tail):
            if anchor not in known:
                problems.append(f"{where}: cites docs/{name}#{anchor}, which is not a heading of docs/{name}")
    return problems


def link_problems(text: str, where: str, docs: Path = DOCS) -> list[str]:
    """Relative links inside a docs file: `other.md`, `other.md#anchor` or `#anchor`."""
    problems = []
    own = anchors(text)
    for target in MD_LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("<"):
            continue  # http(s), mailto: external
        name, _, anchor = target.partition("#")
        if not name:
            if anchor not in own:
                problems.append(f"{where}: links to #{anchor}, which is not a heading here")
            continue
        if not name.endswith(".md") or "/" in name:
            continue
        known = _anchors_of(name, docs)
        if known is None:
            problems.append(f"{where}: links to {name}, which does not exist")
        elif anchor and anchor not in known:
            problems.append(f"{where}: links to {name}#{anchor}, which is not a heading of {name}")
    return problems


def scanned_files() -> Iterator[Path]:
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*")):
            if (
                path.is_file()
                and path.suffix in TEXT_SUFFIXES
                and "__pycache__" not in path.parts
                and "vendor" not in path.parts
            ):
                yield path
    for name in SCANNED_FILES:
        if (ROOT / name).is_file():
            yield ROOT / name


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def doc_files() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def test_nothing_cites_the_notes_outside_the_repository() -> None:
    hits = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in scanned_files()
        for n, line in enumerate(_read(path).splitlines(), 1)
        if OUTSIDE_NOTES.search(line)
    ]
    assert hits == [], "cite docs/<file>.md#<section> instead:\n" + "\n".join(hits)


def test_every_cited_docs_file_and_section_exists() -> None:
    problems: list[str] = []
    cited = 0
    for path in scanned_files():
        text = _read(path)
        cited += len(CITATION.findall(text))
        problems += citation_problems(text, str(path.relative_to(ROOT)))
    assert problems == []
    assert cited >= 50  # the code does cite docs/; a broken pattern would find nothing and pass


def test_links_between_docs_files_resolve() -> None:
    problems: list[str] = []
    for path in doc_files():
        problems += link_problems(_read(path), str(path.relative_to(ROOT)))
    assert problems == []


@pytest.mark.parametrize(
    "path", [p for p in doc_files() if p.name not in WITHOUT_SOURCES], ids=lambda p: p.name
)
def test_each_docs_file_has_sources_with_a_link(path: Path) -> None:
    text = _read(path)
    match = re.search(r"^## Sources\s*$(.*?)(?=^#{1,2} |\Z)", text, re.M | re.S)
    assert match is not None, f"{path.name} has no '## Sources' section"
    assert re.search(r"https?://", match.group(1)), f"{path.name}: the Sources section has no link"


def test_the_checks_catch_bad_citations(tmp_path: Path) -> None:
    d = "docs" + "/"  # spelt apart so the scan of this file does not read these examples as citations
    (tmp_path / "rpm.md").write_text(
        "# RPM\n\n## Alert thresholds\n\n## Alert thresholds\n", encoding="utf-8"
    )
    good = f"{d}rpm.md#alert-thresholds, {d}rpm.md#alert-thresholds-1 and {d}rpm.md"
    assert citation_problems(good, "x", tmp_path) == []
    bad = (
        f"see {d}rpm.md#alert-threshold (typo), {d}rmp.md (no such file), {d}rpm.md#rpm and #no-such-section"
    )
    assert citation_problems(bad, "x", tmp_path) == [
        f"x: cites {d}rpm.md#alert-threshold, which is not a heading of {d}rpm.md",
        f"x: cites {d}rmp.md, which does not exist",
        f"x: cites {d}rpm.md#no-such-section, which is not a heading of {d}rpm.md",
    ]
    links = "# Here\n[a](rpm.md#nope) [b](#here) [c](gone.md) [d](#gone) [e](https://example.org/a.md)"
    assert link_problems(links, "x", tmp_path) == [
        "x: links to rpm.md#nope, which is not a heading of rpm.md",
        "x: links to gone.md, which does not exist",
        "x: links to #gone, which is not a heading here",
    ]
    assert OUTSIDE_NOTES.search("see " + "REFERENCE" + ".md 4")
    assert OUTSIDE_NOTES.search("From /work/" + "shared/notes/x.md")


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Goal 19", "goal-19"),
        ("E/M by time", "em-by-time"),
        ("Minimum necessary and break the glass", "minimum-necessary-and-break-the-glass"),
        ("FHIR validation cost", "fhir-validation-cost"),
        ("`identity_hash` (unique)", "identity_hash-unique"),
    ],
)
def test_slug_matches_github(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor
