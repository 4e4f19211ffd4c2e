"""One person's story, oldest first: how they found the business and since.

The timeline is the contact's events joined with the messages they mention, so
a message shows its words, direction, thread and current delivery status next
to the event that recorded it. ``--json`` output is the same structure as
:func:`build_timeline` returns::

    {"contact": {...}, "origin": {"source", "first_event", "first_at"},
     "entries": [{"at", "type", "channel", "direction", "status", "thread",
                  "summary", "event_id", "message_id", "source", "data"}, ...]}
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cxm_cli import clock as clocks
from cxm_cli.contacts import contact_tags, get_contact
from cxm_cli.errors import InputError
from cxm_cli.store import loads

SUMMARY_LENGTH = 90
_DURATION = re.compile(r"(\d+)\s*(m|min|h|d|w)", re.IGNORECASE)
_UNIT_SECONDS = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``90m``, ``2h``, ``3d``, ``1w`` or combinations such as ``1d12h``."""
    cleaned = text.strip().lower()
    parts = _DURATION.findall(cleaned)
    if not parts or _DURATION.sub("", cleaned).strip():
        raise InputError(
            f"cannot read duration {text!r}", hint="use e.g. 30m, 2h, 3d or 1w"
        )
    seconds = sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    return timedelta(seconds=seconds)


def parse_since(text: str, clock, *, timezone: str = "UTC") -> str:
    """A stored timestamp from ``7d`` (ago), a date, or an ISO time."""
    cleaned = text.strip()
    if _DURATION.fullmatch(cleaned) or re.fullmatch(r"(\d+\s*[a-z]+)+", cleaned):
        return clocks.iso(clock.now() - parse_duration(cleaned))
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", cleaned):
            local = datetime.fromisoformat(cleaned).replace(tzinfo=ZoneInfo(timezone))
            return clocks.iso(local)
        return clocks.iso(clocks.parse(cleaned))
    except ValueError as exc:
        raise InputError(
            f"cannot read --since {text!r}",
            hint="use a duration (7d), a date (2026-03-01) or an ISO time",
        ) from exc


def build_timeline(
    db,
    contact_id: int,
    *,
    since: str | None = None,
    channel: str | None = None,
) -> dict[str, Any]:
    contact = get_contact(db, contact_id)
    messages = {
        row["id"]: row
        for row in db.query(
            "SELECT * FROM messages WHERE contact_id = ? ORDER BY at, id", [contact_id]
        )
    }
    events = list(
        db.query(
            "SELECT * FROM events WHERE contact_id = ? ORDER BY at, id", [contact_id]
        )
    )

    entries: list[dict[str, Any]] = []
    shown_messages: set[int] = set()
    for event in events:
        data = loads(event["data"], {})
        message = messages.get(data.get("message_id")) if "message_id" in data else None
        if message is not None and event["type"] in (
            "message.sent",
            "message.received",
        ):
            shown_messages.add(message["id"])
        entries.append(_entry(event, data, message))
    # A message whose event never got written (a send that failed before it)
    # still belongs on the timeline.
    for message in messages.values():
        if message["id"] not in shown_messages and message["event_id"] is None:
            entries.append(_message_only_entry(message))
    entries.sort(key=lambda entry: (entry["at"], entry["event_id"] or 0))

    origin = _origin(contact, events)
    if since:
        entries = [entry for entry in entries if entry["at"] >= since]
    if channel:
        entries = [entry for entry in entries if entry["channel"] == channel]

    return {
        "contact": {
            "id": contact["id"],
            "name": contact_name(contact),
            "email": contact["email"],
            "phone": contact["phone"],
            "source": contact["source"],
            "tags": contact_tags(db, contact_id),
            "created_at": contact["created_at"],
        },
        "origin": origin,
        "entries": entries,
    }


def contact_name(contact: dict) -> str:
    name = contact.get("display_name") or " ".join(
        part for part in (contact.get("first_name"), contact.get("last_name")) if part
    )
    return name or contact.get("email") or contact.get("phone") or f"#{contact['id']}"


def _origin(contact: dict, events: list[dict]) -> dict[str, Any]:
    first = events[0] if events else None
    source = contact.get("source")
    for event in events:
        if event["type"] in ("lead.created", "form.submitted"):
            source = source or loads(event["data"], {}).get("source")
            break
    return {
        "source": source,
        "first_event": first["type"] if first else None,
        "first_at": first["at"] if first else contact["created_at"],
    }


def _entry(event: dict, data: dict[str, Any], message: dict | None) -> dict[str, Any]:
    entry = {
        "at": event["at"],
        "type": event["type"],
        "channel": data.get("channel"),
        "direction": None,
        "status": None,
        "thread": None,
        "summary": _summarise(event["type"], data, message),
        "event_id": event["id"],
        "message_id": data.get("message_id"),
        "source": event["source"],
        "data": data,
    }
    if message is not None:
        entry["channel"] = message["channel"]
        entry["direction"] = message["direction"]
        entry["thread"] = _thread_of(message)
        if event["type"] in ("message.sent", "message.received", "message.auto_reply"):
            entry["status"] = message["status"]
            entry["body"] = message["body"]
            entry["subject"] = message["subject"]
            entry["address"] = message["address"]
        if event["type"] == "message.status":
            entry["status"] = data.get("status")
    return entry


def _message_only_entry(message: dict) -> dict[str, Any]:
    inbound = message["direction"] == "inbound"
    if inbound:
        kind = "message.received"
    elif message["status"] == "sending":
        # Recorded before its send; still so when a runner died in between.
        kind = "message.sending"
    elif message["status"] in ("failed", "refused", "skipped"):
        kind = "message.failed"
    else:
        kind = "message.sent"
    return {
        "at": message["at"],
        "type": kind,
        "channel": message["channel"],
        "direction": message["direction"],
        "status": message["status"],
        "thread": _thread_of(message),
        "summary": _message_summary(message)
        + (f" ({message['error']})" if message["error"] else ""),
        "event_id": None,
        "message_id": message["id"],
        "source": None,
        "data": {},
        "body": message["body"],
        "subject": message["subject"],
        "address": message["address"],
    }


def _thread_of(message: dict) -> str | None:
    """Texts with one number are one conversation; an email starts its own."""
    if message["thread_id"]:
        return message["thread_id"]
    if message["channel"] == "sms" and message["address"]:
        return f"sms:{message['address']}"
    return message["provider_id"]


def _message_summary(message: dict) -> str:
    arrow = "<-" if message["direction"] == "inbound" else "->"
    words = message["subject"] or ""
    body = " ".join((message["body"] or "").split())
    if words and body:
        words = f"{words}: {body}"
    else:
        words = words or body
    return _short(f"{arrow} {words}")


def _summarise(kind: str, data: dict[str, Any], message: dict | None) -> str:
    if message is not None and kind in ("message.sent", "message.received"):
        text = _message_summary(message)
        if data.get("keyword"):
            text += f" [keyword {data['keyword']}]"
        if data.get("flag"):
            text += f" [{data['flag'].replace('_', ' ')}]"
        return text
    if kind == "message.auto_reply":
        return "auto-reply (not counted as a reply)" + (
            f": {message['subject']}" if message and message["subject"] else ""
        )
    describe = _DESCRIBERS.get(kind)
    if describe is not None:
        return _short(describe(data))
    interesting = {k: v for k, v in data.items() if k not in ("message_id",)}
    return _short(
        ", ".join(f"{key}={value}" for key, value in sorted(interesting.items()))
    )


def _short(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= SUMMARY_LENGTH:
        return text
    return text[: SUMMARY_LENGTH - 1] + "…"


def _merge_summary(data: dict[str, Any]) -> str:
    """Where the merged record came from and what it added, in words."""
    where = Path(str(data["file"])).name if data.get("file") else "another record"
    if data.get("row"):
        where += f" row {data['row']}"
    added = [
        f"{len(data[key])} {key}"
        for key in ("emails", "phones", "tags")
        if isinstance(data.get(key), list) and data[key]
    ]
    if data.get("fields"):
        added.append("fields " + ", ".join(str(f) for f in data["fields"]))
    if data.get("merged_contact"):
        where = f"contact #{data['merged_contact']}"
    text = f"merged with {where}"
    return text + (f" (added {'; '.join(added)})" if added else " (nothing new)")


def _with_reason(text: str, data: dict[str, Any]) -> str:
    return f"{text}: {data['reason']}" if data.get("reason") else text


_DESCRIBERS = {
    "lead.created": lambda d: f"new lead from {d.get('source') or 'unknown source'}",
    "contact.imported": lambda d: (
        f"imported from {d.get('source') or 'a file'}"
        + (" as a suppression record" if d.get("suppressed") else "")
    ),
    "contact.merged": lambda d: _merge_summary(d),
    "form.submitted": lambda d: (
        f"filled in form {d.get('form') or ''}".strip()
        + (
            " ("
            + ", ".join(
                f"{k}: {v}" for k, v in d.items() if k not in ("form", "source") and v
            )
            + ")"
            if any(k not in ("form", "source") for k in d)
            else ""
        )
    ),
    "message.status": lambda d: (
        f"delivery status: {d.get('status')}"
        + (f" (error {d['error_code']})" if d.get("error_code") else "")
    ),
    "message.bounced": lambda d: f"email bounced ({d.get('status') or 'failed'})",
    "message.resent": lambda d: (
        f"{d.get('channel') or 'message'} #{d.get('message_id')} sent again: a "
        "runner stopped while sending it, so it may have arrived twice"
    ),
    "opted_out": lambda d: (
        f"opted out of {d.get('channel')}"
        + (f" by texting {d['keyword']}" if d.get("keyword") else "")
    ),
    "opted_in": lambda d: (
        f"opted in to {d.get('channel')}"
        + (f" by texting {d['keyword']}" if d.get("keyword") else "")
    ),
    "stage.changed": lambda d: (
        f"{d.get('pipeline') or 'pipeline'}: "
        f"{d.get('from') or '(none)'} -> {d.get('to')}"
    ),
    "tag.added": lambda d: f"tagged {d.get('tag')}",
    "tag.removed": lambda d: f"untagged {d.get('tag')}",
    "sequence.enrolled": lambda d: f"enrolled in {d.get('sequence')}",
    "sequence.exited": lambda d: _with_reason(f"left {d.get('sequence')}", d),
    "sequence.completed": lambda d: f"finished {d.get('sequence')}",
    "step.sent": lambda d: f"{d.get('sequence')} step {d.get('step')} sent",
    "step.deferred": lambda d: _with_reason(
        f"{d.get('sequence')} step {d.get('step')} deferred", d
    ),
    "step.skipped": lambda d: _with_reason(
        f"{d.get('sequence')} step {d.get('step')} skipped", d
    ),
    "step.failed": lambda d: _with_reason(
        f"{d.get('sequence')} step {d.get('step')} failed", d
    ),
    "step.capped": lambda d: _with_reason(
        f"{d.get('sequence')} step {d.get('step')} capped", d
    ),
    "step.cancelled": lambda d: _with_reason(
        f"{d.get('sequence')} step {d.get('step')} cancelled", d
    ),
    "step.done": lambda d: _with_reason(
        f"{d.get('sequence')} step {d.get('step')} ({d.get('label') or d.get('kind')})"
        " done",
        d,
    ),
    "email.opened": lambda d: "opened the email",
    "email.clicked": lambda d: f"clicked {d.get('url')}",
    "appointment.booked": lambda d: (
        "booked"
        + (f" {d['service']}" if d.get("service") else "")
        + (f" for {d['starts_at']}" if d.get("starts_at") else "")
    ),
    "invoice.paid": lambda d: f"paid {d.get('amount')} {d.get('currency') or ''}",
    "review.requested": lambda d: "asked for a review",
    "review.rated": lambda d: f"rated {d.get('rating')}",
    "review.received": lambda d: f"review on {d.get('platform')}: {d.get('rating')}",
}


def local_time(at: str, timezone: str) -> str:
    """A stored timestamp as the business's wall-clock time, to the minute."""
    moment = clocks.parse(at).astimezone(ZoneInfo(timezone))
    return moment.strftime("%Y-%m-%d %H:%M")
