"""Events from scripts and cron: ``cxm events emit``.

An event names its contact by id, email or phone; with ``email``/``phone`` (and
a name) an unknown person is created first, with ``lead.created``, the way a
web form would. Each event commits with everything it causes (enrolments,
exits) in one transaction, so a line of JSON either happened or did not.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, TextIO

from cxm_cli import clock as clocks
from cxm_cli.contacts import find_contact, normalise_phone_loosely, set_consent
from cxm_cli.errors import CxmError, InputError, NotFound
from cxm_cli.events import record_event
from cxm_cli.store import write_transaction

log = logging.getLogger(__name__)

EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
# Types whose rows (messages, merges) only cxm itself can make.
RESERVED_TYPES = {"message.sent", "message.status", "contact.erased", "contact.merged"}
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


@dataclass
class EmitResult:
    event_id: int | None
    contact_id: int
    type: str
    created_contact: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "contact_id": self.contact_id,
            "type": self.type,
            "created_contact": self.created_contact,
        }


def parse_data_options(values: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values that read as JSON (120, true) keep their type."""
    data: dict[str, Any] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--data {item!r}: write KEY=VALUE")
        try:
            parsed = json.loads(value)
        except ValueError:
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
    if not isinstance(event_type, str) or not EVENT_TYPE.fullmatch(event_type):
        raise InputError(f"{event_type!r} is not an event type such as form.submitted")
    if event_type in RESERVED_TYPES:
        raise InputError(f"{event_type} is recorded by cxm itself, not by scripts")
    data = dict(data or {})
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

    with write_transaction(db):
        contact_id, created = _contact(
            workspace,
            db,
            clock,
            contact,
            email,
            phone,
            name,
            first_name,
            last_name,
            source,
        )
        if event_type in ("opted_out", "opted_in"):
            return _consent(
                db, clock, contact_id, event_type, data, at_text, source, created
            )
        if event_type == "lead.created" and created:
            # Creating the contact recorded it already; never twice.
            return EmitResult(None, contact_id, event_type, True)
        event = record_event(
            db,
            contact_id,
            event_type,
            clock=clock,
            data=data,
            at=at_text,
            source=source,
        )
    log.info("event %s %s for contact %s", event.id, event_type, contact_id)
    return EmitResult(event.id, contact_id, event_type, created)


def _contact(workspace, db, clock, reference, email, phone, name, first, last, source):
    if reference:
        return find_contact(db, str(reference), region=workspace.phone_region)[
            "id"
        ], False
    if not email and not phone:
        raise InputError("name the contact: --contact ID, or --email / --phone")
    from cxm_cli.inbound import contact_by_address, create_minimal_contact

    email_norm = _email(email) if email else None
    phone_norm = _phone(workspace, phone) if phone else None
    found = contact_by_address(db, email=email_norm) if email_norm else None
    found = found or (contact_by_address(db, phone=phone_norm) if phone_norm else None)
    if found:
        return found["id"], False
    contact_id = create_minimal_contact(
        db,
        clock,
        email=email_norm,
        phone=phone_norm,
        first_name=first,
        last_name=last,
        display_name=name,
        source=source,
    )
    return contact_id, True


def _email(value: str) -> str:
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(str(value), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise InputError(f"email {value!r}: {exc}") from exc


def _phone(workspace, value: str) -> str:
    phone = normalise_phone_loosely(str(value), workspace.phone_region)
    if phone is None:
        raise InputError(f"phone {value!r} is not a phone number")
    return phone


def _consent(db, clock, contact_id, event_type, data, at_text, source, created):
    channel = data.get("channel")
    if channel not in ("email", "sms"):
        raise InputError(f"{event_type} needs --data channel=sms (or email)")
    detail = {k: v for k, v in data.items() if k != "channel"}
    set_consent(
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

    with write_transaction(db):
        contact_id, created = _contact(
            workspace, db, clock, contact, email, phone, name, first, last, source
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
    return EmitResult(result.event_id, contact_id, "message.received", created)


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
            item = json.loads(line)
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
            results.append(
                emit_event(
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
            )
        except (NotFound, CxmError) as exc:
            problems.append(f"line {number}: {exc.message}")
    return results, problems
