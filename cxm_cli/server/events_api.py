"""``POST /events``: web forms and booking tools telling cxm what happened.

Authenticated by a per-workspace bearer token (``CXM_EVENTS_TOKEN`` in
``.env``, or the variable named by ``[server] events_token_env``). The body is
JSON::

    {"type": "form.submitted",
     "contact": {"email": "...", "phone": "...", "first_name": "...",
                 "last_name": "...", "name": "..."},      # or "contact_id": 12
     "data": {"form": "contact-us", "message": "..."},
     "at": "2026-03-02T15:00:00Z",                        # optional
     "source": "website",                                 # optional
     "idempotency_key": "form-8812"}                      # optional

The contact is found by email, then phone, and created when neither matches:
with ``lead.created``, or as a plain contact (``contact.imported``) for types
that are not the person reaching out (an opt-out, a bounce: see
``event_intake.NOT_LEAD_TYPES``), the same as ``cxm events emit``. A phone
shared by several contacts is refused unless the email or ``contact_id`` names
one of them. ``starts_at`` and ``ends_at`` in ``data`` are checked and stored
as UTC (no offset: the workspace's time zone); an ``invoice.paid`` amount must
be above zero. ``NaN``, ``Infinity`` and ``1e400`` anywhere in the body are
kept as the text written, as JSON has no such numbers. A repeated
``idempotency_key`` (or ``Idempotency-Key`` header) returns the first answer
and records nothing new.
"""

from __future__ import annotations

import hmac
import logging
import re
from typing import Any

from flask import Blueprint, jsonify, request

from cxm_cli import clock as clocks
from cxm_cli.contacts import change_consent, get_contact, inherit_phone_opt_out
from cxm_cli.errors import CxmError, InputError
from cxm_cli.event_intake import (
    check_event_data,
    check_identity,
    find_or_create_person,
    loads_event_json,
    parse_contact_id,
)
from cxm_cli.events import record_event
from cxm_cli.inbound import record_inbound
from cxm_cli.server import current_clock, current_db, current_workspace
from cxm_cli.store import fetch_one, write_transaction

log = logging.getLogger(__name__)

blueprint = Blueprint("events_api", __name__)

DEFAULT_TOKEN_ENV = "CXM_EVENTS_TOKEN"
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
# Types only cxm itself records: they refer to rows a caller cannot make.
_RESERVED_TYPES = {
    "message.sent",
    "message.resent",
    "message.status",
    "message.auto_reply",
    "contact.erased",
    "contact.merged",
    "lead.created",
}


def _token_problem() -> tuple[str, int] | None:
    workspace = current_workspace()
    variable = workspace.setting("server.events_token_env", DEFAULT_TOKEN_ENV)
    expected = workspace.secret(variable)
    if not expected:
        return f"POST /events is off: set {variable} in .env", 403
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), expected.encode()
    ):
        return "a valid bearer token is required", 401
    return None


def _refuse(message: str, status: int = 400):
    response = jsonify({"error": message})
    response.status_code = status
    return response


@blueprint.post("/events")
def post_event():
    problem = _token_problem()
    if problem:
        return _refuse(*problem)
    body = _read_body()
    if not isinstance(body, dict):
        return _refuse("the body must be a JSON object")
    try:
        answer, status = _handle(body)
    except CxmError as exc:
        return _refuse(exc.message)
    return jsonify(answer), status


def _read_body() -> Any:
    """The JSON body, or None when there is none or it cannot be read.

    Not ``request.get_json``: Flask's reader lets NaN and Infinity through,
    and SQLite's json functions call a row holding them invalid.
    """
    if not request.is_json:
        return None
    try:
        return loads_event_json(request.get_data())
    except ValueError:
        return None


def _handle(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    event_type = body.get("type")
    if not isinstance(event_type, str) or not _EVENT_TYPE.fullmatch(event_type):
        raise InputError("type must be an event name such as form.submitted")
    if event_type in _RESERVED_TYPES:
        raise InputError(f"type {event_type} is recorded by cxm itself")
    data = body.get("data") or {}
    if not isinstance(data, dict):
        raise InputError("data must be a JSON object")
    workspace = current_workspace()
    data = check_event_data(event_type, data, timezone=workspace.timezone)
    at = body.get("at")
    if at is not None:
        try:
            at = clocks.iso(clocks.parse(str(at)))
        except ValueError as exc:
            raise InputError(f"at: cannot read time {at!r}") from exc
    source = str(body.get("source") or "web")
    key = body.get("idempotency_key") or request.headers.get("Idempotency-Key")

    db, clock = current_db(), current_clock()
    warnings = _identity_warnings(workspace, body)
    if event_type == "message.received":
        answer, status = _inbound_message(
            workspace, db, clock, body, data, at, source, key
        )
        return {**answer, "warnings": warnings}, status

    with write_transaction(db):
        if key:
            seen = fetch_one(db, "SELECT * FROM event_keys WHERE key = ?", [str(key)])
            if seen:
                return {
                    "contact_id": seen["contact_id"],
                    "event_id": seen["event_id"],
                    "created_contact": False,
                    "duplicate": True,
                    "warnings": warnings,
                }, 200
        contact_id, created = _find_or_create_contact(
            workspace, db, clock, body, source, event_type
        )

        if event_type in ("opted_out", "opted_in"):
            channel = data.get("channel")
            if channel not in ("email", "sms"):
                raise InputError("data.channel must be email or sms")
            changed = change_consent(
                db,
                contact_id,
                channel,
                event_type,
                clock=clock,
                source=source,
                at=at,
                detail={k: v for k, v in data.items() if k != "channel"},
            )
            row = fetch_one(
                db,
                "SELECT id FROM events WHERE contact_id = ? AND type = ? "
                "ORDER BY id DESC LIMIT 1",
                [contact_id, event_type],
            )
            event_id = row["id"] if changed and row else None
        else:
            if event_type == "form.submitted":
                data = {"source": source, **data}
            event_id = record_event(
                db, contact_id, event_type, clock=clock, data=data, at=at, source=source
            ).id
        if key:
            db["event_keys"].insert(
                {
                    "key": str(key),
                    "event_id": event_id,
                    "contact_id": contact_id,
                    "created_at": clocks.now_iso(clock),
                }
            )
    log.info("event %s %s for contact %s", event_id, event_type, contact_id)
    return {
        "contact_id": contact_id,
        "event_id": event_id,
        "created_contact": created,
        "duplicate": False,
        "warnings": warnings,
    }, 201


def _inbound_message(workspace, db, clock, body, data, at, source, key):
    """A chat widget or booking tool passing on what the person wrote."""
    with write_transaction(db):
        contact_id, created = _find_or_create_contact(
            workspace, db, clock, body, source, "message.received"
        )
    result = record_inbound(
        workspace,
        db,
        clock,
        channel=str(data.get("channel") or "chat"),
        text=data.get("text"),
        subject=data.get("subject"),
        contact_id=contact_id,
        provider_id=str(key) if key else None,
        at=at,
        source=source,
    )
    answer = {
        "contact_id": result.contact_id,
        "event_id": result.event_id,
        "message_id": result.message_id,
        "created_contact": created,
        "duplicate": result.duplicate,
    }
    return answer, 200 if result.duplicate else 201


def _find_or_create_contact(
    workspace, db, clock, body, source, event_type
) -> tuple[int, bool]:
    if body.get("contact_id") is not None:
        return get_contact(db, parse_contact_id(body["contact_id"]))["id"], False

    person = _person(body)
    identity = _checked_identity(workspace, person)
    found, created = find_or_create_person(
        db,
        clock,
        identity,
        event_type=event_type,
        name=person.get("name"),
        first_name=person.get("first_name"),
        last_name=person.get("last_name"),
        source=source,
        phone_field="contact.phone",
    )
    # A known contact's name is never replaced by a form (a blank one is
    # filled), but a phone it did not have yet is added.
    if not created:
        _add_missing_phone(db, clock, found["id"], identity.phone, identity.extension)
    return found["id"], created


def _add_missing_phone(
    db, clock, contact_id: int, phone: str | None, extension: str | None = None
) -> None:
    if not phone:
        return
    known = fetch_one(
        db,
        "SELECT 1 AS x FROM contact_phones WHERE contact_id = ? AND phone = ?",
        [contact_id, phone],
    )
    if not known:
        db["contact_phones"].insert(
            {
                "contact_id": contact_id,
                "phone": phone,
                "extension": extension,
                "is_primary": 0,
                "created_at": clocks.now_iso(clock),
            }
        )
        inherit_phone_opt_out(db, contact_id, phone, clock=clock)


def _person(body) -> dict[str, Any]:
    person = body.get("contact")
    if not isinstance(person, dict):
        raise InputError("give contact (with email or phone) or contact_id")
    return person


def _checked_identity(workspace, person: dict[str, Any]):
    return check_identity(
        workspace,
        email=person.get("email"),
        phone=person.get("phone"),
        email_field="contact.email",
        phone_field="contact.phone",
    )


def _identity_warnings(workspace, body) -> list[str]:
    """What was dropped from the person's details (checked before any write)."""
    if body.get("contact_id") is not None:
        return []
    return _checked_identity(workspace, _person(body)).warnings
