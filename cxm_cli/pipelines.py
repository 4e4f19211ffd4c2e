"""Pipelines: where every lead and client stands, and moving them on.

A pipeline is an ordered list of stages declared in ``cxm.toml``::

    [[pipelines]]
    name = "sales"
    stale_after_days = 14
    stages = ["new", "contacted", { name = "won", kind = "won" }]

Automatic moves are ``[[pipeline_rules]]`` (applied by ``cxm_cli.transitions``).
Configuration is read forgivingly: every mistake becomes a :class:`ConfigProblem`
naming its line in ``cxm.toml``, the broken pipeline or rule is left out, and
everything that is valid keeps working.

Every move is a ``stage.changed`` event on the timeline (the history); the
``contact_stages`` table holds only where each contact is now.
"""

from __future__ import annotations

import difflib
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from cxm_cli import clock as clocks
from cxm_cli.contacts import get_contact
from cxm_cli.errors import InputError, NotFound
from cxm_cli.events import Event, NewEvent, events_for, record_event, record_events
from cxm_cli.steps import StepContext, StepOutcome, step_kind
from cxm_cli.store import fetch_one, write_transaction

log = logging.getLogger(__name__)

STAGE_KINDS = ("open", "won", "lost")
DEFAULT_STALE_AFTER_DAYS = 14

# Rules evaluated by time rather than by an event (see cxm_cli.transitions).
TIMED_RULES = ("no_reply", "no_visit")

DEFAULT_PIPELINES: list[dict[str, Any]] = [
    {
        "name": "sales",
        "stale_after_days": DEFAULT_STALE_AFTER_DAYS,
        "stages": [
            "new",
            "contacted",
            "consult booked",
            "proposal sent",
            "active client",
            {"name": "follow-up", "stale_after_days": 60},
            {"name": "won", "kind": "won"},
            {"name": "lost", "kind": "lost"},
        ],
    }
]

# The same rules as the default in workspace_template/cxm.toml (a test checks).
DEFAULT_RULES: list[dict[str, Any]] = [
    {"on": "lead.created", "to": "new"},
    {"on": "form.submitted", "to": "new"},
    {"on": "message.sent", "from": ["new"], "to": "contacted"},
    {"on": "message.received", "from": ["new"], "to": "contacted"},
    {"on": "appointment.booked", "from": ["new", "contacted"], "to": "consult booked"},
    {"on": "appointment.completed", "from": ["consult booked"], "to": "proposal sent"},
    {"on": "invoice.paid", "to": "active client"},
    {"on": "appointment.completed", "from": ["active client"], "to": "follow-up"},
    {
        "on": "appointment.booked",
        "from": ["follow-up"],
        "to": "active client",
        "backwards": True,
    },
    {
        "on": "appointment.booked",
        "from": ["lost"],
        "to": "consult booked",
        "backwards": True,
    },
    {
        "on": "no_reply",
        "days": 30,
        "from": ["contacted", "proposal sent"],
        "to": "lost",
    },
    {"on": "no_visit", "days": 180, "to": "follow-up"},
]

RULE_KEYS = {"on", "to", "from", "pipeline", "where", "backwards", "days", "reason"}


# --- configuration ---------------------------------------------------------------


@dataclass
class ConfigProblem:
    """One mistake in cxm.toml, with where it is."""

    place: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.place}: {self.message}"


@dataclass
class Stage:
    name: str
    kind: str = "open"
    stale_after_days: int | None = None
    position: int = 0

    @property
    def is_closed(self) -> bool:
        return self.kind in ("won", "lost")


@dataclass
class Pipeline:
    name: str
    stages: list[Stage]
    stale_after_days: int = DEFAULT_STALE_AFTER_DAYS
    line: int | None = None

    def find_stage(self, name: str) -> Stage | None:
        wanted = stage_key(name)
        for stage in self.stages:
            if stage_key(stage.name) == wanted:
                return stage
        return None

    def stage(self, name: str) -> Stage:
        found = self.find_stage(name)
        if found is None:
            raise NotFound(
                f"pipeline {self.name!r} has no stage {name!r}",
                hint="stages: " + ", ".join(s.name for s in self.stages),
            )
        return found

    def stale_days_for(self, stage: Stage) -> int | None:
        """Days after which a contact in ``stage`` counts as stale; None: never."""
        if stage.is_closed:
            return None
        return stage.stale_after_days or self.stale_after_days


@dataclass
class TransitionRule:
    """Move contacts to ``to`` when ``on`` happens (an event type or a timed rule)."""

    number: int  # 1-based position among [[pipeline_rules]]
    on: str
    pipeline: str
    to: str | None
    from_stages: list[str] | None = None  # None: any stage, or none yet
    where: dict[str, Any] = field(default_factory=dict)
    backwards: bool = False
    days: int | None = None
    reason: str | None = None
    line: int | None = None

    @property
    def label(self) -> str:
        return f"rule:{self.number}"

    def describe(self) -> str:
        if self.on == "no_reply":
            return self.reason or f"no reply for {self.days} days"
        if self.on == "no_visit":
            return self.reason or f"no visit for {self.days} days"
        return self.reason or f"{self.on} (rule {self.number})"


@dataclass
class PipelineConfig:
    pipelines: dict[str, Pipeline]
    default_name: str | None
    rules: list[TransitionRule]
    problems: list[ConfigProblem]
    # Rules grouped by event type on first use: the pipelines hook asks for
    # every event recorded, thousands per import.
    _rules_by_type: dict[str, list[TransitionRule]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def pipeline(self, name: str | None = None) -> Pipeline:
        if name is None:
            if self.default_name is None:
                raise NotFound(
                    "no pipeline is configured",
                    hint=_problems_hint(self.problems)
                    or "add a [[pipelines]] table to cxm.toml",
                )
            return self.pipelines[self.default_name]
        for pipeline in self.pipelines.values():
            if stage_key(pipeline.name) == stage_key(name):
                return pipeline
        raise NotFound(
            f"no pipeline named {name!r}",
            hint=_problems_hint(self.problems)
            or "pipelines: " + ", ".join(self.pipelines),
        )

    def rules_on(self, event_type: str) -> list[TransitionRule]:
        if self._rules_by_type is None:
            grouped: dict[str, list[TransitionRule]] = {}
            for rule in self.rules:
                grouped.setdefault(rule.on, []).append(rule)
            self._rules_by_type = grouped
        return list(self._rules_by_type.get(event_type, ()))


def stage_key(name: str) -> str:
    """Stage names match ignoring case, hyphens and underscores ("Follow_up")."""
    return " ".join(str(name).lower().replace("-", " ").replace("_", " ").split())


def did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _problems_hint(problems: list[ConfigProblem]) -> str | None:
    if not problems:
        return None
    return "cxm.toml has problems: " + "; ".join(str(p) for p in problems[:3])


class ConfigPlaces:
    """Line numbers of tables in cxm.toml, since tomllib does not report them.

    Limitation: only ``[table]`` / ``[[array]]`` headers are found; a pipeline
    written as an inline table (``pipelines = [{...}]``) is reported without a
    line number.
    """

    def __init__(self, text: str, file_name: str = "cxm.toml"):
        self.file_name = file_name
        self.lines = text.splitlines()
        self.headers: list[tuple[int, str]] = []
        pattern = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
        for number, line in enumerate(self.lines, start=1):
            match = pattern.match(line)
            if match:
                self.headers.append((number, _normalise_header(match.group(2))))

    def array_item(self, table: str, index: int) -> int | None:
        """Line of the ``index``-th (0-based) ``[[table]]`` header."""
        found = [line for line, name in self.headers if name == table]
        return found[index] if index < len(found) else None

    def table(self, dotted: str) -> int | None:
        """Line of ``[dotted]``, else of the first table under it."""
        for line, name in self.headers:
            if name == dotted:
                return line
        for line, name in self.headers:
            if name.startswith(dotted + "."):
                return line
        return None

    def key(self, start: int | None, key: str) -> int | None:
        """Line where ``key =`` is set in the table starting at ``start``."""
        if start is None:
            return None
        pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for number in range(start + 1, len(self.lines) + 1):
            if any(line == number for line, _ in self.headers):
                break
            if pattern.match(self.lines[number - 1]):
                return number
        return start

    def place(self, line: int | None, label: str) -> str:
        if line is None:
            return f"{self.file_name} {label}"
        return f"{self.file_name}:{line} {label}"


def _normalise_header(text: str) -> str:
    parts = [part.strip().strip("\"'") for part in text.split(".")]
    return ".".join(parts)


def config_places(workspace) -> ConfigPlaces:
    try:
        text = workspace.config_path.read_text(encoding="utf-8")
    except (OSError, AttributeError):
        text = ""
    return ConfigPlaces(text)


_CONFIG_CACHE: dict[int, tuple[dict, PipelineConfig]] = {}


def pipeline_config(workspace) -> PipelineConfig:
    """The workspace's pipelines and rules, read once per loaded cxm.toml."""
    config = workspace.config
    cached = _CONFIG_CACHE.get(id(config))
    if cached is not None and cached[0] is config:
        return cached[1]

    parsed = parse_pipeline_config(config, config_places(workspace))
    if parsed.problems:
        # One line for the runner's log; the commands print each problem.
        log.warning(
            "problems in the pipelines of cxm.toml: %d; see `cxm pipeline list`",
            len(parsed.problems),
        )
    _CONFIG_CACHE[id(config)] = (config, parsed)
    return parsed


def parse_pipeline_config(
    config: dict[str, Any], places: ConfigPlaces
) -> PipelineConfig:
    problems: list[ConfigProblem] = []
    if "pipelines" in config:
        raw_pipelines = config["pipelines"]
        raw_rules = config.get("pipeline_rules", [])
    else:
        # An older workspace without the section gets the documented default.
        raw_pipelines, raw_rules = DEFAULT_PIPELINES, DEFAULT_RULES
        places = ConfigPlaces("")

    pipelines = _parse_pipelines(raw_pipelines, places, problems)
    default_name = next(iter(pipelines), None)
    for pipeline in pipelines.values():
        if pipeline_is_default(raw_pipelines, pipeline.name):
            default_name = pipeline.name
            break

    rules = _parse_rules(raw_rules, pipelines, default_name, places, problems)
    return PipelineConfig(pipelines, default_name, rules, problems)


def pipeline_is_default(raw_pipelines: Any, name: str) -> bool:
    if not isinstance(raw_pipelines, list):
        return False
    return any(
        isinstance(item, dict) and item.get("name") == name and item.get("default")
        for item in raw_pipelines
    )


def _parse_pipelines(
    raw: Any, places: ConfigPlaces, problems: list[ConfigProblem]
) -> dict[str, Pipeline]:
    if not isinstance(raw, list):
        line = places.table("pipelines")
        problems.append(
            ConfigProblem(
                places.place(line, "[pipelines]"),
                'write each pipeline as a [[pipelines]] table with name = "..."',
                line,
            )
        )
        return {}

    pipelines: dict[str, Pipeline] = {}
    for index, item in enumerate(raw):
        line = places.array_item("pipelines", index)
        label = f"[[pipelines]] #{index + 1}"

        def report(message: str, key: str | None = None, _line=line, _label=label):
            at = places.key(_line, key) if key else _line
            problems.append(ConfigProblem(places.place(at, _label), message, at))

        if not isinstance(item, dict):
            report("a pipeline must be a table")
            continue
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            report("a pipeline needs a name; this one is ignored", "name")
            continue
        name = name.strip()
        clash = next(
            (p for p in pipelines.values() if stage_key(p.name) == stage_key(name)),
            None,
        )
        if clash is not None:
            first = f" at line {clash.line}" if clash.line else ""
            report(
                f"a pipeline named {name!r} is already defined{first}; "
                "this one is ignored",
                "name",
            )
            continue
        for key in sorted(
            set(item) - {"name", "stages", "stale_after_days", "default"}
        ):
            report(f"unknown setting {key!r} (ignored)", key)

        stale = _positive_int(item.get("stale_after_days", DEFAULT_STALE_AFTER_DAYS))
        if stale is None:
            report(
                "stale_after_days must be a whole number of days above 0; "
                f"using {DEFAULT_STALE_AFTER_DAYS}",
                "stale_after_days",
            )
            stale = DEFAULT_STALE_AFTER_DAYS

        stages = _parse_stages(item.get("stages"), name, report)
        if not stages:
            report(f"pipeline {name!r} has no usable stages; it is ignored", "stages")
            continue
        pipelines[name] = Pipeline(name, stages, stale, line)
    return pipelines


def _parse_stages(raw: Any, pipeline_name: str, report) -> list[Stage]:
    if not isinstance(raw, list):
        return []
    stages: list[Stage] = []
    for entry in raw:
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or not str(entry.get("name", "")).strip():
            report(
                f"a stage must be a name or {{ name = ..., kind = ... }}: {entry!r}",
                "stages",
            )
            continue
        name = str(entry["name"]).strip()
        for key in sorted(set(entry) - {"name", "kind", "stale_after_days"}):
            hint = did_you_mean(key, ("name", "kind", "stale_after_days"))
            report(f"stage {name!r}: unknown setting {key!r}{hint} (ignored)", "stages")
        if any(stage_key(s.name) == stage_key(name) for s in stages):
            report(f"stage {name!r} appears twice in {pipeline_name!r}", "stages")
            continue
        kind = entry.get("kind")
        if kind is None:
            kind = stage_key(name) if stage_key(name) in ("won", "lost") else "open"
        if kind not in STAGE_KINDS:
            report(
                f"stage {name!r}: kind must be open, won or lost, not {kind!r}; "
                "treated as open",
                "stages",
            )
            kind = "open"
        stale = entry.get("stale_after_days")
        if stale is not None and _positive_int(stale) is None:
            report(f"stage {name!r}: stale_after_days must be above 0", "stages")
            stale = None
        stages.append(Stage(name, kind, stale, len(stages)))
    return stages


def _parse_rules(
    raw: Any,
    pipelines: dict[str, Pipeline],
    default_name: str | None,
    places: ConfigPlaces,
    problems: list[ConfigProblem],
) -> list[TransitionRule]:
    if not isinstance(raw, list):
        line = places.table("pipeline_rules")
        problems.append(
            ConfigProblem(
                places.place(line, "[pipeline_rules]"),
                "write each rule as a [[pipeline_rules]] table",
                line,
            )
        )
        return []

    rules: list[TransitionRule] = []
    for index, item in enumerate(raw):
        line = places.array_item("pipeline_rules", index)
        label = f"[[pipeline_rules]] #{index + 1}"

        def report(message: str, key: str | None = None, _line=line, _label=label):
            at = places.key(_line, key) if key else _line
            problems.append(
                ConfigProblem(places.place(at, _label), message + "; rule ignored", at)
            )

        rule = _parse_rule(item, index + 1, line, pipelines, default_name, report)
        if rule is not None:
            rules.append(rule)
    return rules


def _parse_rule(item, number, line, pipelines, default_name, report):
    if not isinstance(item, dict):
        report("a rule must be a table")
        return None
    unknown = sorted(set(item) - RULE_KEYS)
    if unknown:
        report(
            f"unknown setting {unknown[0]!r}{did_you_mean(unknown[0], RULE_KEYS)}",
            unknown[0],
        )
        return None

    on = item.get("on")
    if not isinstance(on, str) or not on.strip():
        report('a rule needs on = "<event type>", "no_reply" or "no_visit"', "on")
        return None
    on = on.strip()

    pipeline_name = item.get("pipeline", default_name)
    pipeline = None
    if pipeline_name is not None:
        pipeline = next(
            (
                p
                for p in pipelines.values()
                if stage_key(p.name) == stage_key(str(pipeline_name))
            ),
            None,
        )
    if pipeline is None:
        report(
            f"no pipeline named {pipeline_name!r}",
            "pipeline" if "pipeline" in item else None,
        )
        return None

    to = item.get("to")
    to_stage = None
    if to is None:
        if on != "no_visit":
            report('a rule needs to = "<stage>"', "to")
            return None
    else:
        to_stage = pipeline.find_stage(str(to))
        if to_stage is None:
            report(f"unknown stage {to!r} in pipeline {pipeline.name!r}", "to")
            return None

    from_stages = None
    if "from" in item:
        raw_from = item["from"]
        raw_from = [raw_from] if isinstance(raw_from, str) else raw_from
        if not isinstance(raw_from, list) or not raw_from:
            report("from must be a stage name or a list of them", "from")
            return None
        from_stages = []
        for name in raw_from:
            found = pipeline.find_stage(str(name))
            if found is None:
                report(f"unknown stage {name!r} in pipeline {pipeline.name!r}", "from")
                return None
            from_stages.append(found.name)

    where = item.get("where", {})
    if not isinstance(where, dict):
        report("where must be a table of event data values", "where")
        return None

    days = None
    if on in TIMED_RULES:
        days = _positive_int(item.get("days"))
        if days is None:
            report(f"a {on} rule needs days = <whole number above 0>", "days")
            return None
    elif "days" in item:
        report(f"days only applies to {' and '.join(TIMED_RULES)} rules", "days")
        return None

    reason = item.get("reason")
    return TransitionRule(
        number=number,
        on=on,
        pipeline=pipeline.name,
        to=to_stage.name if to_stage else None,
        from_stages=from_stages,
        where=where,
        backwards=bool(item.get("backwards", False)),
        days=days,
        reason=str(reason) if reason else None,
        line=line,
    )


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


# --- moving contacts -------------------------------------------------------------


@dataclass
class Move:
    contact_id: int
    pipeline: str
    from_stage: str | None
    to_stage: str
    changed: bool
    value: float | None
    by: str
    reason: str | None
    at: str
    event_id: int | None = None


def current_stage(db, contact_id: int, pipeline: str) -> dict[str, Any] | None:
    return fetch_one(
        db,
        "SELECT * FROM contact_stages WHERE contact_id = ? AND pipeline = ?",
        [contact_id, pipeline],
    )


def move_contact(
    db,
    workspace,
    clock,
    contact_id: int,
    stage: str,
    *,
    pipeline: str | None = None,
    value: float | None = None,
    note: str | None = None,
    by: str = "cli",
    reason: str | None = None,
    at: str | None = None,
) -> Move:
    """Put a contact in ``stage``; a real change is a ``stage.changed`` event.

    Moving to the stage the contact is already in changes nothing but the value
    or note, if given, and records no event. ``at`` backdates the move (a rule
    moved by an imported event keeps that event's time).
    """
    target_pipeline = pipeline_config(workspace).pipeline(pipeline)
    target = target_pipeline.stage(stage)
    get_contact(db, contact_id)
    if value is not None:
        value = _deal_value(value)

    with write_transaction(db):
        existing = current_stage(db, contact_id, target_pipeline.name)
        return place_contact(
            db,
            clock,
            contact_id,
            target_pipeline,
            target,
            existing,
            value=value,
            note=note,
            by=by,
            reason=reason,
            at=at,
        )


def place_contacts(
    db,
    clock,
    target_pipeline: Pipeline,
    target: Stage,
    placements: list[tuple[int, dict[str, Any] | None, str | None]],
    *,
    by: str,
    reason: str | None,
) -> list[Move]:
    """:func:`place_contact` for many contacts at once (bulk rules).

    ``placements`` holds (contact id, its ``contact_stages`` row or None, the
    move's time or None), each contact once and none already in ``target``
    (rules never move a contact to its own stage). The moves are written with
    one statement and their ``stage.changed`` events recorded together.
    """
    now = clocks.now_iso(clock)
    rows = []
    for contact_id, existing, at in placements:
        from_stage = existing["stage"] if existing else None
        if from_stage == target.name:
            raise ValueError(f"contact {contact_id} is in {target.name} already")
        entered_at = at or now
        if existing and entered_at < existing["entered_at"]:
            entered_at = existing["entered_at"]
        kept_value = (existing or {}).get("value")
        rows.append((contact_id, from_stage, entered_at, kept_value))

    db.conn.executemany(
        """
        INSERT INTO contact_stages (contact_id, pipeline, stage, entered_at,
            value, note, moved_by, updated_at)
        VALUES (?, ?, ?, ?, ?, NULL, ?, ?)
        ON CONFLICT (contact_id, pipeline) DO UPDATE SET
            stage = excluded.stage, entered_at = excluded.entered_at,
            value = excluded.value, note = excluded.note,
            moved_by = excluded.moved_by, updated_at = excluded.updated_at
        """,
        [
            (contact_id, target_pipeline.name, target.name, entered_at, value, by, now)
            for contact_id, _, entered_at, value in rows
        ],
    )
    new_events = []
    for contact_id, from_stage, entered_at, value in rows:
        new_events.append(
            NewEvent(
                contact_id,
                "stage.changed",
                _move_data(target_pipeline, from_stage, target, by, reason, value),
                at=entered_at,
                source=by.split(":", 1)[0],
            )
        )
    events = record_events(db, new_events, clock=clock)
    moves = [
        Move(
            contact_id,
            target_pipeline.name,
            from_stage,
            target.name,
            True,
            value,
            by,
            reason,
            entered_at,
            event.id,
        )
        for (contact_id, from_stage, entered_at, value), event in zip(
            rows, events, strict=True
        )
    ]
    if rows:
        log.info(
            "%d contacts moved in %s to %s by %s",
            len(rows),
            target_pipeline.name,
            target.name,
            by,
        )
    return moves


def place_contact(
    db,
    clock,
    contact_id: int,
    target_pipeline: Pipeline,
    target: Stage,
    existing: dict[str, Any] | None,
    *,
    value: float | None = None,
    note: str | None = None,
    by: str = "cli",
    reason: str | None = None,
    at: str | None = None,
) -> Move:
    """The move itself, for a caller that read ``existing`` (the contact's row
    in ``contact_stages``, or None) in the write transaction it still holds.

    Automatic rules use it to decide and move on one read of the stage.
    """
    now = clocks.now_iso(clock)
    from_stage = existing["stage"] if existing else None
    kept_value = value if value is not None else (existing or {}).get("value")

    if from_stage == target.name:
        changes: dict[str, Any] = {}
        if value is not None:
            changes["value"] = value
        if note is not None:
            changes["note"] = note
        if changes:
            changes["updated_at"] = now
            db["contact_stages"].update((contact_id, target_pipeline.name), changes)
        return Move(
            contact_id,
            target_pipeline.name,
            from_stage,
            target.name,
            False,
            kept_value,
            by,
            reason,
            existing["entered_at"],
        )

    entered_at = at or now
    if existing and entered_at < existing["entered_at"]:
        entered_at = existing["entered_at"]
    # Plain SQL: a rule moves the contact on a first message, inside the
    # runner's hot path, where sqlite-utils' upsert re-reads the schema.
    db.execute(
        """
        INSERT INTO contact_stages (contact_id, pipeline, stage, entered_at,
            value, note, moved_by, updated_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (contact_id, pipeline) DO UPDATE SET
            stage = excluded.stage, entered_at = excluded.entered_at,
            value = excluded.value, note = excluded.note,
            moved_by = excluded.moved_by, updated_at = excluded.updated_at
        """,
        [
            contact_id,
            target_pipeline.name,
            target.name,
            entered_at,
            kept_value,
            note,
            by,
            now,
        ],
    )
    data = _move_data(target_pipeline, from_stage, target, by, reason, kept_value)
    if note:
        data["note"] = note
    event = record_event(
        db,
        contact_id,
        "stage.changed",
        clock=clock,
        data=data,
        at=entered_at,
        source=by.split(":", 1)[0],
    )

    log.info(
        "contact %s moved in %s to %s by %s",
        contact_id,
        target_pipeline.name,
        target.name,
        by,
    )
    return Move(
        contact_id,
        target_pipeline.name,
        from_stage,
        target.name,
        True,
        kept_value,
        by,
        reason,
        entered_at,
        event.id,
    )


def _move_data(
    pipeline: Pipeline,
    from_stage: str | None,
    target: Stage,
    by: str,
    reason: str | None,
    value: float | None,
) -> dict[str, Any]:
    """A ``stage.changed`` event's data."""
    data: dict[str, Any] = {
        "pipeline": pipeline.name,
        "from": from_stage,
        "to": target.name,
        "by": by,
        "reason": reason,
    }
    if value is not None:
        data["value"] = value
    return data


def _deal_value(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"deal value must be a number, not {value!r}") from exc
    if number < 0:
        raise InputError(f"deal value must not be negative ({number})")
    return number


def stage_history(db, contact_id: int, pipeline: str | None = None) -> list[Event]:
    """Every ``stage.changed`` event of a contact, oldest first."""
    history = events_for(db, contact_id, types=["stage.changed"])
    if pipeline is None:
        return history
    return [event for event in history if event.data.get("pipeline") == pipeline]


def contact_stages(db, contact_id: int) -> dict[str, dict[str, Any]]:
    """Where a contact stands in every pipeline, keyed by pipeline name."""
    rows = db.query("SELECT * FROM contact_stages WHERE contact_id = ?", [contact_id])
    return {row["pipeline"]: row for row in rows}


# --- the move_stage step kind ----------------------------------------------------


def _step_stage(step: dict[str, Any]) -> Any:
    """``{move_stage: won}`` and ``{kind: move_stage, stage: won}`` both work."""
    return step.get("stage") or step.get("move_stage")


MOVE_STAGE_FIELDS = {"kind", "name", "when", "move_stage", "stage", "pipeline", "value"}


def _validate_move_stage(step: dict[str, Any]) -> list[str]:
    problems = [
        f"{key}: unknown field for a move_stage step (known: stage, pipeline, value)"
        for key in step
        if key not in MOVE_STAGE_FIELDS
    ]
    stage = _step_stage(step)
    if not isinstance(stage, str) or not stage.strip():
        problems.append("move_stage needs stage: <stage name>")
    if "pipeline" in step and not isinstance(step["pipeline"], str):
        problems.append("move_stage: pipeline must be a pipeline name")
    if "value" in step:
        try:
            _deal_value(step["value"])
        except InputError as exc:
            problems.append(f"move_stage: {exc.message}")
    return problems


@step_kind("move_stage", validate=_validate_move_stage)
def run_move_stage(ctx: StepContext) -> StepOutcome:
    """Move the contact to a pipeline stage (fields: stage, pipeline, value)."""
    step = ctx.step
    sequence = ctx.enrollment.get("sequence") or ctx.enrollment.get("sequence_name")
    by = f"sequence:{sequence}" if sequence else "sequence"

    # `cxm sequences validate` checks the stage against cxm.toml; one removed
    # from cxm.toml since the sequences were read fails the step here.
    try:
        pipeline = pipeline_config(ctx.workspace).pipeline(step.get("pipeline"))
        stage = pipeline.stage(_step_stage(step))
    except NotFound as exc:
        return StepOutcome("failed", detail=exc.message)

    if ctx.dry_run:
        return StepOutcome(
            "done", detail=f"would move to {stage.name} in {pipeline.name}"
        )

    move = move_contact(
        ctx.db,
        ctx.workspace,
        ctx.clock,
        ctx.contact["id"],
        stage.name,
        pipeline=pipeline.name,
        value=step.get("value"),
        by=by,
        reason=f"step of sequence {sequence}",
    )
    detail = (
        f"moved to {move.to_stage}" if move.changed else f"already in {move.to_stage}"
    )
    return StepOutcome("done", detail=detail, data={"pipeline": move.pipeline})


# Registers the automatic-transition hook; imported last because it uses the
# names above.
from cxm_cli import transitions  # noqa: E402, F401
