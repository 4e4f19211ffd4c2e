"""The follow-up engine's reaction to events: enrol, exit, answer keywords.

Every recorded event passes through :func:`on_engine_event` (an ``@on_event``
hook, run inside the recording transaction):

1. a ``message.received`` whose text is a keyword a recent step offered (C to
   confirm) records the event the keyword stands for;
2. exit rules of the contact's active sequences stop them (cancelling the
   queued step, ``sequence.exited`` with the reason), and "switch" rules enrol
   the contact in another sequence;
3. triggers enrol the contact in every sequence whose trigger matches, subject
   to the re-enrolment policy and to groups (one active sequence per group,
   a higher priority pre-empts).

The steps themselves run later, in the runner (:mod:`cxm_cli.dispatch`).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any

from cxm_cli import clock as clocks
from cxm_cli import queue
from cxm_cli.conditions import ConditionContext, holds_or
from cxm_cli.contacts import get_contact
from cxm_cli.events import (
    Event,
    NewEvent,
    hook_transaction,
    hook_workspace,
    on_event,
    on_events,
    record_event,
    record_events,
)
from cxm_cli.sendwindow import contact_zone, workspace_calendar
from cxm_cli.sequences import ExitRule, Sequence, SequenceSet, load_sequences
from cxm_cli.store import dumps, fetch_one, loads, write_transaction
from cxm_cli.waits import (
    late_skip_reason,
    missed_wait,
    parse_timedelta,
    parse_wait,
    wait_until,
)

log = logging.getLogger(__name__)

# Events recorded while handling an event run the hook again; a sequence that
# triggers on its own consequences must not recurse without end.
MAX_DEPTH = 6
_local = threading.local()

DEFAULT_KEYWORD_WINDOW = "3d"


@on_event("engine")
def on_engine_event(db, event: Event, clock) -> None:
    if event.contact_id is None:
        return
    workspace = hook_workspace(db)
    if workspace is None:
        return
    sequence_set = load_sequences(workspace)
    index = _event_index(sequence_set)
    if event.type not in index.interesting and event.type != "message.received":
        return

    depth = getattr(_local, "depth", 0)
    if depth >= MAX_DEPTH:
        log.warning("event %s: engine recursion stopped at depth %d", event.id, depth)
        return
    _local.depth = depth + 1
    try:
        with hook_transaction(db):
            if event.type == "message.received":
                answer_keyword(db, event, clock)
            apply_exit_rules(db, workspace, sequence_set, event, clock)
            apply_triggers(db, workspace, sequence_set, event, clock)
    finally:
        _local.depth = depth


@on_events("engine")
def on_engine_events(db, events: list[Event], clock) -> None:
    """:func:`on_engine_event` for many events of distinct contacts at once.

    Reads the contacts' enrollments with one query per sequence and writes
    enrollments, their events and first steps with one statement each, which
    is what lets an import enrol a hundred thousand new leads quickly.
    """
    events = [event for event in events if event.contact_id is not None]
    if not events:
        return
    workspace = hook_workspace(db)
    if workspace is None:
        return
    sequence_set = load_sequences(workspace)
    index = _event_index(sequence_set)
    relevant = [
        event
        for event in events
        if event.type in index.interesting or event.type == "message.received"
    ]
    if not relevant:
        return
    if any(event.type == "message.received" for event in relevant):
        # Replies are answered one by one (keywords read the message).
        for event in relevant:
            on_engine_event(db, event, clock)
        return

    depth = getattr(_local, "depth", 0)
    if depth >= MAX_DEPTH:
        log.warning(
            "%d events: engine recursion stopped at depth %d", len(events), depth
        )
        return
    _local.depth = depth + 1
    try:
        with hook_transaction(db):
            exiting = [event for event in relevant if event.type in index.exit_types]
            if exiting:
                active = _enrollments_of(
                    db, [event.contact_id for event in exiting], active_only=True
                )
                for event in exiting:
                    apply_exit_rules(
                        db,
                        workspace,
                        sequence_set,
                        event,
                        clock,
                        enrollments=active.get(event.contact_id, []),
                    )

            by_type: dict[str, list[Event]] = {}
            for event in relevant:
                by_type.setdefault(event.type, []).append(event)
            for type_, typed in by_type.items():
                for sequence in index.triggers.get(type_, ()):
                    chosen = typed
                    if sequence.trigger_when:
                        chosen = [
                            event
                            for event in typed
                            if _trigger_holds(db, workspace, sequence, event)
                        ]
                    enroll_many(db, workspace, sequence, chosen, clock=clock)
    finally:
        _local.depth = depth


def _trigger_holds(db, workspace, sequence: Sequence, event: Event) -> bool:
    contact = get_contact(db, event.contact_id)
    ctx = ConditionContext(db, workspace, contact, event_data=event.data)
    return holds_or(
        sequence.trigger_when, ctx, False, what=f"the trigger of {sequence.name}"
    )


class _EventIndex:
    """Which sequences care about which event types, worked out once per set.

    Every event of a bulk import passes through the hook; looking the type up
    in a dict keeps the events no sequence cares about (and the sequences that
    do not trigger on this type) from costing a scan or a query each.
    """

    def __init__(self, sequence_set: SequenceSet):
        self.triggers: dict[str, list[Sequence]] = {}
        for sequence in sequence_set.active.values():
            for type_ in dict.fromkeys(sequence.trigger_types):
                self.triggers.setdefault(type_, []).append(sequence)
        # Exit rules of every sequence, enabled or not: an enrollment in a
        # sequence since disabled still stops on its rules.
        self.exit_types: set[str] = set()
        for sequence in sequence_set.sequences.values():
            for rule in sequence.exits:
                self.exit_types.update(rule.types)
        self.interesting: set[str] = set(self.exit_types)
        for sequence in sequence_set.sequences.values():
            self.interesting.update(sequence.trigger_types)


_INDEXES: dict[int, tuple[SequenceSet, _EventIndex]] = {}


def _event_index(sequence_set: SequenceSet) -> _EventIndex:
    cached = _INDEXES.get(id(sequence_set))
    if cached is not None and cached[0] is sequence_set:
        return cached[1]
    index = _EventIndex(sequence_set)
    _INDEXES.clear()
    _INDEXES[id(sequence_set)] = (sequence_set, index)
    return index


# ---------------------------------------------------------------- triggers


def apply_triggers(
    db, workspace, sequence_set: SequenceSet, event: Event, clock
) -> None:
    contact = None
    for sequence in _event_index(sequence_set).triggers.get(event.type, ()):
        if sequence.trigger_when:
            # The contact is read only for a trigger with a condition: most
            # (new-lead on lead.created) have none, and imports create many.
            if contact is None:
                contact = get_contact(db, event.contact_id)
            ctx = ConditionContext(db, workspace, contact, event_data=event.data)
            if not holds_or(
                sequence.trigger_when,
                ctx,
                False,
                what=f"the trigger of {sequence.name}",
            ):
                continue
        enroll(
            db,
            workspace,
            sequence,
            event.contact_id,
            clock=clock,
            trigger_event=event,
        )


def enroll(
    db,
    workspace,
    sequence: Sequence,
    contact_id: int,
    *,
    clock,
    trigger_event: Event | None = None,
    trigger_data: dict[str, Any] | None = None,
    reason: str | None = None,
) -> int | None:
    """Enrol a contact now; returns the enrollment id, or None when not allowed.

    The first step is scheduled from the moment of enrolment (the clock's now),
    never from the trigger event's own time, so importing last year's leads
    does not make their whole follow-up overdue at once.
    """
    now = clock.now()
    data = dict(
        trigger_data
        if trigger_data is not None
        else (trigger_event.data if trigger_event else {})
    )

    with hook_transaction(db):
        # One read of the contact's enrollments answers all three questions
        # below: every new lead of a bulk import comes through here.
        history = _fetch_all(
            db,
            "SELECT * FROM enrollments WHERE contact_id = ? ORDER BY id",
            [contact_id],
        )
        admission = _admission(sequence, history, now)
        if admission is None:
            return None  # already in it: a repeated trigger changes nothing
        refusal, group_members = admission
        if refusal is not None:
            record_event(
                db,
                contact_id,
                "sequence.skipped",
                clock=clock,
                data={"sequence": sequence.name, "reason": refusal},
                source="engine",
            )
            return None

        for other in group_members:
            exit_enrollment(
                db,
                other,
                clock=clock,
                reason=f"pre-empted by {sequence.name} (priority {sequence.priority})",
            )

        enrollment_id = db.execute(
            """
            INSERT INTO enrollments (contact_id, sequence, sequence_group, priority,
                status, trigger_event_id, trigger_type, trigger_data, enrolled_at)
            VALUES (?, ?, ?, ?, 'active', ?, ?, ?, ?)
            """,
            [
                contact_id,
                sequence.name,
                sequence.group,
                sequence.priority,
                trigger_event.id if trigger_event else None,
                trigger_event.type if trigger_event else None,
                dumps(data),
                clocks.iso(now),
            ],
        ).lastrowid
        details = {"sequence": sequence.name, "enrollment_id": enrollment_id}
        if trigger_event is not None:
            details["trigger"] = trigger_event.type
        if reason:
            details["reason"] = reason
        record_event(
            db,
            contact_id,
            "sequence.enrolled",
            clock=clock,
            data=details,
            source="engine",
        )
        enrollment = enrollment_by_id(db, enrollment_id)
        schedule_from(db, workspace, sequence, enrollment, 0, base=now, clock=clock)
    log.info("contact %s enrolled in %s (%s)", contact_id, sequence.name, enrollment_id)
    return enrollment_id


def enroll_many(
    db, workspace, sequence: Sequence, trigger_events: list[Event], *, clock
) -> list[int]:
    """:func:`enroll` for the contacts of many trigger events (one each).

    The same decisions as enrolling them one by one, with the history read
    in one query and enrollments, events and first steps written in one
    statement each. Returns the new enrollment ids.
    """
    if not trigger_events:
        return []
    now = clock.now()
    conn = db.conn

    with hook_transaction(db):
        histories = _enrollments_of(
            db, [event.contact_id for event in trigger_events], active_only=False
        )
        admitted: list[Event] = []
        refused: list[NewEvent] = []
        for event in trigger_events:
            history = histories.get(event.contact_id, [])
            admission = _admission(sequence, history, now)
            if admission is None:
                continue
            refusal, group_members = admission
            if refusal is not None:
                refused.append(
                    NewEvent(
                        event.contact_id,
                        "sequence.skipped",
                        {"sequence": sequence.name, "reason": refusal},
                        source="engine",
                    )
                )
                continue
            for other in group_members:
                exit_enrollment(
                    db,
                    other,
                    clock=clock,
                    reason=f"pre-empted by {sequence.name} "
                    f"(priority {sequence.priority})",
                )
            admitted.append(event)
        record_events(db, refused, clock=clock)
        if not admitted:
            return []

        enrolled_at = clocks.iso(now)
        conn.executemany(
            """
            INSERT INTO enrollments (contact_id, sequence, sequence_group, priority,
                status, trigger_event_id, trigger_type, trigger_data, enrolled_at)
            VALUES (?, ?, ?, ?, 'active', ?, ?, ?, ?)
            """,
            [
                (
                    event.contact_id,
                    sequence.name,
                    sequence.group,
                    sequence.priority,
                    event.id,
                    event.type,
                    dumps(event.data),
                    enrolled_at,
                )
                for event in admitted
            ],
        )
        # Numbered one after another: see events.record_events.
        last_id = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        first_id = last_id - len(admitted) + 1
        record_events(
            db,
            [
                NewEvent(
                    event.contact_id,
                    "sequence.enrolled",
                    {
                        "sequence": sequence.name,
                        "enrollment_id": first_id + offset,
                        "trigger": event.type,
                    },
                    source="engine",
                )
                for offset, event in enumerate(admitted)
            ],
            clock=clock,
        )
        enrollments = _fetch_all(
            db,
            "SELECT * FROM enrollments WHERE id BETWEEN ? AND ? ORDER BY id",
            [first_id, last_id],
        )
        _schedule_first_steps(db, workspace, sequence, enrollments, now, clock)
    log.info("%d contacts enrolled in %s", len(enrollments), sequence.name)
    return [row["id"] for row in enrollments]


def _schedule_first_steps(
    db, workspace, sequence: Sequence, enrollments, now: datetime, clock
) -> None:
    """``schedule_from(..., 0, base=now)`` for each new enrollment."""
    schedule_many(
        db,
        workspace,
        [(sequence, enrollment, 0) for enrollment in enrollments],
        base=now,
        clock=clock,
    )


def _admission(
    sequence: Sequence, history: list[dict[str, Any]], now: datetime
) -> tuple[str | None, list[dict[str, Any]]] | None:
    """Whether a contact with these enrollments may join ``sequence`` now.

    None when it is in the sequence already; else why not (or None) and the
    active enrollments of the same group that joining would pre-empt.
    """
    same = [row for row in history if row["sequence"] == sequence.name]
    if any(row["status"] == "active" for row in same):
        return None
    refusal = _reenroll_refusal(sequence, same, now)
    group_members = _group_members(sequence, history)
    if refusal is None:
        refusal = _group_refusal(sequence, group_members)
    return refusal, group_members


def _reenroll_refusal(
    sequence: Sequence, same: list[dict[str, Any]], now: datetime
) -> str | None:
    """Why the contact may not join ``sequence`` again, given its past
    enrollments in it (``same``), or None."""
    times = [row["enrolled_at"] for row in same if row["enrolled_at"]]
    last = max(times) if times else None
    if not last or sequence.reenroll == "always":
        return None
    if sequence.reenroll == "never":
        return "enrolled before (reenroll: never)"
    ready = clocks.parse(last) + (sequence.cooldown or timedelta(0))
    if ready > now:
        return f"enrolled {last}; cool-down until {clocks.iso(ready)}"
    return None


def _group_members(
    sequence: Sequence, history: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The contact's active enrollments in other sequences of the same group."""
    if not sequence.group:
        return []
    return [
        row
        for row in history
        if row["status"] == "active"
        and row["sequence_group"] == sequence.group
        and row["sequence"] != sequence.name
    ]


def _group_refusal(sequence: Sequence, members: list[dict[str, Any]]) -> str | None:
    for other in members:
        if other["priority"] >= sequence.priority:
            return (
                f"group {sequence.group} is busy with {other['sequence']} "
                f"(priority {other['priority']} >= {sequence.priority})"
            )
    return None


# ---------------------------------------------------------------- scheduling


def schedule_from(
    db,
    workspace,
    sequence: Sequence,
    enrollment: dict[str, Any],
    index: int,
    *,
    base: datetime,
    clock,
) -> int | None:
    """Queue the first non-wait step at or after ``index``; None if finished.

    Wait steps are worked out here rather than queued: the next real step is
    queued for the moment its waits end, counted from ``base``. A message
    after an ``until <field>`` wait whose time has passed is skipped instead,
    saying why on the timeline (:func:`cxm_cli.waits.late_skip_reason`).
    """
    # Limitation: a wait on event data (until starts_at - 24h) is worked out
    # once, from the trigger's data. A moved appointment needs a new
    # appointment.booked event (the shipped reminder exits and re-enrols on
    # it); changing the time any other way leaves the old reminder time.
    due = base
    notes: list[str] = []
    if index < len(sequence.steps) and sequence.steps[index].kind == "wait":
        contact = get_contact(db, enrollment["contact_id"])
        trigger_data = _trigger_data(enrollment)
        zone = contact_zone(workspace, contact)
        calendar = workspace_calendar(workspace)

    # Each pass works out a run of waits; a message whose `until` time was
    # missed is skipped (see waits.late_skip_reason) and the next run follows.
    while True:
        missed = None
        while index < len(sequence.steps) and sequence.steps[index].kind == "wait":
            step = sequence.steps[index]
            index += 1
            when = step.spec.get("when")
            # A wait whose condition cannot be checked still waits: sending
            # early is the worse mistake.
            if when and not holds_or(
                when,
                _condition_context(db, workspace, contact, enrollment),
                True,
                what=f"the when: of {sequence.name} step {step.index + 1}",
            ):
                continue
            try:
                spec = parse_wait(step.spec.get("wait"))
                missed = missed_wait(spec, due, trigger_data) or missed
                due, note = wait_until(spec, due, zone, calendar, trigger_data)
            except ValueError as exc:
                record_step_event(
                    db, enrollment, step, "step.failed", str(exc), clock=clock
                )
                end_enrollment(
                    db,
                    enrollment,
                    clock=clock,
                    status="exited",
                    reason=f"step {step.number} failed: {exc}",
                )
                return None
            notes.append(f"step {step.number}: {note}")

        if index >= len(sequence.steps):
            end_enrollment(
                db, enrollment, clock=clock, status="completed", reason="all steps done"
            )
            return None

        step = sequence.steps[index]
        # Only what reaches the contact is held back: a tag, branch or end
        # after a missed wait still runs, so the sequence keeps its shape.
        # Limitation: only the step right after the waits is checked; in
        # "wait until starts_at - 24h, add_tag, send" the send still goes late.
        if missed is None or step.kind not in ("send", "voicemail", "review_request"):
            break
        later = [
            s.spec.get("wait") for s in sequence.steps[index + 1 :] if s.kind == "wait"
        ]
        reason = late_skip_reason(missed, due, later)
        if reason is None:
            break
        record_step_event(db, enrollment, step, "step.skipped", reason, clock=clock)
        index += 1

    return queue.schedule_step(
        db,
        enrollment_id=enrollment["id"],
        contact_id=enrollment["contact_id"],
        sequence=sequence.name,
        step_index=index,
        step_label=step.label,
        kind=step.kind,
        step_key=sequence.row_key(step),
        due_at=due,
        note="; ".join(notes) or "next step",
        clock=clock,
    )


def schedule_many(
    db,
    workspace,
    moves: list[tuple[Sequence, dict[str, Any], int]],
    *,
    base: datetime,
    clock,
) -> None:
    """:func:`schedule_from` for many (sequence, enrollment, index) at once.

    The runner moves a whole batch of sent steps on with this: next steps
    that need no wait are queued with one statement and finished enrollments
    end together (:func:`end_enrollments`); waits, which depend on each
    contact's zone, are worked out one by one.
    """
    finished: list[dict[str, Any]] = []
    queued: list[tuple[Sequence, dict[str, Any], int]] = []
    for sequence, enrollment, index in moves:
        if index >= len(sequence.steps):
            finished.append(enrollment)
        elif sequence.steps[index].kind == "wait":
            schedule_from(
                db, workspace, sequence, enrollment, index, base=base, clock=clock
            )
        else:
            queued.append((sequence, enrollment, index))

    queue.schedule_steps(
        db,
        [
            (
                enrollment["id"],
                enrollment["contact_id"],
                sequence.name,
                index,
                sequence.steps[index].label,
                sequence.steps[index].kind,
                base,
                "next step",
                sequence.row_key(sequence.steps[index]),
            )
            for sequence, enrollment, index in queued
        ],
        clock=clock,
    )
    # The moves come from steps just finished: nothing is left to cancel.
    end_enrollments(
        db,
        finished,
        clock=clock,
        status="completed",
        reason="all steps done",
        steps_left=False,
    )


def _trigger_data(enrollment: dict[str, Any]) -> dict[str, Any]:
    data = enrollment.get("trigger_data")
    return loads(data, {}) if isinstance(data, str) else dict(data or {})


def _condition_context(db, workspace, contact, enrollment) -> ConditionContext:
    return ConditionContext(
        db,
        workspace,
        contact,
        event_data=_trigger_data(enrollment),
        since=enrollment.get("enrolled_at"),
    )


# ---------------------------------------------------------------- exits


def apply_exit_rules(
    db,
    workspace,
    sequence_set: SequenceSet,
    event: Event,
    clock,
    *,
    enrollments: list[dict[str, Any]] | None = None,
) -> None:
    """Stop the contact's sequences whose exit rules ``event`` meets.

    ``enrollments``: the contact's active enrollments, when the caller has
    read them already.
    """
    # Limitation: exit rules fire on events only. A condition that becomes
    # true with no event (a segment the contact drifts into) stops nothing;
    # give such steps a `when:` instead, which is checked when they run.
    if event.type not in _event_index(sequence_set).exit_types:
        return  # no rule of any sequence stops on this type
    if enrollments is None:
        enrollments = active_enrollments(db, event.contact_id)
    for enrollment in enrollments:
        sequence = sequence_set.sequences.get(enrollment["sequence"])
        if sequence is None:
            continue
        rule = _matching_rule(db, workspace, sequence, enrollment, event)
        if rule is None:
            continue
        reason = f"{rule.reason}"
        if rule.switch_to:
            reason += f"; switching to {rule.switch_to}"
        exit_enrollment(db, enrollment, clock=clock, reason=reason, event=event)
        if rule.switch_to:
            target = sequence_set.usable(rule.switch_to)
            if target is None:
                record_unusable(db, event.contact_id, rule.switch_to, clock=clock)
                continue
            enroll(
                db,
                workspace,
                target,
                event.contact_id,
                clock=clock,
                trigger_event=event,
                trigger_data={**_trigger_data(enrollment), **event.data},
                reason=f"switched from {sequence.name}",
            )


def record_unusable(db, contact_id: int, name: str, *, clock) -> None:
    """A switch to a sequence that cannot run now (problems, disabled, gone)."""
    log.warning("contact %s: switch to unusable sequence %s", contact_id, name)
    record_event(
        db,
        contact_id,
        "sequence.skipped",
        clock=clock,
        data={
            "sequence": name,
            "reason": "cannot switch: the sequence has problems, is disabled or "
            "is gone (see cxm sequences validate)",
        },
        source="engine",
    )


def _matching_rule(
    db, workspace, sequence: Sequence, enrollment, event: Event
) -> ExitRule | None:
    for rule in sequence.exits:
        if event.type not in rule.types:
            continue
        if any(
            str(event.data.get(key)) not in values
            for key, values in rule.data_match.items()
        ):
            continue
        if rule.when:
            contact = get_contact(db, event.contact_id)
            ctx = ConditionContext(db, workspace, contact, event_data=event.data)
            if not holds_or(
                rule.when, ctx, False, what=f"an exit rule of {sequence.name}"
            ):
                continue
        return rule
    return None


def exit_enrollment(
    db,
    enrollment: dict[str, Any],
    *,
    clock,
    reason: str,
    event: Event | None = None,
) -> None:
    """Stop an active enrollment: cancel its queued step, say why on the timeline."""
    end_enrollment(
        db, enrollment, clock=clock, status="exited", reason=reason, event=event
    )


def end_enrollment(
    db,
    enrollment: dict[str, Any],
    *,
    clock,
    status: str,
    reason: str,
    event: Event | None = None,
) -> bool:
    with write_transaction(db):
        cursor = db.execute(
            "UPDATE enrollments SET status = ?, ended_at = ?, end_reason = ? "
            "WHERE id = ? AND status = 'active'",
            [status, clocks.now_iso(clock), reason, enrollment["id"]],
        )
        if cursor.rowcount == 0:
            return False
        for cancelled in queue.cancel_live(
            db, enrollment["id"], clock=clock, reason=reason
        ):
            _record(db, _cancelled_event(enrollment, cancelled, reason), clock)
        if status == "exited":
            _expire_keywords(db, [enrollment["id"]], clock)
        _record(db, _ended_event(enrollment, status, reason, event), clock)
    log.info("enrollment %s %s", enrollment["id"], status)
    return True


def _record(db, new: NewEvent, clock) -> Event:
    return record_event(
        db, new.contact_id, new.type, clock=clock, data=new.data, source=new.source
    )


def _cancelled_event(enrollment, cancelled: dict[str, Any], reason: str) -> NewEvent:
    """``step.cancelled`` for a queued step of an enrollment that ended."""
    return NewEvent(
        enrollment["contact_id"],
        "step.cancelled",
        {
            "sequence": enrollment["sequence"],
            "step": cancelled["step_index"] + 1,
            "label": cancelled["step_label"],
            "kind": cancelled["kind"],
            "due_step_id": cancelled["id"],
            "enrollment_id": enrollment["id"],
            "reason": reason,
        },
        source="engine",
    )


def _ended_event(
    enrollment, status: str, reason: str, event: Event | None = None
) -> NewEvent:
    """``sequence.completed`` or ``sequence.exited``, and why."""
    data = {
        "sequence": enrollment["sequence"],
        "enrollment_id": enrollment["id"],
        "reason": reason,
    }
    if event is not None:
        data["event_id"] = event.id
    return NewEvent(
        enrollment["contact_id"],
        "sequence.completed" if status == "completed" else "sequence.exited",
        data,
        source="engine",
    )


def _expire_keywords(db, enrollment_ids: list[int], clock) -> None:
    """Reply keywords offered by enrollments that exited no longer count."""
    now = clocks.now_iso(clock)
    marks = ",".join("?" * len(enrollment_ids))
    db.conn.execute(
        f"UPDATE keyword_offers SET expires_at = ? WHERE enrollment_id IN ({marks}) "
        "AND expires_at > ?",
        [now, *enrollment_ids, now],
    )


def end_enrollments(
    db,
    enrollments: list[dict[str, Any]],
    *,
    clock,
    status: str,
    reason: str,
    steps_left: bool = True,
) -> int:
    """:func:`end_enrollment` for many enrollments with one reason; how many
    ended (those no longer active are left alone).

    ``steps_left=False``: the caller just finished each enrollment's live
    step in this transaction, so there is none left to cancel (an enrollment
    has at most one pending or claimed step).
    """
    contact_ids = {enrollment["contact_id"] for enrollment in enrollments}
    if len(enrollments) < 2 or len(contact_ids) < len(enrollments):
        # One contact's enrollments end one after another, each with its
        # own events in order.
        return sum(
            end_enrollment(db, enrollment, clock=clock, status=status, reason=reason)
            for enrollment in enrollments
        )

    now = clocks.now_iso(clock)
    with write_transaction(db):
        ids = [enrollment["id"] for enrollment in enrollments]
        marks = ",".join("?" * len(ids))
        active = {
            row[0]
            for row in db.conn.execute(
                f"SELECT id FROM enrollments WHERE id IN ({marks}) "
                "AND status = 'active'",
                ids,
            )
        }
        ending = [row for row in enrollments if row["id"] in active]
        if not ending:
            return 0
        ending_ids = [row["id"] for row in ending]
        marks = ",".join("?" * len(ending_ids))
        db.conn.execute(
            f"UPDATE enrollments SET status = ?, ended_at = ?, end_reason = ? "
            f"WHERE id IN ({marks})",
            [status, now, reason, *ending_ids],
        )
        cancelled = (
            queue.cancel_live_many(db, ending_ids, clock=clock, reason=reason)
            if steps_left
            else []
        )
        by_id = {row["id"]: row for row in ending}
        record_events(
            db,
            [
                _cancelled_event(by_id[row["enrollment_id"]], row, reason)
                for row in cancelled
            ],
            clock=clock,
        )
        if status == "exited":
            _expire_keywords(db, ending_ids, clock)
        record_events(
            db,
            [_ended_event(row, status, reason) for row in ending],
            clock=clock,
        )
    log.info("%d enrollments %s", len(ending), status)
    return len(ending)


def cancel_pending_steps(
    db, contact_id: int, *, channel: str, clock, reason: str
) -> int:
    """Skip the contact's queued steps on ``channel`` (after an opt-out).

    Each skipped step is on the timeline and its enrollment moves on to the
    next step at the time the skipped one was due, so an email step after a
    text the person opted out of still goes out on schedule.
    """
    from cxm_cli.dispatch import channel_of, step_for
    from cxm_cli.workspace import workspace_of

    workspace = workspace_of(db)
    sequence_set = load_sequences(workspace)
    skipped = 0
    with write_transaction(db):
        rows = list(
            db.query(
                "SELECT * FROM due_steps WHERE contact_id = ? AND status = 'pending'",
                [contact_id],
            )
        )
        for row in rows:
            sequence = sequence_set.sequences.get(row["sequence"])
            step = step_for(sequence, row, db) if sequence is not None else None
            if step is None:
                continue
            step_channel = channel_of(step)
            if step_channel == "voicemail":
                step_channel = "sms"
            if step_channel != channel:
                continue
            cursor = db.execute(
                "UPDATE due_steps SET status = 'skipped', finished_at = ?, "
                "last_error = ? WHERE id = ? AND status = 'pending'",
                [clocks.now_iso(clock), reason, row["id"]],
            )
            if cursor.rowcount == 0:
                continue
            enrollment = enrollment_by_id(db, row["enrollment_id"])
            record_step_event(
                db,
                enrollment,
                step,
                "step.skipped",
                reason,
                clock=clock,
                due_step_id=row["id"],
            )
            base = max(clocks.parse(row["due_at"]), clock.now())
            schedule_from(
                db,
                workspace,
                sequence,
                enrollment,
                step.index + 1,
                base=base,
                clock=clock,
            )
            skipped += 1
    return skipped


# ---------------------------------------------------------------- keywords


def offer_keywords(
    db,
    enrollment: dict[str, Any],
    due_step_id: int | None,
    keywords: dict[str, str],
    window: str | None,
    *,
    clock,
) -> None:
    """Remember the reply keywords a sent step offered, for ``window``."""
    expires = clock.now() + parse_timedelta(window or DEFAULT_KEYWORD_WINDOW)
    db.execute(
        """
        INSERT INTO keyword_offers (contact_id, enrollment_id, due_step_id, keywords,
            offered_at, expires_at)
        VALUES (?, ?, ?, ?, ?, ?)
        """,
        [
            enrollment["contact_id"],
            enrollment["id"],
            due_step_id,
            dumps({normalise_keyword(k): v for k, v in keywords.items()}),
            clocks.now_iso(clock),
            clocks.iso(expires),
        ],
    )


def normalise_keyword(text: str) -> str:
    return str(text).strip().strip(".!?,;:'\"()").strip().upper()


def answer_keyword(db, event: Event, clock) -> str | None:
    """Turn a one-word reply into the event its keyword stands for."""
    # Limitation: only a reply that is the keyword alone counts ("C", "c."):
    # "C thanks" or "yes I confirm" is an ordinary reply, seen by staff.
    text = _reply_text(db, event)
    if not text:
        return None
    word = normalise_keyword(text)
    if not word or len(word) > 24 or " " in word:
        return None
    # An answered offer still takes its other keywords while it lasts: "C",
    # then "R" an hour later, is a confirmation and then a wish to move it.
    offers = db.query(
        "SELECT * FROM keyword_offers WHERE contact_id = ? "
        "AND expires_at > ? ORDER BY offered_at DESC, id DESC",
        [event.contact_id, clocks.now_iso(clock)],
    )
    for offer in list(offers):
        keywords = loads(offer["keywords"], {})
        if word not in keywords or offer["answer"] == word:
            continue
        enrollment = (
            enrollment_by_id(db, offer["enrollment_id"])
            if offer["enrollment_id"]
            else None
        )
        data = dict(_trigger_data(enrollment) if enrollment else {})
        data.update(
            {
                "keyword": word,
                "reply_event_id": event.id,
                "sequence": enrollment["sequence"] if enrollment else None,
                "enrollment_id": offer["enrollment_id"],
            }
        )
        if event.data.get("message_id"):
            data["message_id"] = event.data["message_id"]
        db.execute(
            "UPDATE keyword_offers SET answered_at = ?, answer = ? WHERE id = ?",
            [clocks.now_iso(clock), word, offer["id"]],
        )
        record_event(
            db,
            event.contact_id,
            keywords[word],
            clock=clock,
            data=data,
            source="keyword",
        )
        log.info(
            "contact %s answered keyword for offer %s", event.contact_id, offer["id"]
        )
        return keywords[word]
    return None


def _reply_text(db, event: Event) -> str | None:
    for key in ("text", "body"):
        if isinstance(event.data.get(key), str):
            return event.data[key]
    message_id = event.data.get("message_id")
    if message_id:
        row = fetch_one(db, "SELECT body FROM messages WHERE id = ?", [message_id])
        if row and row["body"]:
            return row["body"]
    return None


# ---------------------------------------------------------------- lookups


def enrollment_by_id(db, enrollment_id: int) -> dict[str, Any] | None:
    rows = _fetch_all(db, "SELECT * FROM enrollments WHERE id = ?", [enrollment_id])
    return rows[0] if rows else None


def active_enrollments(db, contact_id: int) -> list[dict[str, Any]]:
    return _fetch_all(
        db,
        "SELECT * FROM enrollments WHERE contact_id = ? AND status = 'active' "
        "ORDER BY id",
        [contact_id],
    )


def _enrollments_of(
    db, contact_ids: list[int], *, active_only: bool
) -> dict[int, list[dict[str, Any]]]:
    """The enrollments of many contacts (oldest first), by contact."""
    found: dict[int, list[dict[str, Any]]] = {}
    status = " AND status = 'active'" if active_only else ""
    # Well under SQLite's limit of variables in one statement.
    for start in range(0, len(contact_ids), 500):
        chunk = contact_ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = _fetch_all(
            db,
            f"SELECT * FROM enrollments WHERE contact_id IN ({marks}){status} "
            "ORDER BY id",
            chunk,
        )
        for row in rows:
            found.setdefault(row["contact_id"], []).append(row)
    return found


def _fetch_all(db, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    """Rows of one table as dicts, read on the connection itself.

    sqlite-utils' ``query`` wraps each read in a savepoint, and ``fetch_one``
    works out unique key names for joins; these reads of one table run for
    every new lead of a bulk import.
    """
    cursor = db.conn.execute(sql, params)
    try:
        columns = [column[0] for column in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    finally:
        cursor.close()


def record_step_event(
    db,
    enrollment: dict[str, Any],
    step,
    event_type: str,
    reason: str,
    *,
    clock,
    due_step_id: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Event:
    """One engine decision about a step, on the contact's timeline."""
    new = step_event(
        enrollment, step, event_type, reason, due_step_id=due_step_id, extra=extra
    )
    return record_event(
        db, new.contact_id, new.type, clock=clock, data=new.data, source=new.source
    )


def step_event(
    enrollment: dict[str, Any],
    step,
    event_type: str,
    reason: str,
    *,
    due_step_id: int | None = None,
    extra: dict[str, Any] | None = None,
) -> NewEvent:
    """The event :func:`record_step_event` records, for :func:`record_events`."""
    data = {
        "sequence": enrollment["sequence"],
        "step": step.number,
        "label": step.label,
        "kind": step.kind,
        "enrollment_id": enrollment["id"],
        "reason": reason,
    }
    if due_step_id is not None:
        data["due_step_id"] = due_step_id
    data.update(extra or {})
    return NewEvent(enrollment["contact_id"], event_type, data, source="runner")


# Built-in step kinds register themselves when this module is imported.
from cxm_cli import engine_steps  # noqa: E402, F401
