"""Activity exports for the audit: messages, appointments and invoices.

Each file is a CSV (any encoding and delimiter the lead importer reads) whose
header names are matched ignoring case, spaces and punctuation:

- **messages**: ``contact`` (an email or phone; or ``email`` / ``phone`` /
  ``name`` columns), ``direction`` (inbound/outbound, in/out, received/sent),
  ``channel`` (sms, email, ...; default: email when the contact is an email
  address, else sms), ``timestamp``, ``body``, optional ``automated``.
- **appointments**: contact as above, ``start``, ``status`` (booked,
  completed, no_show, cancelled, and their usual spellings), optional
  ``booked at``, ``id`` and ``service``.
- **invoices**: contact as above, ``amount``, ``paid date``, optional ``id``,
  ``currency`` and ``status`` (paid, refunded; void or unpaid rows are
  counted and skipped).

Rows become events by the team's conventions: a ``messages`` row plus
``message.sent`` / ``message.received``; ``appointment.booked`` (at ``booked
at``, else at the start) and its outcome at the start; ``invoice.paid`` or
``invoice.refunded``. All rows of all files are recorded in time order, so
hooks that react to them, when asked to run, see the history as it happened.
A person not yet in the workspace is added as a contact without a
``lead.created`` event (they were not a lead of the import).

Every row ends recorded, skipped (with the reason: an unpaid invoice) or
rejected (with file, row, column and reason); nothing is dropped silently. A
file without a column the kind needs is refused before anything is written.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cxm_cli import clock as clocks
from cxm_cli.errors import InputError
from cxm_cli.events import record_event
from cxm_cli.importing.reader import (
    BrokenRecord,
    CsvRecords,
    detect_delimiter,
    detect_encoding,
    is_blank,
    open_input,
)
from cxm_cli.importing.values import (
    DateOrderVote,
    clean_cell,
    normalise_email,
    normalise_phone,
    parse_date,
    parse_money,
    truthy,
)
from cxm_cli.store import write_transaction

log = logging.getLogger(__name__)

KINDS = ("messages", "appointments", "invoices")

_CONTACT_FIELDS = {
    "contact": ["contact", "customer", "client", "lead", "person", "recipient"],
    "email": [
        "email",
        "emailaddress",
        "customeremail",
        "clientemail",
        "contactemail",
        "inviteeemail",
    ],
    "phone": [
        "phone",
        "phonenumber",
        "mobile",
        "mobilephone",
        "cell",
        "customerphone",
        "clientphone",
        "contactphone",
    ],
    "name": [
        "name",
        "fullname",
        "contactname",
        "customername",
        "clientname",
        "inviteename",
    ],
}

# Per kind: field -> header names it answers to, most specific first.
COLUMNS: dict[str, dict[str, list[str]]] = {
    "messages": {
        **_CONTACT_FIELDS,
        "direction": ["direction", "inout", "sentreceived", "type"],
        "channel": ["channel", "medium", "via"],
        "timestamp": [
            "timestamp",
            "sentat",
            "receivedat",
            "datetime",
            "datesent",
            "createdat",
            "time",
            "date",
            "at",
            "when",
        ],
        "body": ["body", "message", "text", "content", "messagebody"],
        "automated": ["automated", "automatic", "auto", "bot"],
    },
    "appointments": {
        **_CONTACT_FIELDS,
        "start": [
            "start",
            "starttime",
            "startsat",
            "startdatetime",
            "startdate",
            "appointmenttime",
            "appointmentdate",
            "datetime",
            "date",
            "time",
        ],
        "status": ["status", "outcome", "state"],
        "booked_at": [
            "bookedat",
            "booked",
            "bookingdate",
            "datescheduled",
            "scheduledat",
            "createdat",
            "created",
        ],
        "id": ["id", "appointmentid", "bookingid", "eventuuid"],
        "service": ["service", "appointmenttype", "eventtypename", "treatment"],
    },
    "invoices": {
        **_CONTACT_FIELDS,
        "amount": [
            "amount",
            "amountpaid",
            "total",
            "grandtotal",
            "paid",
            "price",
            "value",
        ],
        "paid_at": [
            "paiddate",
            "paidat",
            "paidon",
            "datepaid",
            "paymentdate",
            "datetime",
            "date",
        ],
        "id": ["id", "invoiceid", "invoicenumber", "invoice", "number"],
        "currency": ["currency"],
        "status": ["status", "state"],
    },
}
REQUIRED = {
    "messages": ("direction", "timestamp"),
    "appointments": ("start", "status"),
    "invoices": ("amount", "paid_at"),
}
DATE_FIELDS = {
    "messages": ("timestamp",),
    "appointments": ("start", "booked_at"),
    "invoices": ("paid_at",),
}

INBOUND_WORDS = {
    "inbound",
    "in",
    "incoming",
    "received",
    "receive",
    "fromcustomer",
    "fromcontact",
    "customer",
    "reply",
}
OUTBOUND_WORDS = {
    "outbound",
    "out",
    "outgoing",
    "sent",
    "send",
    "tocustomer",
    "tocontact",
    "business",
    "staff",
    "agent",
}
CHANNEL_WORDS = {
    "sms": "sms",
    "text": "sms",
    "txt": "sms",
    "mms": "sms",
    "textmessage": "sms",
    "email": "email",
    "mail": "email",
}
STATUS_WORDS = {
    "booked": "booked",
    "scheduled": "booked",
    "confirmed": "booked",
    "upcoming": "booked",
    "pending": "booked",
    "rescheduled": "booked",
    "completed": "completed",
    "complete": "completed",
    "done": "completed",
    "attended": "completed",
    "showed": "completed",
    "fulfilled": "completed",
    "checkedout": "completed",
    "noshow": "no_show",
    "missed": "no_show",
    "didnotshow": "no_show",
    "dns": "no_show",
    "cancelled": "cancelled",
    "canceled": "cancelled",
    "cancel": "cancelled",
}
INVOICE_SKIP_WORDS = {
    "void",
    "voided",
    "unpaid",
    "draft",
    "open",
    "due",
    "overdue",
    "pending",
    "failed",
}
INVOICE_REFUND_WORDS = {"refunded", "refund", "chargeback"}


def _key(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


@dataclass
class ActivityRow:
    """One event to record, with where it came from."""

    at: str
    order: tuple[int, int, int]  # file, row, part: keeps ties in file order
    kind: str
    file: str
    row: int
    person: dict[str, str]
    event: str
    data: dict[str, Any] = field(default_factory=dict)
    message: dict[str, Any] | None = None


@dataclass
class ActivitySummary:
    files: list[dict[str, Any]] = field(default_factory=list)
    recorded: int = 0  # events
    contacts_created: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "recorded": self.recorded,
            "contacts_created": self.contacts_created,
            "skipped": self.skipped,
            "rejected": self.rejected,
        }


def import_activity(
    workspace,
    db,
    files: list[tuple[str, Path]],
    *,
    clock,
    region: str | None = None,
    run_hooks: bool = False,
) -> ActivitySummary:
    """Record the activity in ``files`` ([(kind, path)]) in one transaction.

    ``run_hooks`` lets other parts react as if it happened live; it is off by
    default so importing old appointments into a live workspace asks nobody
    for a review and enrols nobody in a sequence.
    """
    summary = ActivitySummary()
    region = (region or workspace.phone_region).upper()
    # Limitation: every row of every file is held in memory, to be replayed in
    # time order; files of several million rows need that much memory.
    # Limitation: nothing remembers which rows were imported, so importing the
    # same file twice into one workspace records its activity twice.
    rows: list[ActivityRow] = []
    for number, (kind, path) in enumerate(files):
        if kind not in KINDS:
            raise InputError(f"{path}: unknown activity kind {kind!r}")
        rows += _read_file(number, kind, path, workspace, region, summary)
    rows.sort(key=lambda row: (row.at, row.order))

    resolver = ContactResolver(db, clock, region)
    with write_transaction(db):
        for row in rows:
            contact_id = resolver.resolve(row.person)
            if row.message is not None:
                _record_message(db, clock, contact_id, row, run_hooks)
            else:
                record_event(
                    db,
                    contact_id,
                    row.event,
                    clock=clock,
                    at=row.at,
                    data=row.data,
                    source="import",
                    run_hooks=run_hooks,
                )
            summary.recorded += 1
    summary.contacts_created = resolver.created
    log.info(
        "activity import: %d events, %d contacts created, %d rejected",
        summary.recorded,
        summary.contacts_created,
        len(summary.rejected),
    )
    return summary


def _record_message(db, clock, contact_id: int, row: ActivityRow, run_hooks: bool):
    message = row.message
    message_id = (
        db["messages"]
        .insert({**message, "contact_id": contact_id, "at": row.at})
        .last_pk
    )
    data = {"message_id": message_id, "channel": message["channel"], **row.data}
    event = record_event(
        db,
        contact_id,
        row.event,
        clock=clock,
        at=row.at,
        data=data,
        source="import",
        run_hooks=run_hooks,
    )
    db["messages"].update(message_id, {"event_id": event.id})


# --- reading -----------------------------------------------------------------------


def _read_file(number, kind, path, workspace, region, summary) -> list[ActivityRow]:
    with open_input(path) as input_file:
        encoding = detect_encoding(input_file.path)
        delimiter = detect_delimiter(input_file.path, encoding)
        records = CsvRecords(input_file.path, encoding, delimiter, input_file.name)
        header = records.header()
        columns = map_columns(kind, header, input_file.name)
        orders = _date_orders(records, kind, columns, region)
        zone = workspace.timezone

        rows: list[ActivityRow] = []
        count = 0
        for row_number, cells in records:
            if is_blank(cells):
                continue
            count += 1
            if isinstance(cells, BrokenRecord):
                summary.rejected.append(
                    {
                        "file": input_file.name,
                        "row": row_number,
                        "column": header[cells.column]
                        if cells.column < len(header)
                        else "",
                        "reason": cells.reason,
                    }
                )
                continue
            values = {
                name: clean_cell(cells[index]) if index < len(cells) else ""
                for name, index in columns.items()
            }
            try:
                found = READERS[kind](values, orders, zone, region)
            except _RowProblem as problem:
                summary.rejected.append(
                    {
                        "file": input_file.name,
                        "row": row_number,
                        "column": problem.column,
                        "reason": problem.reason,
                    }
                )
                continue
            except _RowSkipped as skipped:
                summary.skipped.append(
                    {
                        "file": input_file.name,
                        "row": row_number,
                        "reason": skipped.reason,
                    }
                )
                continue
            for part, row in enumerate(found):
                row.order = (number, row_number, part)
                row.file, row.row = input_file.name, row_number
            rows += found
        summary.files.append({"kind": kind, "name": input_file.name, "rows": count})
    return rows


def map_columns(kind: str, header: list[str], name: str) -> dict[str, int]:
    """Field -> column index; refuses a file missing a column the kind needs."""
    keys = [_key(cell) for cell in header]
    used: set[int] = set()
    columns: dict[str, int] = {}
    for field_name, aliases in COLUMNS[kind].items():
        for alias in aliases:
            index = next(
                (i for i, k in enumerate(keys) if k == alias and i not in used), None
            )
            if index is not None:
                columns[field_name] = index
                used.add(index)
                break

    missing = [f for f in REQUIRED[kind] if f not in columns]
    if not any(f in columns for f in _CONTACT_FIELDS):
        missing.insert(0, "contact (or email, phone, name)")
    if missing:
        raise InputError(
            f"{name}: a {kind} file needs a column for {', '.join(missing)}",
            hint=f"its header is: {', '.join(header) or '(empty)'}",
        )
    return columns


def _date_orders(records, kind, columns, region) -> dict[str, str]:
    """Day/month order per date column, settled by the values (as leads do)."""
    votes = {name: DateOrderVote() for name in DATE_FIELDS[kind] if name in columns}
    if not votes:
        return {}
    for _, cells in records:
        for name, vote in votes.items():
            index = columns[name]
            if index < len(cells):
                vote.feed(cells[index])
    return {name: vote.decide(region)[0] for name, vote in votes.items()}


class _RowProblem(Exception):
    def __init__(self, column: str, reason: str):
        super().__init__(reason)
        self.column = column
        self.reason = reason


class _RowSkipped(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _person(values: dict[str, str], region: str) -> dict[str, str]:
    person: dict[str, str] = {}
    contact = values.get("contact", "")
    for column, raw in (
        ("contact", contact),
        ("email", values.get("email", "")),
        ("phone", values.get("phone", "")),
    ):
        if not raw:
            continue
        if "@" in raw:
            email = normalise_email(raw)
            if email.email:
                person.setdefault("email", email.email)
            continue
        phone = normalise_phone(raw, region)
        if phone.e164:
            person.setdefault("phone", phone.e164)
        elif column == "contact":
            person.setdefault("name", raw)
    if values.get("name"):
        person["name"] = values["name"]
    if not person:
        raise _RowProblem("contact", "no email, phone or name to find the person by")
    return person


def _when(values, orders, name, zone, *, required: bool) -> str | None:
    raw = values.get(name, "")
    if not raw:
        if required:
            raise _RowProblem(name, "empty")
        return None
    parsed = parse_date(raw, order=orders.get(name, "MDY"), zone=zone)
    if parsed.problem:
        raise _RowProblem(name, parsed.problem)
    moment = parsed.moment
    if moment is None and parsed.day is not None:
        moment = datetime.combine(parsed.day, time(0))
    if moment is None:
        raise _RowProblem(name, f"{raw} is not a date")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    return clocks.iso(moment)


def _read_message(values, orders, zone, region) -> list[ActivityRow]:
    person = _person(values, region)
    direction = _key(values.get("direction", ""))
    if direction in INBOUND_WORDS:
        inbound = True
    elif direction in OUTBOUND_WORDS:
        inbound = False
    else:
        raise _RowProblem(
            "direction", f"{values.get('direction')!r} is neither inbound nor outbound"
        )
    at = _when(values, orders, "timestamp", zone, required=True)
    channel_text = _key(values.get("channel", ""))
    if channel_text:
        channel = CHANNEL_WORDS.get(channel_text, channel_text)
    else:
        channel = "email" if "email" in person and "phone" not in person else "sms"
    data: dict[str, Any] = {}
    automated = truthy(values.get("automated", ""))
    if not inbound and automated is not None:
        data["automated"] = automated
    message = {
        "channel": channel,
        "direction": "inbound" if inbound else "outbound",
        "address": person.get("email") if channel == "email" else person.get("phone"),
        "body": values.get("body") or None,
        "status": "received" if inbound else "sent",
    }
    return [
        ActivityRow(
            at,
            (0, 0, 0),
            "messages",
            "",
            0,
            person,
            "message.received" if inbound else "message.sent",
            data,
            message,
        )
    ]


def _read_appointment(values, orders, zone, region) -> list[ActivityRow]:
    person = _person(values, region)
    status_text = _key(values.get("status", ""))
    status = STATUS_WORDS.get(status_text)
    if status is None:
        raise _RowProblem(
            "status",
            f"{values.get('status')!r} is not one of booked, "
            "completed, no_show, cancelled",
        )
    start = _when(values, orders, "start", zone, required=True)
    booked_at = _when(values, orders, "booked_at", zone, required=False)
    data: dict[str, Any] = {"starts_at": start}
    if values.get("id"):
        data["appointment_id"] = values["id"]
    if values.get("service"):
        data["service"] = values["service"]

    rows = [
        ActivityRow(
            booked_at or start,
            (0, 0, 0),
            "appointments",
            "",
            0,
            person,
            "appointment.booked",
            dict(data),
        )
    ]
    if status != "booked":
        # Limitation: the export says how it ended, not when that was noted, so
        # the outcome (a cancellation too) is dated at the start.
        rows.append(
            ActivityRow(
                start,
                (0, 0, 0),
                "appointments",
                "",
                0,
                person,
                f"appointment.{status}",
                dict(data),
            )
        )
    return rows


def _read_invoice(values, orders, zone, region) -> list[ActivityRow]:
    person = _person(values, region)
    status = _key(values.get("status", ""))
    if status in INVOICE_SKIP_WORDS:
        raise _RowSkipped(f"status {values.get('status')}: not paid")
    paid_at = _when(values, orders, "paid_at", zone, required=False)
    if paid_at is None:
        raise _RowSkipped("no paid date: not paid")
    amount = parse_money(values.get("amount", ""))
    if amount is None:
        raise _RowProblem("amount", f"{values.get('amount')!r} is not an amount")
    refund = status in INVOICE_REFUND_WORDS or amount < 0
    data: dict[str, Any] = {"amount": abs(amount)}
    if values.get("currency"):
        data["currency"] = values["currency"].upper()
    if values.get("id"):
        data["invoice_id"] = values["id"]
    return [
        ActivityRow(
            paid_at,
            (0, 0, 0),
            "invoices",
            "",
            0,
            person,
            "invoice.refunded" if refund else "invoice.paid",
            data,
        )
    ]


READERS = {
    "messages": _read_message,
    "appointments": _read_appointment,
    "invoices": _read_invoice,
}


# --- contacts ----------------------------------------------------------------------


class ContactResolver:
    """Finds the contact a row names (email, then phone, then a unique name).

    A person found nowhere becomes a new contact, so a later row naming them
    by the same email or phone lands on the same timeline.
    """

    def __init__(self, db, clock, region: str):
        self.db = db
        self.clock = clock
        self.region = region
        self.created = 0
        self._cache: dict[tuple[str, str], int] = {}

    def resolve(self, person: dict[str, str]) -> int:
        for key in ("email", "phone", "name"):
            value = person.get(key)
            if value and (key, value.lower()) in self._cache:
                return self._cache[(key, value.lower())]
        contact_id = self._find(person) or self._create(person)
        for key in ("email", "phone", "name"):
            if person.get(key):
                self._cache[(key, person[key].lower())] = contact_id
        return contact_id

    def _find(self, person: dict[str, str]) -> int | None:
        conn = self.db.conn
        if person.get("email"):
            row = conn.execute(
                "SELECT contact_id FROM contact_emails WHERE email = ?",
                [person["email"]],
            ).fetchone()
            if row:
                return row[0]
        if person.get("phone"):
            row = conn.execute(
                "SELECT min(contact_id) FROM contact_phones WHERE phone = ?",
                [person["phone"]],
            ).fetchone()
            if row and row[0]:
                return row[0]
        if person.get("name") and not person.get("email") and not person.get("phone"):
            rows = conn.execute(
                "SELECT id FROM contacts WHERE lower(display_name) = lower(?) LIMIT 2",
                [person["name"]],
            ).fetchall()
            if len(rows) == 1:
                return rows[0][0]
        return None

    def _create(self, person: dict[str, str]) -> int:
        now = clocks.now_iso(self.clock)
        name = person.get("name")
        first, _, last = (name or "").partition(" ")
        contact_id = (
            self.db["contacts"]
            .insert(
                {
                    "display_name": name or person.get("email") or person.get("phone"),
                    "first_name": first or None,
                    "last_name": last or None,
                    "email": person.get("email"),
                    "phone": person.get("phone"),
                    "created_at": now,
                    "updated_at": now,
                }
            )
            .last_pk
        )
        if person.get("email"):
            self.db["contact_emails"].insert(
                {
                    "contact_id": contact_id,
                    "email": person["email"],
                    "is_primary": 1,
                    "created_at": now,
                }
            )
        if person.get("phone"):
            self.db["contact_phones"].insert(
                {
                    "contact_id": contact_id,
                    "phone": person["phone"],
                    "is_primary": 1,
                    "created_at": now,
                }
            )
        self.created += 1
        return contact_id
