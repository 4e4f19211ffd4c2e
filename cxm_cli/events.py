"""The timeline: recording events and telling the rest of cxm about them.

Parts of cxm that react to events (the engine's triggers and exit rules,
pipeline rules, review answers) register a hook with :func:`on_event`. Hooks run
synchronously, inside the caller's transaction, in registration order, so an
event and everything it causes commit together or not at all.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cxm_cli import clock as clocks
from cxm_cli.store import loads, write_transaction

log = logging.getLogger(__name__)

# store.dumps' settings on one encoder made once: json.dumps builds a new
# encoder per call when given options, and every imported lead records three
# events.
_encode_data = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str).encode

# The documented vocabulary. Scripts may record other types too.
KNOWN_TYPES = {
    "lead.created": "a new contact entered cxm",
    "contact.merged": "another record was merged into this contact",
    "contact.imported": "a contact came from an opt-out/bounce list or an import "
    "of existing contacts (--existing-contacts, cxm's own export): not a lead",
    "contact.updated": "fields changed by an import or by hand",
    "form.submitted": "a web or lead form was filled in",
    "appointment.booked": "an appointment was booked",
    "appointment.confirmed": "the person confirmed an appointment",
    "appointment.reschedule_requested": "the person asked to reschedule",
    "appointment.completed": "an appointment took place",
    "appointment.no_show": "the person did not come",
    "appointment.cancelled": "an appointment was cancelled",
    "invoice.paid": "an invoice was paid",
    "invoice.refunded": "a payment was refunded",
    "stage.changed": "the contact moved to another pipeline stage",
    "visit.due": "the last visit was long enough ago to invite them back",
    "tag.added": "a tag was added",
    "tag.removed": "a tag was removed",
    "message.sent": "a message went out",
    "message.received": "the person wrote in",
    "message.status": "a provider reported a delivery status",
    "message.resent": "a runner stopped mid-send and another sent the message "
    "again: it may have arrived twice",
    "message.auto_reply": "an automatic answer (out of office); not a reply",
    "message.bounced": "an email could not be delivered (bounce report)",
    "email.opened": "an email's tracking pixel loaded (prefetching inflates it)",
    "email.clicked": "a tracked link in an email was followed",
    "conversation.closed": "the team marked a conversation handled",
    "contact.erased": "a contact was erased (no personal data kept)",
    "opted_out": "the person opted out of a channel",
    "opted_in": "the person opted back in to a channel",
    "sequence.enrolled": "the engine started a sequence for the contact",
    "sequence.skipped": "a trigger matched but the contact was not enrolled (why)",
    "sequence.exited": "a sequence stopped early (reply, booking, exit rule, ...)",
    "sequence.completed": "a sequence ran to its end",
    "step.sent": "a sequence step sent a message",
    "step.done": "a sequence step that sends nothing ran (tag, branch, webhook)",
    "step.deferred": "a step was moved later (quiet hours, retry) and to when",
    "step.capped": "a step was held back by a per-contact cap, and until when",
    "step.skipped": "a step was skipped (opted out, no address, condition)",
    "step.failed": "a step failed, with the reason",
    "step.cancelled": "a queued step was cancelled (the sequence exited)",
    "review.requested": "the person was asked for a review (public links offered)",
    "review.rated": "the person answered a review request with a 1-5 score",
    "review.received": "a public review by the person was imported",
    "feedback.received": "the person sent private feedback to the owner",
    "staff.alerted": "staff were told of a low score or private feedback",
}


@dataclass
class Event:
    id: int
    contact_id: int | None
    type: str
    at: str
    data: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    @classmethod
    def from_row(cls, row: dict) -> Event:
        return cls(
            id=row["id"],
            contact_id=row["contact_id"],
            type=row["type"],
            at=row["at"],
            data=loads(row["data"], {}),
            source=row.get("source"),
        )


@dataclass
class NewEvent:
    """An event not yet recorded, for :func:`record_events`."""

    contact_id: int | None
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    at: datetime | str | None = None
    source: str | None = None


EventHook = Callable[..., None]
_HOOKS: list[tuple[str, EventHook]] = []
# Many-events forms, by name: (the one-event hook they stand for, the form).
_BATCH_HOOKS: dict[str, tuple[EventHook, EventHook]] = {}


def on_event(name: str) -> Callable[[EventHook], EventHook]:
    """Register ``hook(db, event, clock)`` to run after every recorded event.

    ``name`` identifies the hook so re-importing a module does not register it
    twice.
    """

    def register(hook: EventHook) -> EventHook:
        for index, (existing, _) in enumerate(_HOOKS):
            if existing == name:
                _HOOKS[index] = (name, hook)
                return hook
        _HOOKS.append((name, hook))
        return hook

    return register


def on_events(name: str) -> Callable[[EventHook], EventHook]:
    """Register ``hook(db, events, clock)``: the many-events form of the hook
    registered as ``name`` with :func:`on_event`, for :func:`record_events`.

    It must leave the database as calling the one-event hook on each event in
    turn would, given that no contact has two events in ``events``. Register
    it after the one-event hook; it is used only while that hook stays
    registered under ``name``.
    """

    def register(hook: EventHook) -> EventHook:
        single = dict(_HOOKS).get(name)
        if single is None:
            raise ValueError(f"no hook named {name!r} to take many events for")
        _BATCH_HOOKS[name] = (single, hook)
        return hook

    return register


def record_event(
    db,
    contact_id: int | None,
    type: str,
    *,
    clock,
    data: dict[str, Any] | None = None,
    at: datetime | str | None = None,
    source: str | None = None,
    run_hooks: bool = True,
) -> Event:
    """Append an event to a contact's timeline and run the registered hooks."""
    recorded_at = clocks.now_iso(clock)
    at_text = _at_text(at, recorded_at)

    # Plain SQL: sqlite-utils' insert reads the table's schema on every call,
    # and the runner records three or four events per step.
    event_id = db.execute(
        "INSERT INTO events (contact_id, type, at, data, source, recorded_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [contact_id, type, at_text, _encode_data(data or {}), source, recorded_at],
    ).lastrowid
    event = Event(event_id, contact_id, type, at_text, dict(data or {}), source)
    log.debug("event %s %s contact=%s", event_id, type, contact_id)

    if run_hooks:
        for _, hook in list(_HOOKS):
            hook(db, event, clock)
    return event


def _at_text(at: datetime | str | None, recorded_at: str) -> str:
    """When an event happened, as stored: given, else when it was recorded."""
    if at is None:
        return recorded_at
    if isinstance(at, str):
        return clocks.iso(clocks.parse(at))
    return clocks.iso(at)


def record_events(
    db, new_events: list[NewEvent], *, clock, run_hooks: bool = True
) -> list[Event]:
    """Record many events with one statement, then run each hook on all of them.

    For bulk work (an import's new leads): hooks that have a many-events form
    (:func:`on_events`) read and write once for the lot instead of once per
    event. Hooks then see the events hook by hook rather than event by event,
    which changes nothing for any one contact as long as each contact has at
    most one event here; a list that names a contact twice is recorded one
    event at a time instead.
    """
    if not new_events:
        return []
    contact_ids = [new.contact_id for new in new_events if new.contact_id is not None]
    if len(set(contact_ids)) != len(contact_ids):
        return [
            record_event(
                db,
                new.contact_id,
                new.type,
                clock=clock,
                data=new.data,
                at=new.at,
                source=new.source,
                run_hooks=run_hooks,
            )
            for new in new_events
        ]

    recorded_at = clocks.now_iso(clock)
    rows = []
    for new in new_events:
        rows.append(
            (
                new.contact_id,
                new.type,
                _at_text(new.at, recorded_at),
                _encode_data(new.data or {}),
                new.source,
                recorded_at,
            )
        )
    conn = db.conn
    # One statement under the write lock (a transaction, or a savepoint in
    # the caller's): SQLite numbers the rows one after another, each one past
    # the largest id so far, so the last id gives all.
    with hook_transaction(db):
        conn.executemany(
            "INSERT INTO events (contact_id, type, at, data, source, recorded_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        last_id = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
    first_id = last_id - len(rows) + 1
    events = [
        Event(first_id + offset, row[0], row[1], row[2], dict(new.data or {}), row[4])
        for offset, (row, new) in enumerate(zip(rows, new_events, strict=True))
    ]
    log.debug("events %s-%s recorded (%d)", first_id, last_id, len(events))

    if run_hooks:
        for name, hook in list(_HOOKS):
            forms = _BATCH_HOOKS.get(name)
            if forms is not None and forms[0] is hook:
                forms[1](db, events, clock)
                continue
            for event in events:
                hook(db, event, clock)
    return events


_SHARED = threading.local()


@contextlib.contextmanager
def hooks_share_transaction() -> Iterator[None]:
    """Let hooks write straight into the caller's transaction, no savepoints.

    For a caller whose whole work is one transaction that it commits or rolls
    back as a whole and that catches nothing in between (a bulk import): a
    failing hook aborts everything anyway, so the savepoint each hook would
    open per event (two statements each, several per lead) buys nothing.
    """
    previous = getattr(_SHARED, "active", False)
    _SHARED.active = True
    try:
        yield
    finally:
        _SHARED.active = previous


def hook_workspace(db):
    """The workspace ``db`` belongs to, for a hook; None for a database outside
    any workspace (a scratch file in a test or benchmark), which has no
    sequences or rules to apply."""
    from cxm_cli.errors import CxmError
    from cxm_cli.workspace import workspace_of

    try:
        return workspace_of(db)
    except CxmError:
        return None


def hook_transaction(db):
    """``write_transaction(db)``, or nothing inside :func:`hooks_share_transaction`
    while its transaction is open."""
    if getattr(_SHARED, "active", False) and db.conn.in_transaction:
        return contextlib.nullcontext(db)
    return write_transaction(db)


def events_for(db, contact_id: int, *, types: list[str] | None = None) -> list[Event]:
    sql = "SELECT * FROM events WHERE contact_id = ?"
    params: list[Any] = [contact_id]
    if types:
        sql += f" AND type IN ({', '.join('?' for _ in types)})"
        params.extend(types)
    sql += " ORDER BY at, id"
    return [Event.from_row(row) for row in db.query(sql, params)]
