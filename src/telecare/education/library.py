"""The article library: plain-language Markdown files in education/articles/, validated when loaded
(docs/education.md#articles).

Each file starts with a front matter block of `key: value` lines between `---` lines:

    ---
    title: Checking your blood pressure at home
    slug: high-blood-pressure-at-home
    topics: hypertension
    dispositions: self_care, within_3_days
    summary: How to measure it and when to call.
    reviewed: 2026-12-01
    source: CDC, Measure your blood pressure | https://www.cdc.gov/high-blood-pressure/measure/
    ---
    The body, in Markdown.

`source` may repeat. A malformed file raises `ArticleError` naming the file and the problem, so a bad
article stops the application at start-up (and the tests) rather than reaching a patient."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path

from markdown_it import MarkdownIt
from markupsafe import Markup

ARTICLES_DIR = Path(__file__).parent / "articles"

# Triage dispositions an article may be tagged with (the triage domain uses the same codes).
DISPOSITIONS = (
    "call_911",
    "ed_now",
    "in_person_today",
    "within_3_days",
    "telehealth",
    "self_care",
    "crisis_line",
)
# Topics (conditions) articles are tagged with; triage protocols name theirs with these slugs.
TOPICS = (
    "hypertension",
    "hypoglycemia",
    "fever",
    "dyspnea",
    "chest-pain",
    "rash",
    "medication",
    "depression",
    "anxiety",
    "video-visit",
    "uri",
)
TOPIC_LABELS = {
    "hypertension": "High blood pressure",
    "hypoglycemia": "Low blood sugar",
    "fever": "Fever",
    "dyspnea": "Shortness of breath",
    "chest-pain": "Chest pain",
    "rash": "Rash and skin",
    "medication": "Medicines",
    "depression": "Feeling down",
    "anxiety": "Anxiety",
    "video-visit": "Video visits",
    "uri": "Colds and coughs",
}
REQUIRED = ("title", "slug", "topics", "dispositions", "summary", "reviewed", "source")
KNOWN = frozenset(REQUIRED)
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")
# Plain language: short articles (docs/education.md#writing).
MIN_WORDS, MAX_WORDS = 150, 350

# CommonMark with raw HTML disabled: any HTML in a content file is shown as text, never rendered; link
# targets are checked by markdown-it's validateLink (no javascript:, vbscript:, file: or data: URLs).
_markdown = MarkdownIt("commonmark", {"html": False})


class ArticleError(ValueError):
    """A content file is malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class Source:
    title: str
    url: str


@dataclass(frozen=True)
class Article:
    slug: str
    title: str
    summary: str
    topics: tuple[str, ...]
    dispositions: tuple[str, ...]
    reviewed: date
    sources: tuple[Source, ...]
    body: str  # Markdown
    path: str

    @property
    def html(self) -> Markup:
        """The body as HTML; raw HTML in the file is escaped (see `_markdown`)."""
        return Markup(_markdown.render(self.body))  # noqa: S704 - markdown-it escapes; html disabled

    @property
    def words(self) -> int:
        return len(re.findall(r"[A-Za-z0-9][A-Za-z0-9'’-]*", self.body))


def _tags(name: str, value: str, allowed: tuple[str, ...], field: str) -> tuple[str, ...]:
    tags = tuple(t.strip() for t in value.split(",") if t.strip())
    if not tags:
        raise ArticleError(f"{name}: {field} is empty")
    unknown = [t for t in tags if t not in allowed]
    if unknown:
        raise ArticleError(
            f"{name}: {field} has unknown tag(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}"
        )
    return tags


def parse_article(name: str, text: str) -> Article:
    """Parse and validate one content file (`name` is used in error messages)."""
    lines = text.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].strip() != "---":
        raise ArticleError(f"{name}: must start with a '---' front matter line")
    try:
        end = next(i for i, line in enumerate(lines[1:], start=1) if line.strip() == "---")
    except StopIteration:
        raise ArticleError(f"{name}: front matter is not closed with '---'") from None
    meta: dict[str, str] = {}
    sources: list[Source] = []
    for number, line in enumerate(lines[1:end], start=2):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not sep or key not in KNOWN:
            raise ArticleError(
                f"{name}: line {number}: expected one of {', '.join(REQUIRED)} followed by ':'"
            )
        if key == "source":
            title, bar, url = value.rpartition("|")
            title, url = title.strip(), url.strip()
            if not bar or not title or not url.startswith("https://"):
                raise ArticleError(f"{name}: line {number}: source must be 'Title | https://...'")
            sources.append(Source(title, url))
            continue
        if key in meta:
            raise ArticleError(f"{name}: line {number}: {key} is given twice")
        meta[key] = value
    missing = [k for k in REQUIRED if (k == "source" and not sources) or (k != "source" and not meta.get(k))]
    if missing:
        raise ArticleError(f"{name}: missing {', '.join(missing)}")
    if not SLUG.match(meta["slug"]):
        raise ArticleError(f"{name}: slug must be lower-case letters, digits and hyphens")
    try:
        reviewed = date.fromisoformat(meta["reviewed"])
    except ValueError:
        raise ArticleError(f"{name}: reviewed must be a date (YYYY-MM-DD)") from None
    body = "\n".join(lines[end + 1 :]).strip()
    if not body:
        raise ArticleError(f"{name}: body is empty")
    article = Article(
        slug=meta["slug"],
        title=meta["title"],
        summary=meta["summary"],
        topics=_tags(name, meta["topics"], TOPICS, "topics"),
        dispositions=_tags(name, meta["dispositions"], DISPOSITIONS, "dispositions"),
        reviewed=reviewed,
        sources=tuple(sources),
        body=body,
        path=name,
    )
    if not MIN_WORDS <= article.words <= MAX_WORDS:
        raise ArticleError(f"{name}: body has {article.words} words; write {MIN_WORDS} to {MAX_WORDS}")
    return article


def load_articles(directory: Path = ARTICLES_DIR) -> dict[str, Article]:
    """Every `*.md` file of `directory`, validated, by slug; raises ArticleError on the first bad file."""
    articles: dict[str, Article] = {}
    for path in sorted(directory.glob("*.md")):
        article = parse_article(path.name, path.read_text(encoding="utf-8"))
        if article.slug in articles:
            raise ArticleError(
                f"{path.name}: slug {article.slug} is also used by {articles[article.slug].path}"
            )
        articles[article.slug] = article
    if not articles:
        raise ArticleError(f"{directory}: no articles")
    return articles


@cache
def library() -> dict[str, Article]:
    """The shipped library, loaded once."""
    return load_articles()
