"""The protocol engine: protocols written as data (YAML or JSON, docs/triage.md#protocol-format), checked
at load, and evaluated by taking the most urgent disposition any answer reaches
(docs/triage.md#dispositions). Pure: no database, no I/O beyond reading protocol files."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

STARTER_DIR = Path(__file__).parent / "protocols"

# docs/triage.md#dispositions: most urgent first. crisis_line (988, thoughts of self-harm) is non-clinical
# but is handled with call_911: same rank, and call_911 wins a tie (imminent danger goes to 911).
DISPOSITIONS: dict[str, str] = {
    "call_911": "Call 911 now",
    "crisis_line": "Call or text 988 (Suicide & Crisis Lifeline) now",
    "ed_now": "Go to the emergency department now",
    "in_person_today": "See in person today",
    "within_3_days": "See within 3 days",
    "telehealth": "Telehealth visit",
    "self_care": "Self-care at home",
}
RANK: dict[str, int] = {
    "call_911": 0,
    "crisis_line": 0,
    "ed_now": 1,
    "in_person_today": 2,
    "within_3_days": 3,
    "telehealth": 4,
    "self_care": 5,
}
EMERGENCY = frozenset({"call_911", "crisis_line", "ed_now"})
REVIEW_LABEL = "Needs clinical review before use"


def most_urgent(dispositions: Iterable[str]) -> str:
    """The most urgent of `dispositions` (by RANK; call_911 before crisis_line on a tie)."""
    order = list(DISPOSITIONS)
    return min(dispositions, key=lambda d: (RANK[d], order.index(d)))


class ProtocolError(ValueError):
    """A protocol file that cannot be used; the message names the file and every problem."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


@dataclass(frozen=True)
class Answer:
    id: str
    text: str
    disposition: str | None


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    answers: tuple[Answer, ...]

    def answer(self, answer_id: str) -> Answer | None:
        return next((a for a in self.answers if a.id == answer_id), None)


@dataclass(frozen=True)
class RedFlag:
    id: str
    label: str
    question: str
    answer: str
    disposition: str
    source: str


@dataclass(frozen=True)
class Protocol:
    id: str
    title: str
    version: str
    author: str
    review_date: date
    needs_clinical_review: bool
    default_disposition: str
    self_harm: bool  # a positive answer raises the care-team crisis task (docs/triage.md#self-harm)
    questions: tuple[Question, ...]
    red_flags: tuple[RedFlag, ...]
    sources: tuple[str, ...]
    path: str

    def question(self, question_id: str) -> Question | None:
        return next((q for q in self.questions if q.id == question_id), None)

    @property
    def label(self) -> str:
        return REVIEW_LABEL if self.needs_clinical_review else "Licensed protocol"


@dataclass(frozen=True)
class Result:
    disposition: str
    reached: tuple[str, ...]  # every disposition an answer (or the default) reached
    red_flags: tuple[RedFlag, ...]

    @property
    def emergency(self) -> bool:
        return self.disposition in EMERGENCY


def evaluate(protocol: Protocol, answers: Mapping[str, str]) -> Result:
    """The most urgent disposition reached by `answers` (question id -> answer id), the protocol's default
    disposition included. Unknown questions or answers are the caller's to refuse (see `check_answers`)."""
    reached = [protocol.default_disposition]
    for q in protocol.questions:
        chosen = q.answer(answers.get(q.id, ""))
        if chosen is not None and chosen.disposition:
            reached.append(chosen.disposition)
    flags = tuple(rf for rf in protocol.red_flags if answers.get(rf.question) == rf.answer)
    reached.extend(rf.disposition for rf in flags)
    return Result(most_urgent(reached), tuple(dict.fromkeys(reached)), flags)


def check_answers(protocol: Protocol, answers: Mapping[str, str]) -> dict[str, str]:
    """Problems with `answers`, by question id: unknown questions, unknown answers, unanswered questions."""
    problems: dict[str, str] = {}
    for key in answers:
        if protocol.question(key) is None:
            problems[key] = "not a question of this protocol"
    for q in protocol.questions:
        given = answers.get(q.id)
        if not given:
            problems[q.id] = "answer required"
        elif q.answer(given) is None:
            problems[q.id] = "not one of the answers offered"
    return problems


# ---- loading -----------------------------------------------------------------------------------------------


def _text(raw: Mapping[str, Any], key: str, where: str, problems: list[str]) -> str:
    value = raw.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        problems.append(f"{where}: missing {key}")
        return ""
    if not isinstance(value, str | int | float):
        problems.append(f"{where}: {key} must be text")
        return ""
    return str(value).strip()


def _disposition(value: Any, where: str, problems: list[str]) -> str | None:
    if value not in DISPOSITIONS:
        problems.append(f"{where}: unknown disposition {value!r} (one of {', '.join(DISPOSITIONS)})")
        return None
    return str(value)


def parse_protocol(raw: Any, path: str) -> Protocol:
    """Check a parsed protocol document; raise ProtocolError naming `path` and every problem."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ProtocolError(path, ["the file must hold one protocol (a mapping)"])
    pid = _text(raw, "id", "protocol", problems)
    title = _text(raw, "title", "protocol", problems)
    version = _text(raw, "version", "protocol", problems)
    author = _text(raw, "author", "protocol", problems)
    review: date | None = None
    rd = raw.get("review_date")
    if rd is None:
        problems.append("protocol: missing review_date")
    else:
        try:
            review = rd if isinstance(rd, date) else date.fromisoformat(str(rd))
        except ValueError:
            problems.append(f"protocol: review_date {rd!r} is not a date (YYYY-MM-DD)")
    needs_review = raw.get("needs_clinical_review")
    if not isinstance(needs_review, bool):
        problems.append("protocol: needs_clinical_review must be true or false")
        needs_review = True
    default = _disposition(raw.get("default_disposition"), "protocol default_disposition", problems)
    questions: list[Question] = []
    seen_q: set[str] = set()
    raw_questions = raw.get("questions")
    if not isinstance(raw_questions, list) or not raw_questions:
        problems.append("protocol: questions must be a non-empty list")
        raw_questions = []
    for i, rq in enumerate(raw_questions):
        where = f"question {i + 1}"
        if not isinstance(rq, dict):
            problems.append(f"{where}: must be a mapping")
            continue
        qid = _text(rq, "id", where, problems)
        where = f"question {qid or i + 1}"
        if qid in seen_q:
            problems.append(f"{where}: duplicate question id {qid!r}")
        seen_q.add(qid)
        text = _text(rq, "text", where, problems)
        raw_answers = rq.get("answers")
        if not isinstance(raw_answers, list) or not raw_answers:
            problems.append(f"{where}: has no answers")
            raw_answers = []
        answers: list[Answer] = []
        seen_a: set[str] = set()
        for j, ra in enumerate(raw_answers):
            awhere = f"{where} answer {j + 1}"
            if not isinstance(ra, dict):
                problems.append(f"{awhere}: must be a mapping")
                continue
            aid = _text(ra, "id", awhere, problems)
            if aid in seen_a:
                problems.append(f"{where}: duplicate answer id {aid!r}")
            seen_a.add(aid)
            atext = _text(ra, "text", f"{where} answer {aid or j + 1}", problems)
            disp = ra.get("disposition")
            if disp is not None:
                disp = _disposition(disp, f"{where} answer {aid}", problems)
            answers.append(Answer(aid, atext, disp))
        questions.append(Question(qid, text, tuple(answers)))
    by_id = {q.id: q for q in questions}
    flags: list[RedFlag] = []
    seen_f: set[str] = set()
    raw_flags = raw.get("red_flags") or []
    if not isinstance(raw_flags, list):
        problems.append("protocol: red_flags must be a list")
        raw_flags = []
    for k, rf in enumerate(raw_flags):
        where = f"red flag {k + 1}"
        if not isinstance(rf, dict):
            problems.append(f"{where}: must be a mapping")
            continue
        fid = _text(rf, "id", where, problems)
        where = f"red flag {fid or k + 1}"
        if fid in seen_f:
            problems.append(f"{where}: duplicate red flag id {fid!r}")
        seen_f.add(fid)
        label = _text(rf, "label", where, problems)
        qref = _text(rf, "question", where, problems)
        aref = _text(rf, "answer", where, problems)
        q = by_id.get(qref)
        if qref and q is None:
            problems.append(f"{where}: points at missing question {qref!r}")
        elif q is not None and aref and q.answer(aref) is None:
            problems.append(f"{where}: points at missing answer {aref!r} of question {qref!r}")
        disp = _disposition(rf.get("disposition"), where, problems)
        if disp is not None and disp not in EMERGENCY:
            problems.append(f"{where}: a red flag must reach an emergency disposition, not {disp!r}")
        source = _text(rf, "source", where, problems)
        flags.append(RedFlag(fid, label, qref, aref, disp or "call_911", source))
    sources = raw.get("sources") or []
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        problems.append("protocol: sources must be a list of links")
        sources = []
    if problems:
        raise ProtocolError(path, problems)
    assert review is not None
    assert default is not None
    return Protocol(
        id=pid,
        title=title,
        version=version,
        author=author,
        review_date=review,
        needs_clinical_review=bool(needs_review),
        default_disposition=default,
        self_harm=bool(raw.get("self_harm", False)),
        questions=tuple(questions),
        red_flags=tuple(flags),
        sources=tuple(sources),
        path=path,
    )


def load_file(path: Path) -> Protocol:
    """Read and check one protocol file (.yaml, .yml or .json)."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProtocolError(name, [f"cannot be read ({exc.strerror})"]) from None
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ProtocolError(
            name, [f"is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"]
        ) from None
    return parse_protocol(raw, name)


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml", ".json") and p.is_file())


def load_directory(directory: Path) -> tuple[dict[str, Protocol], list[ProtocolError]]:
    """Every protocol in `directory`; malformed files and duplicate ids are rejected (returned as errors)."""
    found: dict[str, Protocol] = {}
    errors: list[ProtocolError] = []
    for path in _files(directory):
        try:
            protocol = load_file(path)
        except ProtocolError as exc:
            errors.append(exc)
            continue
        if protocol.id in found:
            errors.append(
                ProtocolError(
                    str(path), [f"duplicate protocol id {protocol.id!r} (also {found[protocol.id].path})"]
                )
            )
            continue
        found[protocol.id] = protocol
    return found, errors


def _stamp(directory: Path | None) -> tuple[tuple[str, float], ...]:
    if directory is None or not directory.is_dir():
        return ()
    return tuple((str(p), p.stat().st_mtime) for p in _files(directory))


@lru_cache(maxsize=8)
def _library(org_dir: str | None, _stamp: tuple[tuple[str, float], ...]) -> dict[str, Protocol]:
    protocols, errors = load_directory(STARTER_DIR)
    for err in errors:  # the starter set is checked by the tests; this guards an edited checkout
        log.error("triage protocol rejected: %s", err)
    if org_dir:
        licensed, errors = load_directory(Path(org_dir))
        for err in errors:
            log.error("triage protocol rejected: %s", err)
        # An organization's licensed protocol replaces a starter protocol of the same id.
        protocols.update(licensed)
    return protocols


def library(org_dir: Path | None = None) -> dict[str, Protocol]:
    """The starter protocols and, with `org_dir` (TELECARE_TRIAGE_PROTOCOL_DIR), the organization's own;
    reloaded when a file there changes."""
    usable = org_dir if org_dir is not None and org_dir.is_dir() else None
    return _library(str(usable) if usable else None, _stamp(usable))
