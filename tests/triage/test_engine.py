"""The teletriage protocol engine, without a database: every starter protocol loads, carries its version,
author, review date and the clinical-review label; each red flag of each protocol reaches an emergency
disposition; the most urgent disposition any answer reaches wins; malformed files are refused with a message
naming the file and the problem (docs/triage.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from telecare.triage import engine

STARTERS = engine.library()
FLAGS = [(p.id, rf.id) for p in STARTERS.values() for rf in p.red_flags]
EXPECTED = {
    "chest-pain",
    "shortness-of-breath",
    "adult-fever",
    "high-blood-pressure",
    "low-blood-sugar",
    "rash",
    "medication-question",
    "self-harm",
}


def test_the_eight_starter_protocols_load_labelled_for_clinical_review() -> None:
    _, errors = engine.load_directory(engine.STARTER_DIR)
    assert errors == []
    assert set(STARTERS) == EXPECTED
    for p in STARTERS.values():
        assert p.needs_clinical_review
        assert p.label == "Needs clinical review before use"
        assert p.version
        assert p.author
        assert p.review_date.year >= 2026
        assert p.red_flags, p.id
        assert all(rf.source.startswith("https://") for rf in p.red_flags)


@pytest.mark.parametrize(("protocol_id", "flag_id"), FLAGS)
def test_each_red_flag_reaches_an_emergency_disposition(protocol_id: str, flag_id: str) -> None:
    protocol = STARTERS[protocol_id]
    flag = next(rf for rf in protocol.red_flags if rf.id == flag_id)
    assert flag.disposition in engine.EMERGENCY
    # The red-flag answer alone, everything else reassuring (the first answer of each other question).
    answers = {q.id: q.answers[-1].id for q in protocol.questions}
    answers[flag.question] = flag.answer
    result = engine.evaluate(protocol, answers)
    assert result.emergency
    assert flag in result.red_flags
    assert engine.RANK[result.disposition] <= engine.RANK[flag.disposition]


def test_no_red_flag_no_emergency_for_reassuring_answers() -> None:
    protocol = STARTERS["adult-fever"]
    flagged = {(rf.question, rf.answer) for rf in protocol.red_flags}
    answers = {}
    for q in protocol.questions:
        calm = [a for a in q.answers if (q.id, a.id) not in flagged and a.disposition not in engine.EMERGENCY]
        answers[q.id] = calm[0].id
    assert not engine.evaluate(protocol, answers).emergency


def test_self_harm_goes_to_the_crisis_pathway() -> None:
    protocol = STARTERS["self-harm"]
    assert protocol.self_harm
    assert {rf.disposition for rf in protocol.red_flags} <= {"call_911", "crisis_line"}


@st.composite
def answer_sets(draw: Any) -> tuple[engine.Protocol, dict[str, str]]:
    protocol = draw(st.sampled_from(sorted(STARTERS.values(), key=lambda p: p.id)))
    answers = {}
    for q in protocol.questions:
        if draw(st.booleans()):
            answers[q.id] = draw(st.sampled_from([a.id for a in q.answers]))
    return protocol, answers


@given(answer_sets())
def test_the_most_urgent_disposition_reached_wins(case: tuple[engine.Protocol, dict[str, str]]) -> None:
    protocol, answers = case
    reached = [protocol.default_disposition]
    for q in protocol.questions:
        a = q.answer(answers.get(q.id, ""))
        if a is not None and a.disposition:
            reached.append(a.disposition)
    reached += [rf.disposition for rf in protocol.red_flags if answers.get(rf.question) == rf.answer]
    result = engine.evaluate(protocol, answers)
    assert engine.RANK[result.disposition] == min(engine.RANK[d] for d in reached)
    assert set(result.reached) == set(reached)


def test_call_911_beats_the_crisis_line_on_a_tie() -> None:
    assert engine.most_urgent(["self_care", "crisis_line", "call_911"]) == "call_911"
    assert engine.most_urgent(["telehealth", "ed_now", "within_3_days"]) == "ed_now"


def _valid() -> dict[str, Any]:
    return yaml.safe_load((engine.STARTER_DIR / "rash.yaml").read_text())


def _broken(change: Any) -> dict[str, Any]:
    raw = _valid()
    change(raw)
    return raw


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda r: r.pop("version"), "version"),
        (lambda r: r.pop("author"), "author"),
        (lambda r: r.update(review_date="someday"), "review_date"),
        (lambda r: r.update(default_disposition="soon"), "soon"),
        (lambda r: r["questions"][0].update(answers=[]), "answers"),
        (lambda r: r["questions"].append(dict(r["questions"][0])), "duplicate"),
        (lambda r: r["red_flags"][0].update(question="no-such-question"), "no-such-question"),
        (lambda r: r["red_flags"][0].update(disposition="whenever"), "whenever"),
    ],
)
def test_malformed_protocols_are_refused_naming_file_and_problem(
    tmp_path: Path, mutate: Any, problem: str
) -> None:
    path = tmp_path / "clinic-rash.yaml"
    path.write_text(yaml.safe_dump(_broken(mutate)))
    with pytest.raises(engine.ProtocolError) as info:
        engine.load_file(path)
    assert str(info.value).startswith(f"{path}: ")
    assert problem in str(info.value)


def test_a_directory_rejects_bad_files_and_duplicate_ids_but_keeps_the_good(tmp_path: Path) -> None:
    good = _valid()
    (tmp_path / "a.json").write_text(json.dumps(good, default=str))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(good))
    (tmp_path / "c.yaml").write_text("questions: [unclosed")
    found, errors = engine.load_directory(tmp_path)
    assert list(found) == [good["id"]]
    messages = [str(e) for e in errors]
    assert any(m.startswith(str(tmp_path / "b.yaml")) and "duplicate protocol id" in m for m in messages)
    assert any(m.startswith(str(tmp_path / "c.yaml")) and "not valid YAML" in m for m in messages)


def test_an_organizations_licensed_protocol_replaces_the_starter(tmp_path: Path) -> None:
    licensed = _valid()
    licensed.update(version="2026.1", author="Clinic's licensed content", needs_clinical_review=False)
    (tmp_path / "rash.yaml").write_text(yaml.safe_dump(licensed))
    merged = engine.library(tmp_path)
    assert merged["rash"].version == "2026.1"
    assert merged["rash"].label == "Licensed protocol"
    assert set(merged) == EXPECTED
