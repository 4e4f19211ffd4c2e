"""Conditions: the filters of triggers, branches and exit rules.

A condition is a mapping; every test in it must hold::

    when:
      source: [facebook, google]     # one of these sources
      tags_any: [hot, referral]      # at least one of these tags
      not_tags: [do-not-contact]
      stage: qualified               # current stage in any pipeline
      custom.budget: {gte: 5000}     # a custom field, with an operator
      event.service: implants        # the trigger event's data
      segment: lapsed-patients       # a saved segment
      has: phone                     # a phone a text can go to (or: email)
      any:                           # at least one of these conditions
        - has: phone
        - tag: vip
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cxm_cli.contacts import contact_tags
from cxm_cli.errors import CxmError
from cxm_cli.messaging import ConsentRefused, consent_facts
from cxm_cli.store import fetch_one

log = logging.getLogger(__name__)

LIST_KEYS = {"tags", "tags_any", "not_tags", "any", "all"}
SIMPLE_KEYS = {
    "tag": "has this tag",
    "tags": "has all of these tags",
    "tags_any": "has at least one of these tags",
    "not_tags": "has none of these tags",
    "source": "the contact's source is this (or one of these)",
    "stage": "the contact's current stage is this (or one of these)",
    "pipeline": "limits `stage` to one pipeline",
    "has": "the contact has a phone a text can go to and/or an email that can "
    "be sent to",
    "segment": "the contact is in this saved segment",
    "happened": "an event of this type happened (since enrolment, in a sequence)",
    "not_happened": "no event of this type happened",
    "any": "at least one of these conditions holds",
    "all": "all of these conditions hold",
    "not": "this condition does not hold",
}
PREFIXES = ("event.", "custom.", "contact.")
CONTACT_FIELDS = {
    "first_name",
    "last_name",
    "display_name",
    "company",
    "email",
    "phone",
    "source",
    "timezone",
    "region",
    "created_at",
}
OPERATORS = {"eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists", "contains"}
HAS_VALUES = {"phone", "email"}


def did_you_mean(word: str, choices) -> str:
    match = difflib.get_close_matches(str(word), sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def validate_condition(condition: Any, path: tuple = ()) -> list[tuple[tuple, str]]:
    """Problems in a condition, each with the path of the key it is about."""
    if not isinstance(condition, dict):
        return [(path, "a condition must be a mapping such as {tag: vip}")]
    problems: list[tuple[tuple, str]] = []
    for key, value in condition.items():
        where = (*path, key)
        if key in ("any", "all"):
            if not isinstance(value, list) or not value:
                problems.append((where, f"{key}: must be a list of conditions"))
                continue
            for index, item in enumerate(value):
                problems.extend(validate_condition(item, (*where, index)))
        elif key == "not":
            problems.extend(validate_condition(value, where))
        elif key in SIMPLE_KEYS:
            problems.extend(_validate_simple(key, value, where))
        elif key.startswith(PREFIXES):
            problems.extend(_validate_field(key, value, where))
        else:
            hint = did_you_mean(key, [*SIMPLE_KEYS, "custom.", "event.", "contact."])
            problems.append((where, f"{key}: unknown condition{hint}"))
    return problems


def _validate_simple(key: str, value: Any, where: tuple) -> list[tuple[tuple, str]]:
    values = value if isinstance(value, list) else [value]
    if key in LIST_KEYS and not isinstance(value, (list, str)):
        return [(where, f"{key}: must be a name or a list of names")]
    if not values or not all(isinstance(v, str) and v.strip() for v in values):
        return [(where, f"{key}: must be a name or a list of names")]
    if key == "has":
        bad = [v for v in values if v not in HAS_VALUES]
        if bad:
            return [(where, f"has: {bad[0]!r} is not phone or email")]
    if key == "segment" and importlib.util.find_spec("cxm_cli.segments") is None:
        return [(where, "segment: segments are not available in this cxm")]
    return []


def _validate_field(key: str, value: Any, where: tuple) -> list[tuple[tuple, str]]:
    prefix, _, name = key.partition(".")
    if not name:
        return [(where, f"{key}: name the field after the dot, e.g. {prefix}.budget")]
    if prefix == "contact" and name not in CONTACT_FIELDS:
        hint = did_you_mean(name, CONTACT_FIELDS)
        return [(where, f"{key}: contacts have no field {name!r}{hint}")]
    if isinstance(value, dict):
        problems = []
        for operator in value:
            if operator not in OPERATORS:
                hint = did_you_mean(operator, OPERATORS)
                problems.append((where, f"{key}: unknown operator {operator!r}{hint}"))
        return problems
    return []


@dataclass
class ConditionContext:
    """What a condition can look at for one contact."""

    db: Any
    workspace: Any
    contact: dict[str, Any]
    event_data: dict[str, Any] = field(default_factory=dict)
    since: str | None = None  # "happened" counts events from here (enrolment)
    clock: Any = None
    _tags: list[str] | None = None
    _stages: dict[str, str] | None = None
    _reachable: dict[str, bool] = field(default_factory=dict)

    @property
    def tags(self) -> set[str]:
        if self._tags is None:
            self._tags = contact_tags(self.db, self.contact["id"])
        return set(self._tags)

    @property
    def stages(self) -> dict[str, str]:
        if self._stages is None:
            self._stages = current_stages(self.db, self.contact["id"])
        return self._stages

    def reachable(self, channel: str) -> bool:
        """Whether a message on ``channel`` ("phone" means sms) may go to the
        contact: the send path's own consent check, so a branch on ``has:
        phone`` never picks a text that would then be refused."""
        if channel not in self._reachable:
            send_channel = "sms" if channel == "phone" else channel
            facts = consent_facts(self.db, [self.contact], (send_channel,))
            try:
                facts.check(self.contact, send_channel)
            except ConsentRefused:
                self._reachable[channel] = False
            else:
                self._reachable[channel] = True
        return self._reachable[channel]


def evaluate(condition: dict[str, Any] | None, ctx: ConditionContext) -> bool:
    """Whether every test of ``condition`` holds for the context's contact."""
    if not condition:
        return True
    for key, value in condition.items():
        if not _test(key, value, condition, ctx):
            return False
    return True


def holds_or(
    condition: dict[str, Any] | None,
    ctx: ConditionContext,
    default: bool,
    *,
    what: str,
) -> bool:
    """:func:`evaluate`, or ``default`` when the condition cannot be checked
    (it names a segment no longer in cxm.toml, say).

    For conditions met while an event is recorded (triggers, exit rules) or a
    step is scheduled: failing there would lose the event or stall the
    runner for every contact, so the problem is logged and ``cxm sequences
    validate`` names it.
    """
    try:
        return evaluate(condition, ctx)
    except CxmError as exc:
        log.warning(
            "%s for contact %s cannot be checked (%s); taken as %s",
            what,
            ctx.contact.get("id"),
            exc.message,
            "holding" if default else "not holding",
        )
        return default


def named_in(
    condition: Any, path: tuple = ()
) -> Iterator[tuple[tuple, str, list[str], str | None]]:
    """The segments and stages a condition names: (path, ``segment`` or
    ``stage``, the names, the pipeline a stage is limited to)."""
    if not isinstance(condition, dict):
        return
    for key, value in condition.items():
        where = (*path, key)
        if key in ("any", "all") and isinstance(value, list):
            for index, item in enumerate(value):
                yield from named_in(item, (*where, index))
        elif key == "not":
            yield from named_in(value, where)
        elif key in ("segment", "stage") and isinstance(value, (str, list)):
            # Anything else is not a name; validate_condition reports it.
            pipeline = condition.get("pipeline") if key == "stage" else None
            yield where, key, _names(value), str(pipeline) if pipeline else None


def _names(value: Any) -> list[str]:
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def _test(key: str, value: Any, condition: dict, ctx: ConditionContext) -> bool:
    if key == "any":
        return any(evaluate(item, ctx) for item in value)
    if key == "all":
        return all(evaluate(item, ctx) for item in value)
    if key == "not":
        return not evaluate(value, ctx)
    if key in ("tag", "tags"):
        return set(_names(value)) <= ctx.tags
    if key == "tags_any":
        return bool(set(_names(value)) & ctx.tags)
    if key == "not_tags":
        return not (set(_names(value)) & ctx.tags)
    if key == "source":
        source = str(ctx.contact.get("source") or ctx.event_data.get("source") or "")
        return source.lower() in {name.lower() for name in _names(value)}
    if key == "stage":
        wanted = set(_names(value))
        pipeline = condition.get("pipeline")
        stages = ctx.stages
        if pipeline:
            return stages.get(str(pipeline)) in wanted
        return bool(wanted & set(stages.values()))
    if key == "pipeline":
        return "stage" in condition or str(value) in ctx.stages
    if key == "has":
        return all(ctx.reachable(name) for name in _names(value))
    if key == "segment":
        return _in_segment(ctx, str(value))
    if key in ("happened", "not_happened"):
        seen = _happened(ctx, _names(value))
        return seen if key == "happened" else not seen
    return _compare(_field_value(key, ctx), value)


def _field_value(key: str, ctx: ConditionContext) -> Any:
    prefix, _, name = key.partition(".")
    if prefix == "event":
        node: Any = ctx.event_data
    elif prefix == "custom":
        node = ctx.contact.get("custom") or {}
    else:
        return ctx.contact.get(name)
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _compare(actual: Any, expected: Any) -> bool:
    if not isinstance(expected, dict):
        if isinstance(expected, list):
            return any(_equal(actual, item) for item in expected)
        return _equal(actual, expected)
    for operator, operand in expected.items():
        if not _apply(operator, actual, operand):
            return False
    return True


def _apply(operator: str, actual: Any, operand: Any) -> bool:
    if operator == "exists":
        return (actual not in (None, "")) == bool(operand)
    if operator == "eq":
        return _equal(actual, operand)
    if operator == "ne":
        return not _equal(actual, operand)
    if operator == "in":
        return any(_equal(actual, item) for item in _names(operand))
    if operator == "not_in":
        return not any(_equal(actual, item) for item in _names(operand))
    if operator == "contains":
        if isinstance(actual, list):
            return any(_equal(item, operand) for item in actual)
        return str(operand).lower() in str(actual or "").lower()
    left, right = _number(actual), _number(operand)
    if left is None or right is None:
        return False
    return {
        "gt": left > right,
        "gte": left >= right,
        "lt": left < right,
        "lte": left <= right,
    }[operator]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _equal(actual: Any, expected: Any) -> bool:
    if actual is None:
        return expected is None
    left, right = _number(actual), _number(expected)
    if left is not None and right is not None:
        return left == right
    if isinstance(expected, bool) or isinstance(actual, bool):
        return str(actual).lower() == str(expected).lower()
    return str(actual).strip().lower() == str(expected).strip().lower()


def current_stages(db, contact_id: int) -> dict[str, str]:
    """The contact's current stage in each pipeline."""
    if fetch_one(db, "SELECT 1 AS x FROM sqlite_master WHERE name = 'contact_stages'"):
        return {
            row["pipeline"]: row["stage"]
            for row in db.query(
                "SELECT pipeline, stage FROM contact_stages WHERE contact_id = ?",
                [contact_id],
            )
        }
    # Without the pipelines part, the latest stage.changed event tells.
    stages: dict[str, str] = {}
    for row in db.query(
        "SELECT json_extract(data, '$.pipeline') AS pipeline, "
        "json_extract(data, '$.to') AS stage FROM events "
        "WHERE contact_id = ? AND type = 'stage.changed' ORDER BY at, id",
        [contact_id],
    ):
        stages[str(row["pipeline"] or "default")] = row["stage"]
    return stages


def _happened(ctx: ConditionContext, types: list[str]) -> bool:
    marks = ", ".join("?" for _ in types)
    sql = f"SELECT 1 AS x FROM events WHERE contact_id = ? AND type IN ({marks})"
    params: list[Any] = [ctx.contact["id"], *types]
    if ctx.since:
        sql += " AND recorded_at >= ?"
        params.append(ctx.since)
    return fetch_one(ctx.db, sql + " LIMIT 1", params) is not None


def _in_segment(ctx: ConditionContext, name: str) -> bool:
    try:
        segments = importlib.import_module("cxm_cli.segments")
    except ModuleNotFoundError:
        log.warning("segment condition %r but cxm_cli.segments is missing", name)
        return False
    return bool(
        segments.contact_in_segment(
            ctx.db, ctx.workspace, ctx.contact["id"], name, clock=ctx.clock
        )
    )
