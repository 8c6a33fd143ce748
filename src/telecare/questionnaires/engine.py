"""The questionnaire engine: FHIR R4 Questionnaire definitions loaded and checked, enableWhen, answer
checking by item type, completeness and scoring from the options' ordinal values
(docs/questionnaires.md#engine). Pure: no database, no clock.

Answers are kept as `{linkId: value}` with one value per item: a choice is its answer code, an integer an
int, a decimal a float, string and text a str, a date an ISO date string, a boolean a bool."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from fhir.resources.R4B.questionnaire import Questionnaire

from telecare.core.errors import FieldError

ORDINAL = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
TOTAL_CODE = "https://telecare.example.org/fhir/StructureDefinition/total-score-code"
DEFINITIONS = Path(__file__).parent / "definitions"
ANSWER_TYPES = {"choice", "integer", "decimal", "string", "text", "date", "boolean"}
TYPES = ANSWER_TYPES | {"group", "display"}
OPERATORS = {"exists", "=", "!=", ">", "<", ">=", "<="}
MAX_STRING = 2000


class DefinitionError(ValueError):
    """A Questionnaire file the engine refuses, naming the file and the problem."""


@dataclass(frozen=True)
class Option:
    code: str
    system: str
    display: str
    ordinal: float | None


@dataclass(frozen=True)
class Condition:
    question: str
    operator: str
    answer: Any  # code for choice, number, str, bool, ISO date


@dataclass(frozen=True)
class Item:
    link_id: str
    text: str
    type: str
    required: bool
    code: str | None
    options: tuple[Option, ...] = ()
    enable_when: tuple[Condition, ...] = ()
    enable_any: bool = False
    children: tuple[Item, ...] = ()

    def option(self, code: str) -> Option | None:
        return next((o for o in self.options if o.code == code), None)


@dataclass(frozen=True)
class Definition:
    slug: str
    title: str
    version: str
    panel_code: str | None
    total_code: str | None
    items: tuple[Item, ...]
    resource: dict[str, Any] = field(repr=False, compare=False, hash=False, default_factory=dict)

    def walk(self) -> list[Item]:
        out: list[Item] = []

        def visit(items: tuple[Item, ...]) -> None:
            for item in items:
                out.append(item)
                visit(item.children)

        visit(self.items)
        return out

    def answerable(self) -> list[Item]:
        return [i for i in self.walk() if i.type in ANSWER_TYPES]

    def item(self, link_id: str) -> Item | None:
        return next((i for i in self.walk() if i.link_id == link_id), None)

    @property
    def scored(self) -> list[Item]:
        return [
            i
            for i in self.answerable()
            if i.type == "choice" and any(o.ordinal is not None for o in i.options)
        ]


def _fail(path: Path, problem: str) -> DefinitionError:
    return DefinitionError(f"{path.name}: {problem}")


def _condition(path: Path, link_id: str, raw: dict[str, Any]) -> Condition:
    op = raw.get("operator")
    if op not in OPERATORS:
        raise _fail(path, f"item {link_id}: enableWhen operator {op!r} is not one of {sorted(OPERATORS)}")
    answers = [k for k in raw if k.startswith("answer")]
    if len(answers) != 1:
        raise _fail(path, f"item {link_id}: enableWhen needs exactly one answer[x]")
    key = answers[0]
    value = raw[key]
    if key == "answerCoding":
        value = value.get("code")
    elif key == "answerDecimal":
        value = float(value)
    if op == "exists" and key != "answerBoolean":
        raise _fail(path, f"item {link_id}: enableWhen 'exists' takes answerBoolean")
    return Condition(str(raw.get("question")), op, value)


def _item(path: Path, raw: dict[str, Any]) -> Item:
    link_id = raw.get("linkId")
    if not link_id:
        raise _fail(path, "an item has no linkId")
    kind = raw.get("type")
    if kind not in TYPES:
        raise _fail(path, f"item {link_id}: type {kind!r} is not supported ({sorted(TYPES)})")
    if raw.get("repeats"):
        raise _fail(path, f"item {link_id}: repeating items are not supported")
    options: list[Option] = []
    for opt in raw.get("answerOption", []):
        coding = opt.get("valueCoding")
        if not coding or not coding.get("code"):
            raise _fail(path, f"item {link_id}: answer options must be codings with a code")
        ordinal = None
        for ext in opt.get("extension", []):
            if ext.get("url") == ORDINAL:
                ordinal = float(ext.get("valueDecimal", ext.get("valueInteger", 0)))
        options.append(
            Option(coding["code"], coding.get("system", ""), coding.get("display", coding["code"]), ordinal)
        )
    if kind == "choice" and not options:
        raise _fail(path, f"item {link_id}: a choice item needs answerOption")
    if len({o.code for o in options}) != len(options):
        raise _fail(path, f"item {link_id}: duplicate answer codes")
    codes = raw.get("code") or []
    return Item(
        link_id=link_id,
        text=str(raw.get("text", "")),
        type=kind,
        required=bool(raw.get("required", False)),
        code=codes[0].get("code") if codes else None,
        options=tuple(options),
        enable_when=tuple(_condition(path, link_id, c) for c in raw.get("enableWhen", [])),
        enable_any=raw.get("enableBehavior") == "any",
        children=tuple(_item(path, c) for c in raw.get("item", [])),
    )


def load_file(path: Path) -> Definition:
    """Parse and check one Questionnaire file: FHIR R4 (fhir.resources) and the engine's own rules."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _fail(path, f"not readable JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("resourceType") != "Questionnaire":
        raise _fail(path, "resourceType must be Questionnaire")
    try:
        Questionnaire.model_validate(raw)
    except Exception as exc:  # pydantic's ValidationError, listing every problem
        raise _fail(path, f"not a valid FHIR R4 Questionnaire: {exc}") from None
    if not raw.get("id"):
        raise _fail(path, "the Questionnaire needs an id (its slug)")
    items = tuple(_item(path, i) for i in raw.get("item", []))
    definition = Definition(
        slug=raw["id"],
        title=raw.get("title") or raw["id"],
        version=str(raw.get("version", "1")),
        panel_code=(raw.get("code") or [{}])[0].get("code"),
        total_code=next(
            (e["valueCoding"]["code"] for e in raw.get("extension", []) if e.get("url") == TOTAL_CODE), None
        ),
        items=items,
        resource=raw,
    )
    seen: set[str] = set()
    for item in definition.walk():
        if item.link_id in seen:
            raise _fail(path, f"duplicate linkId {item.link_id}")
        seen.add(item.link_id)
    for item in definition.walk():
        for cond in item.enable_when:
            target = definition.item(cond.question)
            if target is None or target.type not in ANSWER_TYPES:
                raise _fail(
                    path, f"item {item.link_id}: enableWhen refers to unknown question {cond.question}"
                )
    return definition


@cache
def library() -> dict[str, Definition]:
    """Every shipped definition by slug (loaded once; a malformed file stops the load, naming itself)."""
    out: dict[str, Definition] = {}
    for path in sorted(DEFINITIONS.glob("*.json")):
        definition = load_file(path)
        if definition.slug in out:
            raise _fail(path, f"a second definition with id {definition.slug}")
        out[definition.slug] = definition
    return out


# ---- answers --------------------------------------------------------------------------------------------


def _compare(op: str, actual: Any, expected: Any) -> bool:
    if op == "exists":
        return (actual is not None) is bool(expected)
    if actual is None:
        return op == "!="  # FHIR: != is true when the question has no answer
    if op == "=":
        return bool(actual == expected)
    if op == "!=":
        return bool(actual != expected)
    try:
        if op == ">":
            return bool(actual > expected)
        if op == "<":
            return bool(actual < expected)
        if op == ">=":
            return bool(actual >= expected)
        return bool(actual <= expected)
    except TypeError:
        return False


def enabled(definition: Definition, item: Item, answers: dict[str, Any]) -> bool:
    """FHIR enableWhen: all conditions (enableBehavior all) or any; an item under a disabled one is off;
    a condition on a disabled question sees no answer."""
    if not item.enable_when:
        return True
    results = []
    for cond in item.enable_when:
        target = definition.item(cond.question)
        actual = (
            answers.get(cond.question)
            if target is not None and enabled(definition, target, answers)
            else None
        )
        results.append(_compare(cond.operator, actual, cond.answer))
    return any(results) if item.enable_any else all(results)


def active_items(definition: Definition, answers: dict[str, Any]) -> list[Item]:
    out: list[Item] = []

    def visit(items: tuple[Item, ...]) -> None:
        for item in items:
            if not enabled(definition, item, answers):
                continue
            if item.type in ANSWER_TYPES:
                out.append(item)
            visit(item.children)

    visit(definition.items)
    return out


def coerce(item: Item, raw: Any) -> Any:
    """One submitted value (form text or JSON) as the item's type; ValueError with a plain message."""
    if raw is None or raw == "":
        return None
    if item.type == "choice":
        code = str(raw)
        if item.option(code) is None:
            raise ValueError("choose one of the listed answers")
        return code
    if item.type == "boolean":
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("true", "yes", "1"):
            return True
        if str(raw).lower() in ("false", "no", "0"):
            return False
        raise ValueError("yes or no")
    if item.type == "integer":
        if isinstance(raw, bool):
            raise ValueError("a whole number")
        try:
            return int(str(raw).strip())
        except ValueError:
            raise ValueError("a whole number") from None
    if item.type == "decimal":
        if isinstance(raw, bool):
            raise ValueError("a number")
        try:
            value = Decimal(str(raw).strip())
        except ArithmeticError:
            raise ValueError("a number") from None
        if not value.is_finite():
            raise ValueError("a number")
        return float(value)
    if item.type == "date":
        try:
            return date.fromisoformat(str(raw).strip()).isoformat()
        except ValueError:
            raise ValueError("a date (YYYY-MM-DD)") from None
    text = str(raw)
    if len(text) > MAX_STRING:
        raise ValueError(f"at most {MAX_STRING} characters")
    if item.type == "string" and "\n" in text:
        raise ValueError("a single line")
    return text.strip() or None


def check_answers(
    definition: Definition, submitted: dict[str, Any]
) -> tuple[dict[str, Any], list[FieldError]]:
    """Coerce each submitted answer; unknown questions and bad values are errors named by linkId."""
    values: dict[str, Any] = {}
    errors: list[FieldError] = []
    for link_id, raw in submitted.items():
        item = definition.item(link_id)
        if item is None or item.type not in ANSWER_TYPES:
            errors.append(FieldError(f"answers.{link_id}", "not a question of this questionnaire"))
            continue
        try:
            values[link_id] = coerce(item, raw)
        except ValueError as exc:
            errors.append(FieldError(f"answers.{link_id}", str(exc)))
    return values, errors


def prune(definition: Definition, answers: dict[str, Any]) -> dict[str, Any]:
    """The answers of enabled items only (an answer to a question that switched off is dropped)."""
    active = {i.link_id for i in active_items(definition, answers)}
    return {k: v for k, v in answers.items() if k in active and v is not None}


def missing_required(definition: Definition, answers: dict[str, Any]) -> list[FieldError]:
    return [
        FieldError(f"answers.{i.link_id}", "this question needs an answer")
        for i in active_items(definition, answers)
        if i.required and answers.get(i.link_id) is None
    ]


def item_value(item: Item, answer: Any) -> float | None:
    option = item.option(str(answer)) if answer is not None else None
    return option.ordinal if option is not None else None


def score(definition: Definition, answers: dict[str, Any]) -> int | None:
    """The sum of the ordinal values of the scored items; None until every scored item is answered."""
    total = 0.0
    for item in definition.scored:
        value = item_value(item, answers.get(item.link_id))
        if value is None:
            return None
        total += value
    return int(total) if total == int(total) else None
