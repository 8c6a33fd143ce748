"""The questionnaire engine and the screening rules, without a database: definitions load and validate as
FHIR R4, malformed files are refused naming the file and the problem, enableWhen follows FHIR for every
operator, answers are checked by type, PHQ-9 and GAD-7 score and band at every edge, and the PHQ-9 item-9
rule holds at every total."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.questionnaire import Questionnaire
from hypothesis import given
from hypothesis import strategies as st

from telecare.questionnaires import engine, rules

CODES = ["LA6568-5", "LA6569-3", "LA6570-1", "LA6571-9"]  # 0, 1, 2, 3


PHQ9_EDGES = [
    (0, "minimal"),
    (4, "minimal"),
    (5, "mild"),
    (9, "mild"),
    (10, "moderate"),
    (14, "moderate"),
    (15, "moderately severe"),
    (19, "moderately severe"),
    (20, "severe"),
    (27, "severe"),
]
GAD7_EDGES = [
    (0, "minimal"),
    (4, "minimal"),
    (5, "mild"),
    (9, "mild"),
    (10, "moderate"),
    (14, "moderate"),
    (15, "severe"),
    (21, "severe"),
]
# Every PHQ-9 total with every item-9 value that some answer set reaches.
ITEM9_CASES = [(total, v) for total in range(28) for v in range(4) if v <= total <= 24 + v]


def answers_for(slug: str, values: list[int]) -> dict[str, Any]:
    return {f"{slug}-{n}": CODES[v] for n, v in enumerate(values, 1)}


def spread(total: int, items: int) -> list[int]:
    """Item values 0-3 that sum to `total`."""
    out = []
    for _ in range(items):
        v = min(3, total)
        out.append(v)
        total -= v
    assert total == 0
    return out


def test_shipped_definitions_validate_as_fhir_r4() -> None:
    lib = engine.library()
    assert set(lib) == {"phq-9", "gad-7"}
    for d in lib.values():
        Questionnaire.model_validate(d.resource)
    assert lib["phq-9"].panel_code == "44249-1"
    assert lib["phq-9"].total_code == "44261-6"
    assert lib["gad-7"].total_code == "70274-6"
    assert [i.code for i in lib["phq-9"].scored][8] == "44260-8"
    assert len(lib["phq-9"].scored) == 9
    assert len(lib["gad-7"].scored) == 7


@pytest.mark.parametrize(
    ("total", "band"),
    PHQ9_EDGES,
)
def test_phq9_band_edges(total: int, band: str) -> None:
    d = engine.library()["phq-9"]
    answers = answers_for("phq-9", spread(total, 9))
    assert engine.score(d, answers) == total
    assert rules.band("phq-9", total) == band


@pytest.mark.parametrize(
    ("total", "band"),
    GAD7_EDGES,
)
def test_gad7_band_edges(total: int, band: str) -> None:
    d = engine.library()["gad-7"]
    assert engine.score(d, answers_for("gad-7", spread(total, 7))) == total
    assert rules.band("gad-7", total) == band


def test_no_band_outside_the_range() -> None:
    assert rules.band("phq-9", 28) is None
    assert rules.band("gad-7", 22) is None


@pytest.mark.parametrize(("total", "item9"), ITEM9_CASES)
def test_item9_rule_at_every_total(total: int, item9: int) -> None:
    values = [*spread(total - item9, 8), item9]
    answers = answers_for("phq-9", values)
    assert engine.score(engine.library()["phq-9"], answers) == total
    assert rules.item9_positive("phq-9", answers) is (item9 > 0)


def test_item9_rule_on_an_incomplete_response_and_only_for_phq9() -> None:
    assert rules.item9_positive("phq-9", {"phq-9-9": "LA6569-3"})
    assert not rules.item9_positive("phq-9", {"phq-9-9": "LA6568-5"})
    assert not rules.item9_positive("phq-9", {"phq-9-1": "LA6571-9"})
    assert not rules.item9_positive("gad-7", {"phq-9-9": "LA6571-9"})


@given(st.lists(st.integers(0, 3), min_size=9, max_size=9))
def test_phq9_score_is_the_sum_of_item_values(values: list[int]) -> None:
    assert engine.score(engine.library()["phq-9"], answers_for("phq-9", values)) == sum(values)


@given(st.lists(st.integers(0, 3), min_size=7, max_size=7), st.integers(0, 6))
def test_gad7_score_is_the_sum_and_waits_for_every_item(values: list[int], drop: int) -> None:
    d = engine.library()["gad-7"]
    answers = answers_for("gad-7", values)
    assert engine.score(d, answers) == sum(values)
    del answers[f"gad-7-{drop + 1}"]
    assert engine.score(d, answers) is None
    assert [e.field for e in engine.missing_required(d, answers)] == [f"answers.gad-7-{drop + 1}"]


# ---- a definition with every type and operator ------------------------------------------------------------


def write(tmp_path: Path, resource: dict[str, Any], name: str = "custom.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(resource))
    return path


def custom(items: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Questionnaire", "id": "custom", "status": "active", "item": items, **extra}


BASE_ITEMS: list[dict[str, Any]] = [
    {"linkId": "age", "type": "integer", "text": "Age", "required": True},
    {"linkId": "temp", "type": "decimal", "text": "Temperature"},
    {"linkId": "smoker", "type": "boolean", "text": "Do you smoke?"},
    {"linkId": "onset", "type": "date", "text": "Since when?"},
    {"linkId": "name", "type": "string", "text": "Name"},
    {"linkId": "notes", "type": "text", "text": "Notes"},
    {
        "linkId": "mood",
        "type": "choice",
        "text": "Mood",
        "answerOption": [{"valueCoding": {"code": "good"}}, {"valueCoding": {"code": "bad"}}],
    },
]


@pytest.mark.parametrize(
    ("op", "key", "value", "answers", "expected"),
    [
        ("exists", "answerBoolean", True, {"age": 40}, True),
        ("exists", "answerBoolean", True, {}, False),
        ("exists", "answerBoolean", False, {}, True),
        ("=", "answerInteger", 40, {"age": 40}, True),
        ("=", "answerInteger", 40, {"age": 41}, False),
        ("!=", "answerInteger", 40, {"age": 41}, True),
        ("!=", "answerInteger", 40, {"age": 40}, False),
        (">", "answerInteger", 40, {"age": 41}, True),
        (">", "answerInteger", 40, {"age": 40}, False),
        ("<", "answerInteger", 40, {"age": 39}, True),
        ("<", "answerInteger", 40, {"age": 40}, False),
        (">=", "answerInteger", 40, {"age": 40}, True),
        (">=", "answerInteger", 40, {"age": 39}, False),
        ("<=", "answerInteger", 40, {"age": 40}, True),
        ("<=", "answerInteger", 40, {"age": 41}, False),
        (">", "answerInteger", 40, {}, False),
    ],
)
def test_enable_when_operators(
    tmp_path: Path, op: str, key: str, value: Any, answers: dict[str, Any], expected: bool
) -> None:
    items = [
        *BASE_ITEMS,
        {
            "linkId": "gated",
            "type": "string",
            "text": "Gated",
            "required": True,
            "enableWhen": [{"question": "age", "operator": op, key: value}],
        },
    ]
    d = engine.load_file(write(tmp_path, custom(items)))
    gated = d.item("gated")
    assert gated is not None
    assert engine.enabled(d, gated, answers) is expected
    missing = {e.field for e in engine.missing_required(d, answers)}
    assert ("answers.gated" in missing) is expected


def test_enable_behavior_any_and_all_and_coding_and_date(tmp_path: Path) -> None:
    conds = [
        {"question": "mood", "operator": "=", "answerCoding": {"code": "bad"}},
        {"question": "onset", "operator": "<", "answerDate": "2026-01-01"},
    ]
    items = [
        *BASE_ITEMS,
        {"linkId": "any", "type": "string", "text": "Any", "enableBehavior": "any", "enableWhen": conds},
        {"linkId": "all", "type": "string", "text": "All", "enableBehavior": "all", "enableWhen": conds},
    ]
    d = engine.load_file(write(tmp_path, custom(items)))
    any_item, all_item = d.item("any"), d.item("all")
    assert any_item is not None
    assert all_item is not None
    one = {"mood": "bad", "onset": "2026-05-01"}
    both = {"mood": "bad", "onset": "2025-05-01"}
    assert engine.enabled(d, any_item, one)
    assert not engine.enabled(d, all_item, one)
    assert engine.enabled(d, all_item, both)
    assert not engine.enabled(d, any_item, {"mood": "good"})
    # An answer to a question that switched off is dropped.
    assert engine.prune(d, {"mood": "good", "any": "x"}) == {"mood": "good"}


def test_answers_are_checked_by_type(tmp_path: Path) -> None:
    d = engine.load_file(write(tmp_path, custom(BASE_ITEMS)))
    values, errors = engine.check_answers(
        d,
        {
            "age": "42",
            "temp": "37.5",
            "smoker": "false",
            "onset": "2026-11-30",
            "name": " Ann ",
            "mood": "good",
        },
    )
    assert errors == []
    assert values == {
        "age": 42,
        "temp": 37.5,
        "smoker": False,
        "onset": "2026-11-30",
        "name": "Ann",
        "mood": "good",
    }
    _, errors = engine.check_answers(
        d,
        {"age": "forty", "temp": "nan", "smoker": "maybe", "onset": "30/11/2026", "mood": "meh", "nope": "1"},
    )
    assert {e.field for e in errors} == {
        "answers.age",
        "answers.temp",
        "answers.smoker",
        "answers.onset",
        "answers.mood",
        "answers.nope",
    }


@pytest.mark.parametrize(
    ("resource", "problem"),
    [
        ({"resourceType": "Patient"}, "resourceType must be Questionnaire"),
        (
            custom([{"linkId": "a", "type": "choice", "text": "A"}]),
            "item a: a choice item needs answerOption",
        ),
        (
            custom([{"linkId": "a", "type": "string"}, {"linkId": "a", "type": "string"}]),
            "duplicate linkId a",
        ),
        (custom([{"linkId": "a", "type": "attachment"}]), "item a: type 'attachment' is not supported"),
        (
            custom(
                [
                    {
                        "linkId": "a",
                        "type": "string",
                        "enableWhen": [{"question": "zz", "operator": "=", "answerString": "x"}],
                    }
                ]
            ),
            "item a: enableWhen refers to unknown question zz",
        ),
        (custom([{"linkId": "a", "type": "string"}], date="yesterday"), "not a valid FHIR R4 Questionnaire"),
        (
            custom([{"linkId": "a", "type": "string", "repeats": True}]),
            "item a: repeating items are not supported",
        ),
    ],
)
def test_malformed_definitions_are_refused_naming_file_and_problem(
    tmp_path: Path, resource: dict[str, Any], problem: str
) -> None:
    path = write(tmp_path, resource, "broken-form.json")
    with pytest.raises(engine.DefinitionError) as info:
        engine.load_file(path)
    assert str(info.value).startswith("broken-form.json: ")
    assert problem in str(info.value)


def test_unreadable_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(engine.DefinitionError, match=r"^bad\.json: not readable JSON"):
        engine.load_file(path)
