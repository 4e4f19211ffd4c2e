"""Events from scripts and cron: ``cxm events emit``.

An event names its contact by id, email or phone; with ``email``/``phone`` (and
a name) an unknown person is created first: with ``lead.created``, the way a
web form would, when the event is the person reaching out, and as a plain
contact (``contact.imported``) for the types in ``NOT_LEAD_TYPES``, such as an
opt-out or a bounce, so no new-lead follow-up starts. A full name alone is
split into first and last name the way the importer splits a name column; a
known contact's blank first or last name is filled from it, never replaced.
Each event commits with everything it causes (enrolments, exits) in one
transaction, so a line of JSON either happened or did not.
"""

from __future__ import annotations

import json
import logging
import math
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from cxm_cli import clock as clocks
from cxm_cli.contacts import (
    change_consent,
    find_contact,
    get_contact,
)
from cxm_cli.errors import CxmError, InputError, NotFound
from cxm_cli.events import record_event
from cxm_cli.importing.values import (
    fold_name,
    normalise_email,
    normalise_phone,
    parse_money,
    split_full_name,
)
from cxm_cli.store import write_transaction

log = logging.getLogger(__name__)

EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
# Types whose rows (messages, merges) only cxm itself can make.
RESERVED_TYPES = {
    "message.sent",
    "message.resent",
    "message.status",
    "contact.erased",
    "contact.merged",
}
LINE_FIELDS = {
    "type",
    "contact",
    "contact_id",
    "email",
    "phone",
    "name",
    "first_name",
    "last_name",
    "data",
    "at",
    "source",
}
# Event types that are not the person reaching out: an unknown person they name
# becomes a plain contact (``contact.imported``, as ``leads import
# --existing-contacts`` records one), never a lead, so no new-lead sequence greets
# them, and lead counts and the audit leave them out. Why each is here:
# - opted_out, opted_in: a consent change, not an inquiry; thanking someone who
#   just opted out "for getting in touch" would break the opt-out;
# - contact.imported, contact.updated: say the person is already a contact;
# - message.bounced, message.auto_reply, email.opened, email.clicked: written by
#   a mail server or a tracker, not by the person;
# - invoice.refunded, review.received, review.rated, feedback.received: money or
#   a verdict after the business was done: a customer, not a lead;
# - tag.added, tag.removed, stage.changed, visit.due, conversation.closed: the
#   team's or a tool's bookkeeping about someone already known elsewhere.
# Forms, messages, bookings and payments (invoice.paid) still make a lead: the
# person came to the business. So do custom types, as they always have.
NOT_LEAD_TYPES = frozenset(
    {
        "opted_out",
        "opted_in",
        "contact.imported",
        "contact.updated",
        "message.bounced",
        "message.auto_reply",
        "email.opened",
        "email.clicked",
        "invoice.refunded",
        "review.received",
        "review.rated",
        "feedback.received",
        "tag.added",
        "tag.removed",
        "stage.changed",
        "visit.due",
        "conversation.closed",
    }
)
# Event types whose ``amount`` is money that lifetime value and the audit add up.
MONEY_TYPES = {"invoice.paid", "invoice.refunded"}
# "USD 180", "180 eur": a currency code next to the number.
_CURRENCY_CODE = re.compile(
    r"^([A-Za-z]{3})\s*(?=[\d(+\-$€£¥.])|(?<=[\d)])\s*([A-Za-z]{3})$"
)
_AMOUNT_CHARS = re.compile(r"[\d.,+\-]+")
# Event data fields that hold a moment: read when the event comes in, so a typo
# is refused now rather than by the reminder step that waits on it later.
# Limitation: other data keys that hold times (``booked_at``, ``due_at``) are
# stored as given, unchecked; only these two are read and normalised.
TIME_FIELDS = ("starts_at", "ends_at")
# Largest id SQLite can store; a bigger number cannot name a contact.
_MAX_ID = 2**63 - 1


@dataclass
class EmitResult:
    event_id: int | None
    contact_id: int
    type: str
    created_contact: bool
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "contact_id": self.contact_id,
            "type": self.type,
            "created_contact": self.created_contact,
            "warnings": list(self.warnings),
        }


@dataclass
class Identity:
    """The email and phone that name a person, after checking both."""

    email: str | None
    phone: str | None
    warnings: list[str] = field(default_factory=list)
    # "312-555-0193 x5" is a switchboard line: kept, so it is never texted.
    extension: str | None = None


def check_identity(
    workspace,
    *,
    email: Any = None,
    phone: Any = None,
    email_field: str = "email",
    phone_field: str = "phone",
) -> Identity:
    """Validate the email and phone a caller gave for a person.

    An invalid value is refused with its field named, unless the other one
    is valid and identifies the person: then the bad one is dropped with a
    warning, because a form with a mistyped phone is still a lead. Phones are
    read like the importer reads them, in the workspace's region, so a number
    that cannot exist (+1 555 000 0000) never gets texted.
    """
    email_text = str(email).strip() if email not in (None, "") else ""
    phone_text = str(phone).strip() if phone not in (None, "") else ""
    if not email_text and not phone_text:
        raise InputError(f"give {email_field} or {phone_field} to name the person")

    email_problem = phone_problem = None
    checked_email = checked_phone = extension = None
    warnings: list[str] = []
    if email_text:
        result = normalise_email(email_text)
        checked_email, email_problem = result.email, result.problem
        if result.typo_hint:
            warnings.append(
                f"{email_field} {email_text!r}: did you mean {result.typo_hint}?"
            )
    if phone_text:
        result = normalise_phone(phone_text, workspace.phone_region)
        checked_phone, phone_problem = result.e164, result.problem
        extension = result.extension

    if email_problem and phone_problem:
        raise InputError(
            f"{email_field} {email_text!r}: {email_problem}; "
            f"{phone_field} {phone_text!r}: {phone_problem}"
        )
    if email_problem and not checked_phone:
        raise InputError(f"{email_field} {email_text!r}: {email_problem}")
    if phone_problem and not checked_email:
        raise InputError(
            f"{phone_field} {phone_text!r}: {phone_problem}",
            hint=f"numbers are read in region {workspace.phone_region}; "
            "write +<country code> for others",
        )
    if email_problem:
        warnings.append(f"{email_field} dropped: {email_problem}")
    if phone_problem:
        warnings.append(f"{phone_field} dropped: {phone_problem}")
    return Identity(
        checked_email, checked_phone, warnings, extension if checked_phone else None
    )


def check_event_data(
    event_type: str, data: dict[str, Any], *, timezone: str = "UTC"
) -> dict[str, Any]:
    """``data`` with its times and money read and normalised.

    ``starts_at``/``ends_at`` become stored UTC text (a time written without
    an offset is read in ``timezone``, the workspace's); an invoice's
    ``$1,204.50`` becomes 1204.5 so lifetime value and the audit can add it
    up. A value that cannot be read is refused, naming the field, and so is a
    payment of zero or less (a refund is ``invoice.refunded``). A NaN or
    infinite number becomes its text, so the stored data stays valid JSON.
    """
    checked = {key: _finite(value) for key, value in data.items()}
    for name in TIME_FIELDS:
        if name in checked and checked[name] is not None:
            checked[name] = parse_event_time(f"data.{name}", checked[name], timezone)
    if event_type not in MONEY_TYPES or data.get("amount") in (None, ""):
        return checked
    amount, currency = parse_amount(checked["amount"])
    if event_type == "invoice.paid" and amount <= 0:
        # The pointer to invoice.refunded is in the message, not only the hint:
        # JSON lines and POST /events report the message alone.
        raise InputError(
            f"data.amount: {data['amount']!r}: invoice.paid needs an amount above "
            "0; record money going back as invoice.refunded",
            hint="give the refund as a positive amount: cxm events emit "
            "invoice.refunded --contact ID --data amount=50",
        )
    if event_type == "invoice.refunded" and amount <= 0:
        # Lifetime value and the audit subtract refunds: a negative one would
        # be added back.
        raise InputError(
            f"data.amount: {data['amount']!r}: a refund is the amount given back, "
            "above 0"
        )
    checked["amount"] = amount
    if currency and not checked.get("currency"):
        checked["currency"] = currency
    return checked


def parse_event_time(field_name: str, value: Any, timezone: str = "UTC") -> str:
    """An ISO-8601 time as stored UTC text; naive times are in ``timezone``."""
    hint = "write an ISO-8601 time such as 2026-03-05T15:00:00Z or 2026-03-05T09:00"
    text = value.strip() if isinstance(value, str) else ""
    # A date alone has no time of day, and a reminder needs one.
    if len(text) <= 10:
        raise InputError(f"{field_name}: {value!r} is not a date and time", hint=hint)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(
            f"{field_name}: {value!r} is not a valid date and time ({exc})",
            hint=hint,
        ) from exc
    if moment.tzinfo is None:
        zone = ZoneInfo(timezone)
        local = moment.replace(tzinfo=zone)
        # A wall-clock time skipped by a daylight-saving jump does not exist.
        if local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != moment:
            raise InputError(
                f"{field_name}: {value!r} does not exist in {timezone} "
                "(clocks jump past it)",
                hint="give the time with its UTC offset",
            )
        moment = local
    return clocks.iso(moment)


def parse_contact_id(value: Any, field_name: str = "contact_id") -> int:
    """A contact id given as JSON: a whole number SQLite can hold."""
    problem = InputError(f"{field_name} must be a whole number")
    if isinstance(value, bool):
        raise problem
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise problem
        value = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or not 0 < value <= _MAX_ID:
        raise problem
    return value


def match_person(db, email: str | None, phone: str | None, *, phone_field: str):
    """The contact a checked email or phone names, or None for a new person.

    An email names one person. A phone names its holder only as the importer
    matches: when the event gives no email, or the holder has none (a new
    email on a household phone is a new person). A phone shared by several
    such contacts names nobody in particular, so it is refused rather than
    the event landing on whichever of them came first.
    """
    from cxm_cli.inbound import contact_by_address

    found = contact_by_address(db, email=email) if email else None
    if found or not phone:
        return found
    owners = [
        row["contact_id"]
        for row in db.query(
            "SELECT DISTINCT p.contact_id FROM contact_phones p "
            "WHERE p.phone = ? AND (? IS NULL OR NOT EXISTS (SELECT 1 FROM "
            "contact_emails e WHERE e.contact_id = p.contact_id)) "
            "ORDER BY p.contact_id",
            [phone, email],
        )
    ]
    if len(owners) > 1:
        ids = ", ".join(str(owner) for owner in owners)
        raise InputError(
            f"{phone_field} {phone} belongs to several contacts ({ids})",
            hint="name the contact by id or email instead",
        )
    return get_contact(db, owners[0]) if owners else None


def parse_amount(value: Any) -> tuple[int | float, str | None]:
    """A money value as a number, and the currency code written with it."""
    problem = InputError(
        f"data.amount: {value!r} is not an amount of money",
        hint="write a number such as 180, 1204.50 or $1,204.50",
    )
    if isinstance(value, bool):
        raise problem
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise problem
        return _tidy(float(value)), None

    text = unicodedata.normalize("NFKC", str(value)).strip()
    currency = None
    code = _CURRENCY_CODE.search(text)
    if code:
        currency = (code.group(1) or code.group(2)).upper()
        text = text[: code.start()] + text[code.end() :]
    # Currency symbols, spaces and accounting brackets are not part of the number.
    bare = "".join(
        ch
        for ch in text
        if unicodedata.category(ch) != "Sc" and not ch.isspace() and ch not in "()'"
    )
    if not _AMOUNT_CHARS.fullmatch(bare) or not any(ch.isdigit() for ch in bare):
        raise problem
    amount = parse_money(text)
    if amount is None or not math.isfinite(amount):
        raise problem
    return _tidy(amount), currency


def _tidy(amount: float) -> int | float:
    rounded = round(amount, 2)
    return int(rounded) if rounded.is_integer() else rounded


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities (at any depth) turned into their text.

    JSON has no NaN or Infinity: SQLite's ``json_valid()`` is 0 for a row
    holding one, ``json_extract`` fails on it before SQLite 3.42 (JSON5), and
    jq or a browser's ``JSON.parse`` refuse an export of it. Callers that
    still have what was typed keep that text (:func:`loads_event_json`); this
    is the net for ones that hand over a float.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _finite_float(text: str) -> float | str:
    number = float(text)
    return number if math.isfinite(number) else text


def loads_event_json(text: str | bytes) -> Any:
    """JSON as an event's sender wrote it, with no NaN or infinite numbers.

    Python's json reads the non-standard ``NaN``/``Infinity`` and turns
    ``1e400`` into infinity. Such values are converted, not refused: each is
    kept as the text that was written (``"NaN"``, ``"1e400"``), the same as
    ``--data a=NaN``, so one bad number does not cost the whole event, and a
    field that must be a number (``data.amount``) still refuses it by name.
    """
    return json.loads(text, parse_constant=str, parse_float=_finite_float)


def parse_data_options(values: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values that read as JSON (120, true) keep their type.

    ``NaN``, ``Infinity`` and ``1e400`` (too big for a float) stay text.
    """
    data: dict[str, Any] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--data {item!r}: write KEY=VALUE")
        try:
            parsed = loads_event_json(value)
        except ValueError:
            parsed = value
        if isinstance(parsed, str) and not value.lstrip().startswith('"'):
            # A bare NaN or 1e400, read as text: kept exactly as typed.
            parsed = value
        if isinstance(parsed, (list, dict)) and not value.lstrip().startswith(
            ("[", "{")
        ):
            parsed = value
        data[key.strip()] = parsed
    return data


def emit_event(
    workspace,
    db,
    clock,
    event_type: str,
    *,
    contact: str | None = None,
    email: str | None = None,
    phone: str | None = None,
    name: str | None = None,
    first_name: str | None = None,
    last_name: str | None = None,
    data: dict[str, Any] | None = None,
    at: str | None = None,
    source: str = "cli",
) -> EmitResult:
    """Record one event for a contact, creating the contact when asked to."""
    if event_type is None or event_type == "":
        raise InputError("no event type: give one such as form.submitted")
    if not isinstance(event_type, str) or not EVENT_TYPE.fullmatch(event_type):
        raise InputError(f"{event_type!r} is not an event type such as form.submitted")
    if event_type in RESERVED_TYPES:
        raise InputError(f"{event_type} is recorded by cxm itself, not by scripts")
    data = check_event_data(event_type, dict(data or {}), timezone=workspace.timezone)
    at_text = None
    if at:
        try:
            at_text = clocks.iso(clocks.parse(str(at)))
        except ValueError as exc:
            raise InputError(f"at: cannot read {at!r} as a time") from exc

    if event_type == "message.received":
        return _inbound(
            workspace,
            db,
            clock,
            contact,
            email,
            phone,
            name,
            first_name,
            last_name,
            data,
            at_text,
            source,
        )

    identity = _identity(workspace, contact, email, phone)
    with write_transaction(db):
        contact_id, created = _contact(
            workspace,
            db,
            clock,
            contact,
            identity,
            name,
            first_name,
            last_name,
            source,
            event_type,
        )
        if event_type in ("opted_out", "opted_in"):
            result = _consent(
                db, clock, contact_id, event_type, data, at_text, source, created
            )
        elif event_type == "lead.created" and created:
            # Creating the contact recorded it already; never twice.
            result = EmitResult(None, contact_id, event_type, True)
        else:
            event = record_event(
                db,
                contact_id,
                event_type,
                clock=clock,
                data=data,
                at=at_text,
                source=source,
            )
            result = EmitResult(event.id, contact_id, event_type, created)
    result.warnings = identity.warnings if identity else []
    log.info("event %s %s for contact %s", result.event_id, event_type, contact_id)
    return result


def _identity(workspace, reference, email, phone) -> Identity | None:
    """The checked email and phone, when they (not an id) name the person."""
    if reference:
        return None
    if not email and not phone:
        raise InputError("name the contact: --contact ID, or --email / --phone")
    return check_identity(workspace, email=email, phone=phone)


def _contact(
    workspace, db, clock, reference, identity, name, first, last, source, event_type
):
    if reference:
        return find_contact(db, str(reference), region=workspace.phone_region)[
            "id"
        ], False
    found, created = find_or_create_person(
        db,
        clock,
        identity,
        event_type=event_type,
        name=name,
        first_name=first,
        last_name=last,
        source=source,
    )
    return found["id"], created


def find_or_create_person(
    db,
    clock,
    identity: Identity,
    *,
    event_type: str,
    name: Any = None,
    first_name: Any = None,
    last_name: Any = None,
    source: str,
    phone_field: str = "phone",
) -> tuple[dict[str, Any], bool]:
    """The contact a checked identity names, made first if unknown; and if it was.

    A known contact gets its blank names filled (never replaced). An unknown
    person becomes a lead (``lead.created``) unless ``event_type`` is in
    ``NOT_LEAD_TYPES``; then a plain contact, whose origin on the timeline is
    ``contact.imported``. Call inside the event's write transaction.
    """
    from cxm_cli.inbound import create_minimal_contact

    first, last = person_names(name, first_name, last_name)
    found = match_person(db, identity.email, identity.phone, phone_field=phone_field)
    if found:
        fill_blank_names(db, clock, found, first, last)
        return found, False

    details = {
        "email": identity.email,
        "phone": identity.phone,
        "extension": identity.extension,
        "first_name": first,
        "last_name": last,
        "display_name": str(name).strip() or None if name else None,
        "source": source,
    }
    if event_type == "contact.imported":
        # The event itself is the contact's origin: not recorded twice.
        contact_id = create_minimal_contact(db, clock, **details, origin=None)
    elif event_type in NOT_LEAD_TYPES:
        contact_id = create_minimal_contact(
            db,
            clock,
            **details,
            origin="contact.imported",
            event_data={"event": event_type},
        )
    else:
        contact_id = create_minimal_contact(db, clock, **details)
    return get_contact(db, contact_id), True


def person_names(name: Any, first: Any, last: Any) -> tuple[str | None, str | None]:
    """(first, last) for the person an event names.

    Given halves win; a full name alone is split as the importer splits a name
    column (``Sam Reed``, ``Reed, Sam``), so templates can greet them by name.
    """
    first_text = str(first).strip() if first else ""
    last_text = str(last).strip() if last else ""
    full = str(name).strip() if name else ""
    if not first_text and not last_text and full:
        first_text, last_text = split_full_name(full)
    return first_text or None, last_text or None


def fill_blank_names(
    db, clock, contact: dict[str, Any], first: str | None, last: str | None
) -> list[str]:
    """Fill a known contact's blank first or last name; returns the fields set.

    A name already there is never replaced. A blank half is filled only when
    the event gives no other half, or the contact's other half is blank or
    agrees with it (the importer's rule), so "Sam Reed" never turns a contact
    whose last name is Smith into "Sam Smith".
    """
    given = {"first_name": first, "last_name": last}
    changes: dict[str, str] = {}
    for field_name, other in (("first_name", "last_name"), ("last_name", "first_name")):
        if (contact.get(field_name) or "").strip() or not given[field_name]:
            continue
        known_other = (contact.get(other) or "").strip()
        if (
            known_other
            and given[other]
            and fold_name(known_other) != fold_name(given[other])
        ):
            continue
        changes[field_name] = given[field_name]
    if not changes:
        return []
    if not (contact.get("display_name") or "").strip():
        names = {**contact, **changes}
        changes["display_name"] = " ".join(
            part for part in (names["first_name"], names["last_name"]) if part
        )
    db["contacts"].update(
        contact["id"], {**changes, "updated_at": clocks.now_iso(clock)}
    )
    # Field names only: the log is no place for a person's name.
    log.info(
        "contact %s: blank %s filled from an event", contact["id"], sorted(changes)
    )
    return sorted(changes)


def _consent(db, clock, contact_id, event_type, data, at_text, source, created):
    channel = data.get("channel")
    if channel not in ("email", "sms"):
        raise InputError(f"{event_type} needs --data channel=sms (or email)")
    detail = {k: v for k, v in data.items() if k != "channel"}
    change_consent(
        db,
        contact_id,
        channel,
        event_type,
        clock=clock,
        source=source,
        at=at_text,
        detail=detail,
    )
    row = db.execute(
        "SELECT id FROM events WHERE contact_id = ? AND type = ? "
        "ORDER BY id DESC LIMIT 1",
        [contact_id, event_type],
    ).fetchone()
    return EmitResult(row[0] if row else None, contact_id, event_type, created)


def _inbound(
    workspace,
    db,
    clock,
    contact,
    email,
    phone,
    name,
    first,
    last,
    data,
    at_text,
    source,
) -> EmitResult:
    from cxm_cli.inbound import record_inbound

    identity = _identity(workspace, contact, email, phone)
    with write_transaction(db):
        contact_id, created = _contact(
            workspace,
            db,
            clock,
            contact,
            identity,
            name,
            first,
            last,
            source,
            "message.received",
        )
    text = data.pop("text", None) or data.pop("body", None)
    channel = str(data.pop("channel", None) or "sms")
    result = record_inbound(
        workspace,
        db,
        clock,
        channel=channel,
        text=text,
        contact_id=contact_id,
        at=at_text,
        source=source,
        data=data or None,
    )
    return EmitResult(
        result.event_id,
        contact_id,
        "message.received",
        created,
        identity.warnings if identity else [],
    )


def emit_lines(
    workspace, db, clock, stream: TextIO, *, source: str = "cli"
) -> tuple[list[EmitResult], list[str]]:
    """Record one event per JSON line; bad lines are reported, good ones kept."""
    results: list[EmitResult] = []
    problems: list[str] = []
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            item = loads_event_json(line)
        except ValueError as exc:
            problems.append(f"line {number}: not JSON ({exc.msg})")
            continue
        if not isinstance(item, dict):
            problems.append(f"line {number}: must be a JSON object")
            continue
        unknown = sorted(set(item) - LINE_FIELDS)
        if unknown:
            problems.append(f"line {number}: unknown field(s) {', '.join(unknown)}")
            continue
        reference = item.get("contact_id") or item.get("contact")
        person = reference if isinstance(reference, dict) else {}
        if person:
            reference = None
        data = item.get("data") or {}
        if not isinstance(data, dict):
            problems.append(f"line {number}: data must be an object")
            continue
        try:
            result = emit_event(
                workspace,
                db,
                clock,
                item.get("type"),
                contact=str(reference) if reference is not None else None,
                email=item.get("email") or person.get("email"),
                phone=item.get("phone") or person.get("phone"),
                name=item.get("name") or person.get("name"),
                first_name=item.get("first_name") or person.get("first_name"),
                last_name=item.get("last_name") or person.get("last_name"),
                data=data,
                at=item.get("at"),
                source=str(item.get("source") or source),
            )
        except (NotFound, CxmError) as exc:
            problems.append(f"line {number}: {exc.message}")
            continue
        result.warnings = [f"line {number}: {text}" for text in result.warnings]
        results.append(result)
    return results, problems
