"""Automatic stage moves: ``[[pipeline_rules]]`` applied as things happen.

Event rules run inside the transaction that records the event (an
``@on_event`` hook), so the event and the move it causes commit together.
Timed rules ("no reply for N days", "no visit for N days") have no event to
hang on; the runner calls :func:`check_idle_rules` on every pass.

A rule never moves a contact backwards (to an earlier stage in the pipeline's
order) unless it says ``backwards = true``. For each event and pipeline the
first rule that can move the contact does; the rest are not consulted.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from cxm_cli import clock as clocks
from cxm_cli.events import (
    Event,
    hook_transaction,
    hook_workspace,
    on_event,
    on_events,
    record_event,
)
from cxm_cli.pipelines import (
    Move,
    Pipeline,
    TransitionRule,
    current_stage,
    pipeline_config,
    place_contact,
    place_contacts,
)
from cxm_cli.store import write_transaction

log = logging.getLogger(__name__)

VISIT_DUE = "visit.due"


@on_event("pipelines")
def apply_transition_rules(db, event: Event, clock) -> None:
    if event.contact_id is None:
        return
    workspace = hook_workspace(db)
    if workspace is None:
        return

    config = pipeline_config(workspace)
    rules = config.rules_on(event.type)
    if not rules:
        return

    moved_in: set[str] = set()
    for rule in rules:
        if rule.pipeline in moved_in:
            continue
        if (
            event.type == "stage.changed"
            and event.data.get("pipeline") == rule.pipeline
        ):
            # A pipeline's own moves never feed its rules: no loops.
            continue
        if not data_matches(rule.where, event.data):
            continue
        pipeline = config.pipelines[rule.pipeline]
        move = apply_rule(
            db, workspace, clock, pipeline, rule, event.contact_id, event.at
        )
        if move is not None:
            moved_in.add(rule.pipeline)


@on_events("pipelines")
def apply_transition_rules_to_many(db, events: list[Event], clock) -> None:
    """:func:`apply_transition_rules` for many events of distinct contacts.

    Each rule reads the stages of all its contacts with one query and moves
    them with one statement (an import placing every new lead in "new").
    """
    events = [event for event in events if event.contact_id is not None]
    if not events:
        return
    workspace = hook_workspace(db)
    if workspace is None:
        return
    config = pipeline_config(workspace)

    by_type: dict[str, list[Event]] = {}
    for event in events:
        by_type.setdefault(event.type, []).append(event)
    for type_, typed in by_type.items():
        rules = config.rules_on(type_)
        if not rules:
            continue
        moved_in: dict[int, set[str]] = {}
        for rule in rules:
            candidates = [
                event
                for event in typed
                if rule.pipeline not in moved_in.get(event.id, ())
                and not (
                    event.type == "stage.changed"
                    and event.data.get("pipeline") == rule.pipeline
                )
                and data_matches(rule.where, event.data)
            ]
            if not candidates:
                continue
            pipeline = config.pipelines[rule.pipeline]
            for event in apply_rule_to_many(db, clock, pipeline, rule, candidates):
                moved_in.setdefault(event.id, set()).add(rule.pipeline)


def apply_rule_to_many(
    db, clock, pipeline: Pipeline, rule: TransitionRule, events: list[Event]
) -> list[Event]:
    """:func:`apply_rule` for the contacts of many events; the events that moved."""
    with hook_transaction(db):
        stages = _stages_of(db, [event.contact_id for event in events], pipeline.name)
        movable = []
        for event in events:
            existing = stages.get(event.contact_id)
            if may_move(pipeline, rule, existing["stage"] if existing else None):
                movable.append(event)
        place_contacts(
            db,
            clock,
            pipeline,
            pipeline.stage(rule.to),
            [
                (event.contact_id, stages.get(event.contact_id), event.at)
                for event in movable
            ],
            by=rule.label,
            reason=rule.describe(),
        )
    return movable


def _stages_of(db, contact_ids: list[int], pipeline: str) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    for start in range(0, len(contact_ids), 500):
        chunk = contact_ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        cursor = db.conn.execute(
            "SELECT * FROM contact_stages WHERE pipeline = ? "
            f"AND contact_id IN ({marks})",
            [pipeline, *chunk],
        )
        columns = [column[0] for column in cursor.description]
        for row in cursor.fetchall():
            record = dict(zip(columns, row, strict=True))
            found[record["contact_id"]] = record
    return found


def data_matches(where: dict[str, Any], data: dict[str, Any]) -> bool:
    """Every ``where`` key equals the event's value (a list: any of them)."""
    for key, wanted in where.items():
        actual = data.get(key)
        if isinstance(wanted, list):
            if actual not in wanted:
                return False
        elif actual != wanted:
            return False
    return True


def may_move(pipeline: Pipeline, rule: TransitionRule, from_stage: str | None) -> bool:
    """Whether ``rule`` applies to a contact now in ``from_stage``."""
    if rule.to is None:
        return False
    if rule.from_stages is not None and from_stage not in rule.from_stages:
        return False
    if from_stage is None:
        return True
    current = pipeline.find_stage(from_stage)
    if current is None:
        # The contact sits in a stage since removed from cxm.toml: let rules
        # place them again rather than leave them stuck.
        return True
    target = pipeline.stage(rule.to)
    if target.position == current.position:
        return False
    return target.position > current.position or rule.backwards


def apply_rule(
    db,
    workspace,
    clock,
    pipeline: Pipeline,
    rule: TransitionRule,
    contact_id: int,
    at: str | None,
) -> Move | None:
    # The stage is read once, in the move's own transaction, for both the
    # decision and the move.
    with hook_transaction(db):
        existing = current_stage(db, contact_id, pipeline.name)
        from_stage = existing["stage"] if existing else None
        if not may_move(pipeline, rule, from_stage):
            return None
        move = place_contact(
            db,
            clock,
            contact_id,
            pipeline,
            pipeline.stage(rule.to),
            existing,
            by=rule.label,
            reason=rule.describe(),
            at=at,
        )
    return move if move.changed else None


# --- timed rules -----------------------------------------------------------------


def check_idle_rules(db, workspace, clock) -> list[Move]:
    """Apply the no_reply and no_visit rules; the runner calls this each pass.

    Each contact's move (and its ``visit.due`` event) commits on its own, so a
    long pass holds the write lock only briefly at a time.
    """
    config = pipeline_config(workspace)
    moves: list[Move] = []
    for rule in config.rules:
        if rule.on == "no_reply":
            moves.extend(_run_no_reply(db, workspace, clock, config, rule))
        elif rule.on == "no_visit":
            moves.extend(_run_no_visit(db, workspace, clock, config, rule))
    if moves:
        log.info("timed pipeline rules moved %d contacts", len(moves))
    return moves


def _stage_filter(rule: TransitionRule) -> tuple[str, list[Any]]:
    if rule.from_stages is None:
        return "", []
    marks = ", ".join("?" for _ in rule.from_stages)
    return f" AND s.stage IN ({marks})", list(rule.from_stages)


def _run_no_reply(db, workspace, clock, config, rule: TransitionRule) -> list[Move]:
    """Our message, sent after their last reply, has gone unanswered N days.

    The contact must also have been in its stage for N days, so a fresh move
    (say, to "proposal sent") starts the wait again.
    """
    cutoff = clocks.iso(clock.now() - timedelta(days=rule.days))
    stage_sql, stage_params = _stage_filter(rule)
    join = "JOIN" if rule.from_stages is not None else "LEFT JOIN"
    sql = f"""
        SELECT c.id AS contact_id
        FROM contacts c
        {join} contact_stages s ON s.contact_id = c.id AND s.pipeline = ?
        WHERE (s.entered_at IS NULL OR s.entered_at <= ?){stage_sql}
          AND (s.stage IS NULL OR s.stage != ?)
          AND EXISTS (
            SELECT 1 FROM events o
            WHERE o.contact_id = c.id AND o.type = 'message.sent' AND o.at <= ?
              AND o.at > COALESCE((
                SELECT MAX(i.at) FROM events i
                WHERE i.contact_id = c.id AND i.type = 'message.received'), ''))
        ORDER BY c.id
    """
    params = [rule.pipeline, cutoff, *stage_params, rule.to, cutoff]
    candidates = [row["contact_id"] for row in db.query(sql, params)]

    pipeline = config.pipelines[rule.pipeline]
    moves = []
    for contact_id in candidates:
        move = apply_rule(db, workspace, clock, pipeline, rule, contact_id, None)
        if move is not None:
            moves.append(move)
    return moves


def _run_no_visit(db, workspace, clock, config, rule: TransitionRule) -> list[Move]:
    """Last completed appointment N days ago and nothing booked since.

    Records ``visit.due`` once per lapse (sequences trigger on it, such as the
    shipped lapsed-reactivation) and moves the contact when the rule has ``to``.
    """
    now = clock.now()
    cutoff = clocks.iso(now - timedelta(days=rule.days))
    stage_sql, stage_params = _stage_filter(rule)
    join = "JOIN" if rule.from_stages is not None else "LEFT JOIN"
    # Limitation: bookings and cancellations are not matched by appointment_id,
    # so cancelling one of two open bookings reads as no booking standing.
    sql = f"""
        WITH last_visits AS (
            SELECT contact_id, MAX(at) AS last_visit_at FROM events
            WHERE type = 'appointment.completed' AND contact_id IS NOT NULL
            GROUP BY contact_id
        )
        SELECT v.contact_id, v.last_visit_at
        FROM last_visits v
        {join} contact_stages s ON s.contact_id = v.contact_id AND s.pipeline = ?
        WHERE v.last_visit_at <= ?{stage_sql}
          AND NOT EXISTS (
            SELECT 1 FROM events e
            WHERE e.contact_id = v.contact_id AND e.at > v.last_visit_at
              AND e.type = ?)
          -- A booking still standing (not cancelled or missed since) means the
          -- next visit is already arranged.
          AND NOT EXISTS (
            SELECT 1 FROM events b
            WHERE b.contact_id = v.contact_id AND b.at > v.last_visit_at
              AND b.type = 'appointment.booked'
              AND NOT EXISTS (
                SELECT 1 FROM events x
                WHERE x.contact_id = v.contact_id AND x.at >= b.at AND x.id != b.id
                  AND x.type IN ('appointment.cancelled', 'appointment.no_show')))
        ORDER BY v.contact_id
    """
    params = [rule.pipeline, cutoff, *stage_params, VISIT_DUE]
    lapsed = list(db.query(sql, params))

    pipeline = config.pipelines[rule.pipeline]
    moves = []
    for row in lapsed:
        contact_id = row["contact_id"]
        days_since = (now - clocks.parse(row["last_visit_at"])).days
        with write_transaction(db):
            record_event(
                db,
                contact_id,
                VISIT_DUE,
                clock=clock,
                data={
                    "last_visit_at": row["last_visit_at"],
                    "days_since_visit": days_since,
                    "rule": rule.number,
                },
                source="rules",
            )
            move = apply_rule(db, workspace, clock, pipeline, rule, contact_id, None)
        if move is not None:
            moves.append(move)
    return moves
