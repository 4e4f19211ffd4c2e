"""Open conversations: people who wrote in and are still waiting for an answer.

A conversation is open when the contact's latest real message (not an
auto-reply, not a handled keyword) came from them and nobody from the
business has written back since. Automated sequence messages do not count as
an answer: a reminder going out is not someone reading the question.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from cxm_cli import clock as clocks
from cxm_cli.conditions import did_you_mean
from cxm_cli.errors import InputError
from cxm_cli.events import record_event
from cxm_cli.store import write_transaction
from cxm_cli.timeline import contact_name

LAST_WORDS_LENGTH = 70

# Channels people write in on. ``cxm inbox record`` and POST /events take any
# channel name (a booking tool's own chat, say); one becomes known here once a
# message has come in on it.
INBOUND_CHANNELS = ("sms", "email", "chat", "call", "voicemail", "web", "whatsapp")

# Outbound messages a person wrote (cxm reply, or anything sent with
# automated=false) answer a conversation; sequence steps do not.
_ANSWERS_SQL = """
    SELECT m.contact_id, MAX(m.at) AS answered_at
    FROM messages m LEFT JOIN events e ON e.id = m.event_id
    WHERE m.direction = 'outbound'
      AND m.status NOT IN ('failed', 'undelivered', 'bounced', 'pending')
      AND COALESCE(json_extract(e.data, '$.automated'),
                   m.due_step_id IS NOT NULL) = 0
    GROUP BY m.contact_id
"""

_OPEN_SQL = f"""
    WITH waiting AS (
        SELECT m.id, m.contact_id, m.channel, m.body, m.subject, m.at, i.flag
        FROM messages m
        JOIN inbound_messages i ON i.message_id = m.id
        LEFT JOIN ({_ANSWERS_SQL}) a ON a.contact_id = m.contact_id
        WHERE m.direction = 'inbound'
          AND (i.kind = 'reply' OR i.flag IS NOT NULL)
          AND i.closed_at IS NULL
          AND (a.answered_at IS NULL OR m.at > a.answered_at)
    )
    SELECT contact_id,
           MIN(at) AS waiting_since,
           MAX(at) AS last_at,
           COUNT(*) AS unanswered,
           MAX(flag) AS flag
    FROM waiting
    GROUP BY contact_id
"""


def known_channels(db) -> list[str]:
    """The built-in inbound channels and any others messages came in on."""
    used = {
        row["channel"]
        for row in db.query(
            "SELECT DISTINCT channel FROM messages WHERE direction = 'inbound'"
        )
    }
    return sorted(set(INBOUND_CHANNELS) | used)


def check_channel(db, channel: str) -> str:
    """``channel`` lower-cased, or an error listing the channels there are."""
    wanted = channel.strip().lower()
    known = known_channels(db)
    if wanted not in known:
        raise InputError(
            f"--channel {channel!r}: no such channel{did_you_mean(wanted, known)}",
            hint=f"channels: {', '.join(known)}",
        )
    return wanted


def open_conversations(
    db,
    clock,
    *,
    channel: str | None = None,
    older_than: timedelta | None = None,
) -> list[dict[str, Any]]:
    """Open conversations, the longest-waiting first."""
    if channel is not None:
        channel = check_channel(db, channel)
    now = clock.now()
    rows = list(db.query(_OPEN_SQL))
    conversations = []
    for row in rows:
        last = next(
            iter(
                db.query(
                    "SELECT m.channel, m.body, m.subject FROM messages m "
                    "JOIN inbound_messages i ON i.message_id = m.id "
                    "WHERE m.contact_id = ? AND m.direction = 'inbound' "
                    "AND (i.kind = 'reply' OR i.flag IS NOT NULL) "
                    "ORDER BY m.at DESC, m.id DESC LIMIT 1",
                    [row["contact_id"]],
                )
            )
        )
        if channel and last["channel"] != channel:
            continue
        waited = now - clocks.parse(row["waiting_since"])
        if older_than is not None and waited < older_than:
            continue
        contact = next(
            iter(db.query("SELECT * FROM contacts WHERE id = ?", [row["contact_id"]]))
        )
        words = " ".join((last["body"] or last["subject"] or "").split())
        if len(words) > LAST_WORDS_LENGTH:
            words = words[: LAST_WORDS_LENGTH - 1] + "…"
        conversations.append(
            {
                "contact_id": row["contact_id"],
                "name": contact_name(contact),
                "channel": last["channel"],
                "waiting_since": row["waiting_since"],
                "waiting": human_wait(waited),
                "waiting_seconds": int(waited.total_seconds()),
                "unanswered": row["unanswered"],
                "last_words": words,
                "flag": row["flag"],
            }
        )
    conversations.sort(key=lambda c: (c["waiting_since"], c["contact_id"]))
    return conversations


def close_conversation(db, clock, contact_id: int, *, source: str = "cli") -> int:
    """Mark a contact's waiting messages handled (answered by phone, say)."""
    now = clocks.now_iso(clock)
    with write_transaction(db):
        cursor = db.execute(
            "UPDATE inbound_messages SET closed_at = ? "
            "WHERE contact_id = ? AND closed_at IS NULL",
            [now, contact_id],
        )
        if cursor.rowcount:
            record_event(
                db,
                contact_id,
                "conversation.closed",
                clock=clock,
                data={"messages": cursor.rowcount},
                source=source,
            )
    return cursor.rowcount


def human_wait(waited: timedelta) -> str:
    minutes = max(0, int(waited.total_seconds() // 60))
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m"


# Fields an item of ``cxm inbox record -`` may carry.
RECORD_FIELDS = {
    "contact",
    "contact_id",
    "from",
    "address",
    "channel",
    "text",
    "subject",
    "at",
    "provider_id",
}


def record_inbound_items(
    workspace,
    db,
    clock,
    items: list[Any],
    *,
    source: str = "cli",
    from_options: bool = False,
) -> list:
    """Record a batch of inbound messages, checking every item first.

    A bad item anywhere refuses the whole batch before anything is saved,
    naming the item and the field, so fixing it and sending the batch again
    records each message once. ``from_options`` says the one item came from
    command-line options, so problems name the option (``--contact``), not
    a stdin item.
    """
    from cxm_cli.inbound import record_inbound

    prepared = [
        _check_item(workspace, db, number, item, from_options=from_options)
        for number, item in enumerate(items, start=1)
    ]
    return [
        record_inbound(workspace, db, clock, source=source, **fields)
        for fields in prepared
    ]


def _check_item(
    workspace, db, number: int, item: Any, *, from_options: bool = False
) -> dict[str, Any]:
    from cxm_cli.errors import CxmError
    from cxm_cli.inbound import (
        contact_by_address,
        normalise_address,
        resolve_contact,
    )

    where = f"stdin item {number} (index {number - 1})"

    def field_label(name: str) -> str:
        if from_options:
            return "--" + name.replace("_", "-")
        return f"{where}: field {name}"

    if not isinstance(item, dict):
        raise InputError(f"{where}: expected an object")
    unknown = sorted(set(item) - RECORD_FIELDS)
    if unknown:
        raise InputError(
            f"{where}: unknown field(s) {', '.join(unknown)}",
            hint=f"fields: {', '.join(sorted(RECORD_FIELDS))}",
        )

    for name in ("channel", "text", "subject", "at", "from", "address"):
        value = item.get(name)
        if value is not None and not isinstance(value, str):
            raise InputError(f"{field_label(name)} must be text, not {value!r}")
    channel = (item.get("channel") or "sms").strip().lower()
    if not channel:
        raise InputError(f"{field_label('channel')} is empty")
    # An empty message is not a reply: recording it would stop sequences
    # although the person said nothing.
    if not (item.get("text") or "").strip() and not (item.get("subject") or "").strip():
        raise InputError(f"{field_label('text')} is empty: give what the person wrote")
    at = item.get("at")
    if at:
        try:
            clocks.parse(at)
        except ValueError as exc:
            raise InputError(
                f"{field_label('at')}: cannot read {at!r} as a time"
            ) from exc
    provider_id = item.get("provider_id")
    if provider_id is not None and not isinstance(provider_id, (str, int)):
        raise InputError(f"{field_label('provider_id')} must be text")

    reference = item.get("contact")
    if reference is None:
        reference = item.get("contact_id")
    sender = item.get("from") or item.get("address")
    contact_id = None
    try:
        if reference is not None:
            field = "contact" if "contact" in item else "contact_id"
            contact_id = resolve_contact(workspace, db, str(reference))["id"]
        elif sender:
            field = "from" if item.get("from") else "address"
            email, phone = normalise_address(workspace, sender)
            if contact_by_address(db, email=email, phone=phone) is None:
                raise InputError(f"no contact has {sender!r}")
        else:
            raise InputError("needs contact (id, email or phone) or from")
    except CxmError as exc:
        if reference is not None or sender:
            prefix = f"{field_label(field)}: "
        else:
            prefix = "" if from_options else f"{where}: "
        raise InputError(f"{prefix}{exc.message}", hint=exc.hint) from exc

    return {
        "channel": channel,
        "text": item.get("text"),
        "contact_id": contact_id,
        "address": sender,
        "subject": item.get("subject"),
        "provider_id": str(provider_id) if provider_id is not None else None,
        "at": at,
    }
