"""Reading the timeline for the audit: one ordered pass, one contact at a time.

Two queries feed the pass, each sorted by (contact_id, at) and walked in
step, contact by contact:

- ``messages``: direction, channel and status are plain columns, so the bulk
  of the timeline needs no JSON parsing. Failed sends are left out (nobody
  received them) and so are inbound auto-replies (no person wrote them).
- ``events`` of the types the audit reads, other than messages, with the few
  data fields each needs pulled out by SQLite (``EVENT_FIELDS``).

Each contact's rows become one :class:`ContactHistory`; the measures read
those and never query per contact. Memory holds one contact at a time.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

from cxm_cli import clock as clocks
from cxm_cli.audit.stats import epoch

log = logging.getLogger(__name__)

INBOUND_LEAD_TYPES = ("lead.created", "form.submitted")
APPOINTMENT_OUTCOMES = {
    "appointment.completed": "completed",
    "appointment.no_show": "no_show",
    "appointment.cancelled": "cancelled",
}
ANSWER_TYPES = ("review.rated", "feedback.received", "review.received")

# For each event type the audit reads, the data fields it needs, in slot order
# (f1, f2, f3). SQLite extracts only these, only for these types.
EVENT_FIELDS: dict[str, tuple[str | None, str | None, str | None]] = {
    "lead.created": ("source", "created_time", "channel"),
    "form.submitted": ("source", "created_time", "channel"),
    "stage.changed": ("pipeline", "from", "to"),
    "appointment.booked": ("appointment_id", "starts_at", None),
    "appointment.completed": ("appointment_id", "starts_at", None),
    "appointment.no_show": ("appointment_id", "starts_at", None),
    "appointment.cancelled": ("appointment_id", "starts_at", None),
    "invoice.paid": ("amount", None, None),
    "invoice.refunded": ("amount", None, None),
    "review.requested": ("request_id", "channel", None),
    "review.rated": ("request_id", "rating", None),
    "feedback.received": ("request_id", "rating", None),
    "review.received": ("request_id", "rating", None),
    "opted_out": ("channel", None, None),
}

VISIT_PAYMENT_DAYS = 7
VISIT_PAYMENT_SECONDS = VISIT_PAYMENT_DAYS * 24 * 3600

# An outbound message with one of these statuses never reached the person.
FAILED_STATUSES = ("failed", "bounced", "undelivered", "rejected", "cancelled")


@dataclass(slots=True)
class Appointment:
    key: str
    booked_at: str | None = None
    starts_at: str | None = None
    outcome: str | None = None  # completed | no_show | cancelled
    outcome_at: str | None = None

    @property
    def start(self) -> str | None:
        """When it was (or is) due: its start, else when its outcome was noted."""
        return self.starts_at or self.outcome_at or self.booked_at


@dataclass(slots=True)
class ContactHistory:
    """Everything the audit needs about one contact, read up to ``as_of``."""

    contact_id: int
    source: str = "unknown"
    channel: str | None = None  # how they first reached out
    first_inbound_at: str | None = None
    outbound: list[tuple[str, str]] = field(default_factory=list)  # (at, channel)
    inbound: list[tuple[str, str]] = field(default_factory=list)  # (at, channel)
    last_opt_out_at: str | None = None
    stage_moves: list[tuple[str, str, str | None, str]] = field(default_factory=list)
    appointments: list[Appointment] = field(default_factory=list)
    payments: list[tuple[str, float]] = field(default_factory=list)  # refunds < 0
    review_requests: list[tuple[str, str | None, str | None]] = field(
        default_factory=list
    )  # (at, request_id, channel)
    review_answers: list[tuple[str, str | None, str, float | None]] = field(
        default_factory=list
    )  # (at, request_id, type, rating)
    visits: list[str] = field(default_factory=list)  # see _visits
    _follow_up: tuple[list[str], str | None] | None = None

    @property
    def bookings(self) -> list[str]:
        return [a.booked_at for a in self.appointments if a.booked_at]

    def became_customer(self) -> bool:
        return bool(self.visits)

    def lead_follow_up(self) -> tuple[list[str], str | None]:
        """Touches from the first inbound moment on, and the person's response.

        The response is their first inbound message or booking after the first
        touch. Several measures ask; it is worked out once.
        """
        if self._follow_up is None:
            start = self.first_inbound_at
            touches = [at for at, _ in self.outbound if at >= start] if start else []
            response = None
            if touches:
                first = touches[0]
                candidates = [at for at, _ in self.inbound if at > first]
                candidates += [at for at in self.bookings if at > first]
                response = min(candidates) if candidates else None
            self._follow_up = (touches, response)
        return self._follow_up


def _slot_sql(slot: int) -> str:
    cases = [
        f"WHEN '{kind}' THEN json_extract(data, '$.\"{fields[slot]}\"')"
        for kind, fields in EVENT_FIELDS.items()
        if fields[slot]
    ]
    return "CASE type " + " ".join(cases) + " END"


_FAILED = ", ".join(f"'{status}'" for status in FAILED_STATUSES)
_TYPES = ", ".join(f"'{kind}'" for kind in EVENT_FIELDS)
_LEAD_TYPES = ", ".join(f"'{kind}'" for kind in INBOUND_LEAD_TYPES)

# The "+" in front of columns keeps SQLite from walking an index in
# (contact_id, at) order: that reads table rows in random order, while a scan
# plus an in-memory sort reads them sequentially and is about twice as fast.
# Limitation: messages are read from ``messages`` only; a ``message.sent`` or
# ``message.received`` event recorded without its row is not seen.
MESSAGES_SQL = f"""
    SELECT contact_id, at, direction, channel
    FROM messages
    WHERE +at < :as_of
      AND NOT (direction = 'outbound' AND status IN ({_FAILED}))
      AND NOT (direction = 'inbound' AND status = 'auto_reply')
    ORDER BY +contact_id, +at, +id
"""

# Lead events are read whatever their ``at``: an import records them when the
# file is read, and the lead's own time is in ``created_time``. ``undated``
# marks an imported one that had no time of its own (``at`` is the import's).
EVENTS_SQL = f"""
    SELECT contact_id, at, type, {_slot_sql(0)}, {_slot_sql(1)}, {_slot_sql(2)},
           CASE WHEN type IN ({_LEAD_TYPES})
                THEN json_extract(data, '$.batch_id') IS NOT NULL
                     AND at = recorded_at END
    FROM events
    WHERE +contact_id IS NOT NULL
      AND (+at < :as_of OR +type IN ({_LEAD_TYPES}))
      AND +type IN ({_TYPES})
    ORDER BY +contact_id, +at, +id
"""


def read_histories(db, *, as_of: str) -> Iterator[ContactHistory]:
    """Every contact with activity before ``as_of``, in contact id order."""
    contact_sources = {
        row[0]: _clean(row[1])
        for row in db.conn.execute("SELECT id, source FROM contacts")
    }
    params = {"as_of": as_of}
    by_contact = itemgetter(0)
    with _second_reader(db) as other:
        # SQLite sorts each query before its first row; on a second connection
        # in a thread (the GIL is released while SQLite works) both sorts run
        # at once.
        if other is db.conn:
            message_rows = db.conn.execute(MESSAGES_SQL, params)
            event_rows = db.conn.execute(EVENTS_SQL, params)
        else:
            with ThreadPoolExecutor(max_workers=1) as pool:
                pending = pool.submit(other.execute, EVENTS_SQL, params)
                message_rows = db.conn.execute(MESSAGES_SQL, params)
                event_rows = pending.result()
        yield from _walk(
            itertools.groupby(message_rows, by_contact),
            itertools.groupby(event_rows, by_contact),
            contact_sources,
            as_of,
        )


@contextlib.contextmanager
def _second_reader(db) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the same file, or the same one in memory."""
    # Limitation: the two connections read two snapshots taken a moment apart;
    # a write committed in between shows in one query and not the other.
    row = db.conn.execute("PRAGMA database_list").fetchone()
    path = row[2] if row else ""
    if not path:
        yield db.conn
        return
    conn = sqlite3.connect(
        f"{Path(path).as_uri()}?mode=ro", uri=True, check_same_thread=False
    )
    try:
        yield conn
    finally:
        conn.close()


def _walk(messages, events, contact_sources, as_of) -> Iterator[ContactHistory]:
    """Step through both grouped streams together, one contact at a time."""
    count = 0
    message_group = next(messages, None)
    event_group = next(events, None)
    while message_group is not None or event_group is not None:
        contact_id = min(
            group[0] for group in (message_group, event_group) if group is not None
        )
        message_rows: list[tuple] = []
        event_rows: list[tuple] = []
        if message_group is not None and message_group[0] == contact_id:
            message_rows = list(message_group[1])
            message_group = next(messages, None)
        if event_group is not None and event_group[0] == contact_id:
            event_rows = list(event_group[1])
            event_group = next(events, None)
        count += 1
        yield build_history(
            contact_id,
            message_rows,
            event_rows,
            contact_sources.get(contact_id),
            as_of,
        )
    log.debug("audit read %d contact histories", count)


def build_history(
    contact_id: int,
    message_rows: list[tuple],
    event_rows: list[tuple],
    contact_source: str | None,
    as_of: str,
) -> ContactHistory:
    """Fold one contact's ordered rows into a :class:`ContactHistory`."""
    history = ContactHistory(contact_id)
    outbound, inbound = history.outbound, history.inbound
    for _, at, direction, channel in message_rows:
        (inbound if direction == "inbound" else outbound).append((at, channel))

    lead_source: str | None = None
    first_inbound: tuple[str, str] | None = inbound[0] if inbound else None
    open_appointments: list[Appointment] = []
    generated = 0

    for _, at, kind, f1, f2, f3, undated in event_rows:
        if kind in INBOUND_LEAD_TYPES:
            moment = _lead_moment(at, f2, undated)
            if (moment if moment is not None else at) >= as_of:
                continue  # the lead did not exist yet at the end of the period
            lead_source = lead_source or _clean(f1)
            if moment is None:
                continue
            channel = _clean(f3) or ("form" if kind == "form.submitted" else "lead")
            if first_inbound is None or moment < first_inbound[0]:
                first_inbound = (moment, channel)
        elif kind == "stage.changed":
            if f3:
                history.stage_moves.append((at, _clean(f1) or "default", f2, f3))
        elif kind.startswith("appointment."):
            generated += 1
            _track_appointment(history, open_appointments, kind, at, f1, f2, generated)
        elif kind == "invoice.paid" or kind == "invoice.refunded":
            amount = _number(f1)
            if amount is not None:
                signed = abs(amount) if kind == "invoice.paid" else -abs(amount)
                history.payments.append((at, signed))
        elif kind == "review.requested":
            history.review_requests.append((at, _text(f1), _clean(f2)))
        elif kind in ANSWER_TYPES:
            history.review_answers.append((at, _text(f1), kind, parse_rating(f2)))
        elif kind == "opted_out":
            history.last_opt_out_at = at

    if first_inbound is not None:
        history.first_inbound_at, history.channel = first_inbound
    history.source = lead_source or contact_source or "unknown"
    history.visits = _visits(history)
    return history


def _visits(history: ContactHistory) -> list[str]:
    """Times the contact was served: completed jobs, and payments on their own.

    A payment within ``VISIT_PAYMENT_DAYS`` of a completed job is that job's
    bill, not another visit; payments with no job near them are visits.
    """
    jobs = [
        a.outcome_at
        for a in history.appointments
        if a.outcome == "completed" and a.outcome_at
    ]
    visits = list(jobs)
    if history.payments:
        job_times = [epoch(at) for at in jobs]
        for at, amount in history.payments:
            if amount <= 0:
                continue
            paid = epoch(at)
            if not any(abs(paid - job) <= VISIT_PAYMENT_SECONDS for job in job_times):
                visits.append(at)
    return sorted(visits)


def _track_appointment(
    history, open_list, kind, at, appointment_id, starts_at, sequence
) -> None:
    """Pair booked and outcome events by appointment id, else first in first out.

    A second booking with the same id is a reschedule of the same appointment.
    """
    key = _text(appointment_id)
    starts = _stored_time(starts_at)
    match = None
    if key is not None:
        match = next((a for a in open_list if a.key == key), None)

    if kind == "appointment.booked":
        if match is not None:
            match.starts_at = starts or match.starts_at
            return
        appointment = Appointment(key or f"#{sequence}", booked_at=at, starts_at=starts)
        history.appointments.append(appointment)
        open_list.append(appointment)
        return

    if kind not in APPOINTMENT_OUTCOMES:
        return  # confirmed, reschedule requested: nothing the audit counts
    if match is None:
        # An outcome without a known id closes the oldest booking still open.
        match = next(
            (a for a in open_list if key is None or a.key.startswith("#")), None
        )
    if match is None:
        match = Appointment(key or f"#{sequence}")
        history.appointments.append(match)
    else:
        open_list.remove(match)
    match.outcome = APPOINTMENT_OUTCOMES[kind]
    match.outcome_at = at
    match.starts_at = starts or match.starts_at


def _lead_moment(at: str, created_time, undated) -> str | None:
    """When a lead first reached out: the export's time if earlier, else ``at``.

    An imported lead with no time of its own (``undated``) has no known
    moment: the import's clock says when the file was read, not when the
    person got in touch, so it is no inbound moment for speed to lead.
    """
    created = _stored_time(created_time)
    if undated:
        return created
    return created if created is not None and created < at else at


def _stored_time(value) -> str | None:
    if not value:
        return None
    if (
        isinstance(value, str)
        and len(value) == 27
        and value[10] == "T"
        and (value[-1] == "Z")
    ):
        return value  # already cxm's stored form
    try:
        return clocks.iso(clocks.parse(str(value)))
    except ValueError:
        return None


def _clean(value) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _text(value) -> str | None:
    return None if value is None else str(value)


def _number(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


_RATING_WORDS = {"ONE": 1, "TWO": 2, "THREE": 3, "FOUR": 4, "FIVE": 5}


def parse_rating(value) -> float | None:
    """A 1-5 rating from a number, or Google's ``ONE`` ... ``FIVE``."""
    if isinstance(value, str) and value.strip().upper() in _RATING_WORDS:
        return float(_RATING_WORDS[value.strip().upper()])
    number = _number(value)
    if number is None or not 0 < number <= 5:
        return None
    return number
