"""The patient-education library, without a database: every shipped article loads with a plain-language
length, allowed tags and sources; each triage disposition and topic the starter protocols use has an
article; malformed files are refused naming the file and the problem; HTML in content is never rendered
(docs/education.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from telecare.education import library as lib

GOOD = """---
title: A test article
slug: a-test
topics: fever
dispositions: self_care
summary: Short.
reviewed: 2026-12-01
source: CDC, Fever | https://www.cdc.gov/
---
""" + " ".join(["word"] * 200)


def test_shipped_articles_load_with_sources_and_allowed_tags() -> None:
    articles = lib.library()
    assert len(articles) >= 10
    for a in articles.values():
        assert a.sources
        assert all(s.url.startswith("https://") for s in a.sources)
        assert set(a.topics) <= set(lib.TOPICS)
        assert set(a.dispositions) <= set(lib.DISPOSITIONS)
        assert lib.MIN_WORDS <= a.words <= lib.MAX_WORDS


def test_every_topic_and_self_care_has_an_article() -> None:
    articles = lib.library().values()
    for topic in lib.TOPICS:
        assert any(topic in a.topics for a in articles), topic
    assert any("self_care" in a.dispositions for a in articles)
    assert any("crisis_line" in a.dispositions for a in articles)
    crisis = next(a for a in articles if "crisis_line" in a.dispositions)
    assert "988" in crisis.body


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (GOOD.replace("title: A test article\n", ""), "missing title"),
        (GOOD.replace("topics: fever", "topics: gout"), "gout"),
        (GOOD.replace("dispositions: self_care", "dispositions: soon"), "soon"),
        (GOOD.replace("reviewed: 2026-12-01", "reviewed: yesterday"), "reviewed must be a date"),
        (GOOD.replace("https://www.cdc.gov/", "http://www.cdc.gov/"), "source must be"),
        (GOOD.replace(" ".join(["word"] * 200), "too short"), "words"),
    ],
)
def test_malformed_articles_are_refused_naming_file_and_problem(text: str, problem: str) -> None:
    with pytest.raises(lib.ArticleError) as info:
        lib.parse_article("broken.md", text)
    assert str(info.value).startswith("broken.md")
    assert problem in str(info.value)


def test_html_in_content_is_shown_as_text(tmp_path: Path) -> None:
    article = lib.parse_article("x.md", GOOD + "\n\n<script>alert(1)</script> [x](javascript:alert(1))")
    assert "<script>" not in article.html
    assert "&lt;script&gt;" in article.html
    assert 'href="javascript:' not in article.html
