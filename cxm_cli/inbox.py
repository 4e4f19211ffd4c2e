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
from cxm_cli.events import record_event
from cxm_cli.store import write_transaction
from cxm_cli.timeline import contact_name

LAST_WORDS_LENGTH = 70

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


def open_conversations(
    db,
    clock,
    *,
    channel: str | None = None,
    older_than: timedelta | None = None,
) -> list[dict[str, Any]]:
    """Open conversations, the longest-waiting first."""
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
