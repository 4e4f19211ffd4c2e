"""Segments: named conditions on contacts, declared in ``cxm.toml``.

::

    [segments.returning-client]
    description = "Came in more than once"
    min_events = { "appointment.completed" = 2 }

Each segment compiles to one SQL condition on ``contacts c``, so listing a
segment of 10,000 contacts is one query and testing one contact is the same
query with its id. Sequence triggers and branches (``cxm_cli.conditions``), the
reviews part and ``cxm contacts list --segment`` all use this module.

Every condition in a segment must hold (AND); ``any_of`` combines other
segments with OR. A segment with a mistake is left out with a
:class:`~cxm_cli.pipelines.ConfigProblem` naming its line; the rest work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from cxm_cli import clock as clocks
from cxm_cli.clock import SystemClock
from cxm_cli.errors import ConfigError, NotFound
from cxm_cli.pipelines import (
    ConfigPlaces,
    ConfigProblem,
    config_places,
    did_you_mean,
    pipeline_config,
)

log = logging.getLogger(__name__)

# Event types whose data carries a 1-5 ``rating``; the latest one counts.
RATING_EVENTS = ("review.rated", "feedback.received", "review.received")

DEFAULT_SEGMENTS: dict[str, dict[str, Any]] = {
    "returning-client": {
        "description": "came in more than once",
        "min_events": {"appointment.completed": 2},
    },
    "hot-prospect": {
        "description": "not a client yet, and wrote, filled a form or booked this week",
        "stage": ["new", "contacted", "consult booked", "proposal sent"],
        "recent": {
            "days": 7,
            "events": ["message.received", "form.submitted", "appointment.booked"],
        },
    },
    "unhappy-customer": {
        "description": "their latest rating was 3 or less",
        "max_rating": 3,
    },
    "lapsed-6-months": {
        "description": "was a client, no visit or booking for six months",
        "min_events": {"appointment.completed": 1},
        "not_recent": {
            "days": 182,
            "events": ["appointment.completed", "appointment.booked"],
        },
    },
}

SEGMENT_KEYS = {
    "description",
    "tags",
    "any_tags",
    "not_tags",
    "source",
    "pipeline",
    "stage",
    "not_stage",
    "min_lifetime_value",
    "max_lifetime_value",
    "min_events",
    "max_events",
    "recent",
    "not_recent",
    "min_rating",
    "max_rating",
    "custom",
    "all_of",
    "any_of",
    "none_of",
}

# Limitation: lifetime value is the sum of invoice.paid amounts as recorded;
# refunds (invoice.refunded) and currencies are not taken into account.
LIFETIME_VALUE_SQL = """(SELECT COALESCE(SUM(CAST(json_extract(e.data, '$.amount')
    AS REAL)), 0) FROM events e
    WHERE e.contact_id = c.id AND e.type = 'invoice.paid')"""

HAS_TAG_SQL = (
    "EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag = ?)"
)
TAG_IN_SQL = (
    "EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag IN"
)
STAGE_IN_SQL = (
    "EXISTS (SELECT 1 FROM contact_stages s WHERE s.contact_id = c.id"
    " AND s.pipeline = ? AND s.stage IN"
)

CONTACT_NAME_SQL = """COALESCE(NULLIF(TRIM(c.display_name), ''),
    NULLIF(TRIM(COALESCE(c.first_name, '') || ' ' || COALESCE(c.last_name, '')), ''),
    c.email, c.phone, '#' || c.id)"""


@dataclass
class Segment:
    name: str
    description: str
    rules: dict[str, Any]
    pipeline: str | None = None
    line: int | None = None
    references: list[str] = field(default_factory=list)
    # "stage" / "not_stage" resolved to the names configured in the pipeline.
    stages: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class SegmentConfig:
    segments: dict[str, Segment]
    problems: list[ConfigProblem]

    def get(self, name: str) -> Segment:
        if name in self.segments:
            return self.segments[name]
        broken = [p for p in self.problems if f"[segments.{name}]" in p.place]
        if broken:
            where = broken[0].place.split()[0]
            raise ConfigError(
                f"segment {name!r} cannot be used: {broken[0].message}",
                hint=f"fix it at {where}",
            )
        raise NotFound(
            f"no segment named {name!r}",
            hint="segments: " + (", ".join(sorted(self.segments)) or "none defined"),
        )


_CACHE: dict[int, tuple[dict, SegmentConfig]] = {}


def segment_config(workspace) -> SegmentConfig:
    config = workspace.config
    cached = _CACHE.get(id(config))
    if cached is not None and cached[0] is config:
        return cached[1]

    parsed = parse_segments(
        config, config_places(workspace), pipeline_config(workspace)
    )
    if parsed.problems:
        log.warning(
            "problems in the segments of cxm.toml: %d; see `cxm contacts segments`",
            len(parsed.problems),
        )
    _CACHE[id(config)] = (config, parsed)
    return parsed


def parse_segments(
    config: dict[str, Any], places: ConfigPlaces, pipelines
) -> SegmentConfig:
    problems: list[ConfigProblem] = []
    if "segments" in config:
        raw = config["segments"]
    else:
        raw = DEFAULT_SEGMENTS
        places = ConfigPlaces("")

    if not isinstance(raw, dict):
        line = places.array_item("segments", 0) or places.table("segments")
        problems.append(
            ConfigProblem(
                places.place(line, "segments"),
                "write each segment as a [segments.NAME] table",
                line,
            )
        )
        return SegmentConfig({}, problems)

    segments: dict[str, Segment] = {}
    for name, rules in raw.items():
        line = places.table(f"segments.{name}")
        label = f"[segments.{name}]"

        def report(message: str, key: str | None = None, _line=line, _label=label):
            at = places.key(_line, key) if key else _line
            problems.append(
                ConfigProblem(
                    places.place(at, _label), message + "; segment ignored", at
                )
            )

        segment = _parse_segment(name, rules, line, pipelines, report)
        if segment is not None:
            segments[name] = segment

    _drop_broken_references(segments, places, problems)
    return SegmentConfig(segments, problems)


def _parse_segment(name, rules, line, pipelines, report) -> Segment | None:
    if not isinstance(rules, dict):
        report("a segment must be a table of conditions")
        return None
    unknown = sorted(set(rules) - SEGMENT_KEYS)
    if unknown:
        hint = did_you_mean(unknown[0], SEGMENT_KEYS)
        report(f"unknown condition {unknown[0]!r}{hint}", unknown[0])
        return None
    if not set(rules) - {"description", "pipeline"}:
        report("a segment needs at least one condition")
        return None

    pipeline_name = None
    resolved: dict[str, list[str]] = {}
    if "stage" in rules or "not_stage" in rules or "pipeline" in rules:
        try:
            pipeline = pipelines.pipeline(rules.get("pipeline"))
        except NotFound as exc:
            report(exc.message, "pipeline" if "pipeline" in rules else "stage")
            return None
        pipeline_name = pipeline.name
        for key in ("stage", "not_stage"):
            names = _names(rules.get(key))
            if names is None:
                report(f"{key} must be a stage name or a list of them", key)
                return None
            resolved[key] = []
            for stage in names:
                found = pipeline.find_stage(stage)
                if found is None:
                    report(
                        f"unknown stage {stage!r} in pipeline {pipeline.name!r}", key
                    )
                    return None
                resolved[key].append(found.name)

    for key in (
        "tags",
        "any_tags",
        "not_tags",
        "source",
        "all_of",
        "any_of",
        "none_of",
    ):
        if _names(rules.get(key)) is None:
            report(f"{key} must be a name or a list of names", key)
            return None
    for key in ("min_lifetime_value", "max_lifetime_value", "min_rating", "max_rating"):
        value = rules.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            report(f"{key} must be a number", key)
            return None
    for key in ("min_events", "max_events"):
        counts = rules.get(key, {})
        if not isinstance(counts, dict) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0
            for n in counts.values()
        ):
            report(f'{key} must be a table like {{ "appointment.completed" = 2 }}', key)
            return None
    for key in ("recent", "not_recent"):
        if key in rules and not _valid_recent(rules[key]):
            report(f'{key} must be {{ days = N, events = ["event.type", ...] }}', key)
            return None
    if not isinstance(rules.get("custom", {}), dict):
        report('custom must be a table like { plan = "gold" }', "custom")
        return None

    references = [
        other
        for key in ("all_of", "any_of", "none_of")
        for other in _names(rules.get(key))
    ]
    return Segment(
        name=name,
        description=str(rules.get("description", "")),
        rules=rules,
        pipeline=pipeline_name,
        line=line,
        references=references,
        stages=resolved,
    )


def _names(value: Any) -> list[str] | None:
    """A name or list of names as a list; [] when absent, None when malformed."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _valid_recent(value: Any) -> bool:
    if not isinstance(value, dict) or set(value) != {"days", "events"}:
        return False
    days = value["days"]
    if isinstance(days, bool) or not isinstance(days, int | float) or days <= 0:
        return False
    return bool(_names(value["events"]))


def _drop_broken_references(segments, places, problems) -> None:
    """Leave out segments that name a missing segment or take part in a cycle."""
    changed = True
    while changed:
        changed = False
        for name, segment in list(segments.items()):
            missing = [ref for ref in segment.references if ref not in segments]
            if missing or _in_cycle(name, segments):
                line = places.key(segment.line, _reference_key(segment))
                why = (
                    f"names segment {missing[0]!r}, which does not exist or is broken"
                    if missing
                    else "refers to itself through other segments"
                )
                problems.append(
                    ConfigProblem(
                        places.place(line, f"[segments.{name}]"),
                        why + "; segment ignored",
                        line,
                    )
                )
                del segments[name]
                changed = True


def _reference_key(segment: Segment) -> str:
    return next(
        (key for key in ("all_of", "any_of", "none_of") if key in segment.rules),
        "all_of",
    )


def _in_cycle(start: str, segments: dict[str, Segment]) -> bool:
    seen: set[str] = set()
    stack = list(segments[start].references)
    while stack:
        name = stack.pop()
        if name == start:
            return True
        if name in seen or name not in segments:
            continue
        seen.add(name)
        stack.extend(segments[name].references)
    return False


# --- compiling to SQL ------------------------------------------------------------


def segment_sql(config: SegmentConfig, name: str, now) -> tuple[str, list[Any]]:
    """A SQL condition on ``contacts c`` (with its parameters) for segment ``name``."""
    segment = config.get(name)
    rules = segment.rules
    parts: list[str] = []
    params: list[Any] = []

    def add(sql: str, *values: Any) -> None:
        parts.append(sql)
        params.extend(values)

    for tag in _names(rules.get("tags")):
        add(HAS_TAG_SQL, tag)
    for key, negate in (("any_tags", ""), ("not_tags", "NOT ")):
        tags = _names(rules.get(key))
        if tags:
            add(f"{negate}{TAG_IN_SQL} ({_marks(tags)}))", *tags)

    sources = [s.lower() for s in _names(rules.get("source"))]
    if sources:
        add(f"LOWER(COALESCE(c.source, '')) IN ({_marks(sources)})", *sources)

    for key, negate in (("stage", ""), ("not_stage", "NOT ")):
        stages = segment.stages.get(key)
        if stages:
            add(
                f"{negate}{STAGE_IN_SQL} ({_marks(stages)}))", segment.pipeline, *stages
            )

    if rules.get("min_lifetime_value") is not None:
        add(f"{LIFETIME_VALUE_SQL} >= ?", rules["min_lifetime_value"])
    if rules.get("max_lifetime_value") is not None:
        add(f"{LIFETIME_VALUE_SQL} <= ?", rules["max_lifetime_value"])

    for key, op in (("min_events", ">="), ("max_events", "<=")):
        for event_type, count in rules.get(key, {}).items():
            add(
                "(SELECT COUNT(*) FROM events e WHERE e.contact_id = c.id"
                f" AND e.type = ?) {op} ?",
                event_type,
                count,
            )

    for key, negate in (("recent", ""), ("not_recent", "NOT ")):
        if key in rules:
            types = _names(rules[key]["events"])
            since = clocks.iso(now - timedelta(days=rules[key]["days"]))
            add(
                f"{negate}EXISTS (SELECT 1 FROM events e WHERE e.contact_id = c.id"
                f" AND e.type IN ({_marks(types)}) AND e.at >= ?)",
                *types,
                since,
            )

    latest_rating = (
        "(SELECT json_extract(e.data, '$.rating') FROM events e"
        f" WHERE e.contact_id = c.id AND e.type IN ({_marks(RATING_EVENTS)})"
        " AND json_extract(e.data, '$.rating') IS NOT NULL"
        " ORDER BY e.at DESC, e.id DESC LIMIT 1)"
    )
    if rules.get("min_rating") is not None:
        add(f"{latest_rating} >= ?", *RATING_EVENTS, rules["min_rating"])
    if rules.get("max_rating") is not None:
        add(f"{latest_rating} <= ?", *RATING_EVENTS, rules["max_rating"])

    for custom_field, value in rules.get("custom", {}).items():
        path = '$."' + custom_field.replace('"', "") + '"'
        add("json_extract(c.custom, ?) = ?", path, value)

    for key, joiner, negate in (
        ("all_of", " AND ", ""),
        ("any_of", " OR ", ""),
        ("none_of", " OR ", "NOT "),
    ):
        others = _names(rules.get(key))
        if others:
            compiled = [segment_sql(config, other, now) for other in others]
            add(
                f"{negate}(" + joiner.join(f"({sql})" for sql, _ in compiled) + ")",
                *[p for _, values in compiled for p in values],
            )

    if not parts:
        return "1", params
    # NULL (a contact with no such field or rating) must read as "no", so that
    # none_of can negate a segment safely.
    return "COALESCE((" + " AND ".join(parts) + "), 0)", params


def _marks(values) -> str:
    return ", ".join("?" for _ in values)


# --- the public API --------------------------------------------------------------


def contact_in_segment(
    db, workspace, contact_id: int, name: str, *, clock=None
) -> bool:
    """Whether one contact is in segment ``name`` now."""
    # Limitation: a caller that passes no clock gets the system time, so
    # "recent" conditions ignore a FakeClock the caller did not hand over.
    now = (clock or SystemClock()).now()
    sql, params = segment_sql(segment_config(workspace), name, now)
    query = f"SELECT 1 FROM contacts c WHERE c.id = ? AND ({sql}) LIMIT 1"
    return bool(list(db.query(query, [contact_id, *params])))


def contacts_in_segment(db, workspace, name: str, *, clock=None) -> list[int]:
    """Ids of every contact in segment ``name``, in id order."""
    now = (clock or SystemClock()).now()
    sql, params = segment_sql(segment_config(workspace), name, now)
    query = f"SELECT c.id FROM contacts c WHERE ({sql}) ORDER BY c.id"
    return [row["id"] for row in db.query(query, params)]


def list_contacts(
    db,
    workspace,
    *,
    segment: str | None = None,
    tags: list[str] | None = None,
    stage: str | None = None,
    pipeline: str | None = None,
    limit: int | None = None,
    clock=None,
) -> list[dict[str, Any]]:
    """Contacts matching every filter given, with their stage and tags."""
    now = (clock or SystemClock()).now()
    target = pipeline_config(workspace).pipeline(pipeline)
    where: list[str] = []
    params: list[Any] = [target.name]

    if segment:
        sql, segment_params = segment_sql(segment_config(workspace), segment, now)
        where.append(f"({sql})")
        params.extend(segment_params)
    for tag in tags or []:
        where.append(HAS_TAG_SQL)
        params.append(tag)
    if stage:
        where.append("s.stage = ?")
        params.append(target.stage(stage).name)

    query = f"""
        SELECT c.id, {CONTACT_NAME_SQL} AS name, c.email, c.phone, c.source,
               s.stage, s.value,
               (SELECT GROUP_CONCAT(tag, ',') FROM (
                    SELECT tag FROM contact_tags t WHERE t.contact_id = c.id
                    ORDER BY tag)) AS tags,
               c.created_at
        FROM contacts c
        LEFT JOIN contact_stages s ON s.contact_id = c.id AND s.pipeline = ?
        {"WHERE " + " AND ".join(where) if where else ""}
        ORDER BY c.id
        {"LIMIT ?" if limit else ""}
    """
    if limit:
        params.append(limit)

    rows = []
    for row in db.query(query, params):
        row["tags"] = row["tags"].split(",") if row["tags"] else []
        rows.append(row)
    return rows
